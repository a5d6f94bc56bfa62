"""A release file -> one Airflow DAG (what ``delivery_pipeline`` makes of a release).

The tasks and their order come from :mod:`.release_plan`; a service's tasks are built by the
pipeline's own builders from that service's spec (:mod:`.pipeline`), the release's own tasks
(approval, checks, the rollback's decision, the rollbacks, the record) here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.python import BranchPythonOperator, PythonOperator
from airflow.sdk import DAG, BaseOperator, Param, TaskGroup

from docker_delivery.templates.pipeline import (
    BUILDERS,
    START,
    _common,
    image_of,
)
from docker_delivery.templates.plan import BRANCH, RELEASE, PlannedTask, public_url
from docker_delivery.templates.release_plan import describe_release_plan, plan_release
from docker_delivery.templates.release_spec import RELEASE_POLICY, ReleaseSpec
from docker_delivery.templates.runtime import engine_host_of, http_check

__all__ = ["release_dag"]


def _approval(rs: ReleaseSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    from docker_delivery.operators.approval import DeliveryApprovalOperator

    env = t.extra["environment"]
    images = "".join(
        f"- {key}: `{{{{ ti.xcom_pull(task_ids='{key}.{RELEASE}') }}}}`\n" for key in rs.order
    )
    approval = rs.settings.approval
    records = [
        {
            "service": rs.pipelines[key].service,
            "environment": env,
            "deployment_type": rs.stage(key, env).deploy.type,
            "ledger": rs.settings.ledger,
            "ledger_conn_id": rs.settings.ledger_conn_id,
            "release_task_id": f"{key}.{RELEASE}",
            "branch_task_id": f"{key}.{BRANCH}",
            "release": rs.name,
        }
        for key in rs.order
    ]
    return DeliveryApprovalOperator(
        record=records,
        release_task_id=f"{rs.order[0]}.{RELEASE}",
        subject=f"Release {rs.name} to {env}?",
        body=f"**{rs.name}** to **{env}**\n\n{images}- run: `{{{{ run_id }}}}`\n\n"
        "Approve to deliver every service; Reject stops the release here.",
        response_timeout=timedelta(seconds=approval.timeout) if approval.timeout else None,
        assigned_users=[{"id": u, "name": u} for u in approval.assigned_users] or None,
        ignore_downstream_trigger_rules=True,
        **common,
    )


def _check(rs: ReleaseSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    http = t.item.http
    env = rs.pipelines[http.service].environments[t.extra["environment"]]
    return PythonOperator(
        python_callable=http_check,
        op_kwargs={
            "url": public_url(env).rstrip("/") + http.path,
            "status": http.status,
            "contains": http.contains,
            "timeout": http.timeout,
            "attempts": http.attempts,
            "interval": http.interval,
        },
        **common,
    )


def _decide(rs: ReleaseSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    from docker_delivery.operators.release import release_failed

    return BranchPythonOperator(
        python_callable=release_failed,
        op_kwargs={k: t.extra[k] for k in ("environment", "roll_backs", "record")},
        **common,
    )


def _roll_back(rs: ReleaseSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    from docker_delivery.operators.deploy import RollbackOperator

    spec = rs.pipelines[t.scope]
    assert t.stage is not None
    m = spec.pipeline.migrations
    return RollbackOperator(
        spec=spec.service_dict(),
        service=spec.service,
        environment=t.stage.environment,
        if_serving=image_of(t),
        back_to="{{ (ti.xcom_pull(task_ids='"
        + f"{t.stage.environment}.{t.scope}.deploy"
        + "') or {}).get('previous_digest') or '' }}",
        repository=spec.repository,
        docker_conn_id=spec.pipeline.docker_conn_id,
        database_conn_id=m.database_conn_id if m is not None else None,
        migration_status_command=m.status_command if m is not None else None,
        lock_wait=t.stage.lock_wait,
        docker_url=spec.pipeline.docker_url,
        engine_conn_id=spec.env(t.stage).engine,
        **common,
    )


def _record(rs: ReleaseSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    from docker_delivery.operators.release import RecordReleaseOperator

    env = t.extra["environment"]
    services = []
    for key in rs.order:
        spec = rs.pipelines[key]
        services.append(
            {
                "service": spec.service,
                "deployment_type": rs.stage(key, env).deploy.type,
                "deploy_task_id": f"{env}.{key}.deploy",
                "roll_back_task_id": t.extra["roll_backs"][key],
                "branch_task_id": f"{key}.{BRANCH}",
            }
        )
    return RecordReleaseOperator(
        release=rs.name,
        environment=env,
        services=services,
        images={
            rs.pipelines[k].service: "{{ ti.xcom_pull(task_ids='" + f"{k}.{RELEASE}" + "') }}"
            for k in rs.order
        },
        ledger=rs.settings.ledger,
        ledger_conn_id=rs.settings.ledger_conn_id,
        approval_task_id=f"approve_{env.replace('-', '_')}" if rs.gated(env) else None,
        **common,
    )


RELEASE_BUILDERS = {
    "release_approval": _approval,
    "release_check": _check,
    "release_failed": _decide,
    "release_roll_back": _roll_back,
    "release_record": _record,
}


def _release_common(t: PlannedTask) -> dict[str, Any]:
    policy = RELEASE_POLICY
    out: dict[str, Any] = {
        "task_id": t.local_id,
        "retries": policy.retries or 0,
        "trigger_rule": t.trigger_rule,
        "doc_md": t.summary,
    }
    if t.kind != "release_approval" and policy.timeout:
        out["execution_timeout"] = timedelta(seconds=policy.timeout)
    return out


def _operator(rs: ReleaseSpec, t: PlannedTask) -> BaseOperator:
    if t.kind in RELEASE_BUILDERS:
        return RELEASE_BUILDERS[t.kind](rs, t, _release_common(t))
    spec = rs.pipelines[t.scope]
    return BUILDERS[t.kind](spec, t, _common(spec, t))


def release_dag(rs: ReleaseSpec, **dag_kwargs: Any) -> DAG:
    """The DAG of the release ``rs`` (validated); ``dag_kwargs`` override DAG arguments."""
    s = rs.settings
    tasks = plan_release(rs)
    params: dict[str, Any] = {
        "revision": Param(
            "", type="string", description="commit SHA or git ref every service builds from"
        ),
    }
    for key in rs.order:
        params[f"image_{key}"] = Param(
            "",
            type="string",
            description=f"{key}: an image built before, pinned by digest: redeploy it (no build)",
        )
    kwargs: dict[str, Any] = {
        "dag_id": rs.dag_id,
        "description": s.description
        or f"release {rs.name} ({', '.join(rs.order)}): " + " -> ".join(s.environments),
        "schedule": s.schedule,
        "start_date": START,
        "catchup": False,
        "max_active_runs": 1,
        "tags": list(dict.fromkeys(["docker-delivery", "release", s.mode, rs.name, *s.tags])),
        "params": params,
        "doc_md": f"```\n{describe_release_plan(rs)}\n```",
    }
    kwargs.update(dag_kwargs)
    kwargs["user_defined_macros"] = {
        "engine_host": engine_host_of,
        **(kwargs.get("user_defined_macros") or {}),
    }
    with DAG(**kwargs) as dag:
        groups: dict[str, TaskGroup] = {}

        def group(path: str) -> TaskGroup:
            if path not in groups:
                parent, _, name = path.rpartition(".")
                groups[path] = TaskGroup(
                    group_id=name, parent_group=group(parent) if parent else None
                )
            return groups[path]

        ops: dict[str, BaseOperator] = {}
        for t in tasks:
            if t.group is not None:
                with group(t.group):
                    op = _operator(rs, t)
            else:
                op = _operator(rs, t)
            ops[t.task_id] = op
            for upstream in t.upstream:
                ops[upstream] >> op
    return dag
