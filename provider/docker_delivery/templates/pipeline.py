"""`delivery_pipeline(spec)`: one pipeline spec -> one Airflow DAG of the whole delivery.

The tasks, their order and their retry policies come from :mod:`.plan` (what
``docker-delivery plan`` prints); this module only turns each planned task into an operator.
Every operator is one of the provider's (or the standard provider's approval, branch and Python
operators); each is safe to run again, so a failed stage is retried with "Clear" in the UI.

Parsing a DAG file made from a spec reads the spec (and the environment for ``${NAME}``
references) and nothing else: no Docker, registry, network or database access; docker, boto3
and httpx are imported by the tasks when they run.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.standard.operators.python import BranchPythonOperator, PythonOperator
from airflow.sdk import DAG, BaseOperator, Param, TaskGroup

from docker_delivery.operators.approval import DeliveryApprovalOperator, HoldRolloutOperator
from docker_delivery.templates.pipeline_spec import (
    BlueGreenDeploy,
    PipelineSpec,
    SmokeTest,
    TestSpec,
    load_pipeline,
)
from docker_delivery.templates.plan import (
    BRANCH,
    BUILD,
    RELEASE,
    PlannedTask,
    plan_tasks,
    public_url,
)
from docker_delivery.templates.runtime import (
    choose_deploy,
    engine_host_of,
    http_check,
    redeploy,
    release,
    what_to_deliver,
)

__all__ = ["DeliveryApprovalOperator", "delivery_pipeline", "http_check"]

log = logging.getLogger(__name__)


def image_of(t: PlannedTask) -> str:
    """The digest-pinned image ``t`` delivers (the ``release`` task's XCom of its scope)."""
    return "{{ ti.xcom_pull(task_ids='" + t.upstream_of(RELEASE) + "') }}"


def _built(t: PlannedTask) -> str:
    return "{{ ti.xcom_pull(task_ids='" + t.upstream_of(BUILD) + "') }}"


def _revision(t: PlannedTask) -> str:
    return "{{ ti.xcom_pull(task_ids='" + t.upstream_of(BRANCH) + "', key='revision') }}"


def _digest(t: PlannedTask) -> str:
    return "{{ ti.xcom_pull(task_ids='" + t.upstream_of(RELEASE) + "').split('@')[-1] }}"


START = pendulum.datetime(2025, 1, 1, tz="UTC")


# -- operators for planned tasks -------------------------------------------------------------

Builder = Callable[[PipelineSpec, PlannedTask, dict[str, Any]], BaseOperator]


# The deployment operators by planned-task kind and deployment type (class names in
# docker_delivery.operators.deploy). Each takes the stage's settings model as it is, with what
# it leaves unset from the environment, and the environment spec for the rest.
DEPLOY_OPERATORS: dict[tuple[str, str], str] = {
    ("deploy", "min_in_service"): "MinimumInServiceDeployOperator",
    ("deploy", "rolling"): "RollingDeployOperator",
    ("deploy", "blue_green"): "BlueGreenDeployOperator",
    ("deploy", "ab"): "ABDeployOperator",
    ("switch", "blue_green"): "SwitchTrafficOperator",
    ("retire", "blue_green"): "RetireOperator",
    ("abort", "rolling"): "AbortRolloutOperator",
    ("abort", "blue_green"): "AbortRolloutOperator",
    ("abort", "ab"): "AbortRolloutOperator",
}


def _deploy_class(name: str, where: str) -> type[BaseOperator]:
    module = importlib.import_module("docker_delivery.operators.deploy")
    cls = getattr(module, name, None)
    if cls is None:
        raise ImportError(f"docker_delivery.operators.deploy has no {name}, needed by {where}")
    return cls  # type: ignore[no-any-return]


def _build_deploy(spec: PipelineSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    """The stage's deploy (or switch, or retire) step: its release, router and health check
    come from the environment spec, the same configuration ApplyInfraOperator applies, so a
    deploy and an infrastructure apply never disagree about what should run."""
    assert t.stage is not None
    name = DEPLOY_OPERATORS[(t.kind, t.stage.deploy.type)]
    cls = _deploy_class(name, f"pipeline.stages[{t.stage.environment}] ({t.task_id})")
    return cls(
        spec=spec.service_dict(),
        service=spec.service,
        environment=t.stage.environment,
        image=image_of(t),
        settings=spec.deploy_settings(t.stage),
        lock_wait=t.stage.lock_wait,
        docker_url=spec.pipeline.docker_url,
        engine_conn_id=spec.env(t.stage).engine,
        **common,
    )


def _build_branch(spec: PipelineSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    build = spec.pipeline.build
    return BranchPythonOperator(
        python_callable=what_to_deliver,
        op_kwargs={
            "context_dir": build.context,
            "default_revision": build.revision,
            "image_param": f"image_{t.scope}" if t.scope else "image",
            "default_image": t.extra.get("image"),
        },
        **common,
    )


def _build_build(spec: PipelineSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    from docker_delivery.operators.build import BuildImageOperator

    b = spec.pipeline.build
    return BuildImageOperator(
        repository=spec.repository,
        revision=_revision(t),
        context=b.context,
        dockerfile=b.dockerfile,
        build_args=dict(b.build_args),
        target=b.target,
        source=b.source,
        extra_tags=list(b.extra_tags),
        docker_conn_id=b.docker_conn_id or spec.pipeline.docker_conn_id,
        docker_url=spec.pipeline.docker_url,
        engine_conn_id=spec.pipeline.engine,
        **common,
    )


def _build_test(spec: PipelineSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    from docker_delivery.operators.test import TestImageOperator

    item = t.item
    assert isinstance(item, (TestSpec, SmokeTest)) and item.command is not None
    return TestImageOperator(
        image=_built(t) if t.kind == "test" else image_of(t),
        command=item.command,
        shell=item.shell,
        environment=dict(item.environment),
        test_timeout=item.timeout,
        junit_path=item.junit_path if isinstance(item, TestSpec) else None,
        docker_url=spec.pipeline.docker_url,
        engine_conn_id=spec.env(t.stage).engine if t.stage is not None else spec.pipeline.engine,
        **common,
    )


def _build_python(callable_: Callable[..., Any]) -> Builder:
    def build(spec: PipelineSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
        return PythonOperator(python_callable=callable_, op_kwargs={"scope": t.scope}, **common)

    return build


def _build_choose(spec: PipelineSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    return BranchPythonOperator(
        python_callable=choose_deploy,
        op_kwargs={"param": t.extra["param"], "paths": dict(t.extra["paths"])},
        **common,
    )


def _build_approval(spec: PipelineSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    assert t.stage is not None
    env_name = t.stage.environment
    approval = spec.pipeline.approval
    previous = [s.environment for s in spec.pipeline.stages]
    before = previous[: previous.index(env_name)]
    body = (
        f"**{spec.service}** to **{env_name}**\n\n"
        f"- image: `{image_of(t)}`\n"
        f"- revision: `{_revision(t)}`\n"
        f"- run: `{{{{ run_id }}}}`\n"
        + "".join(f"- {name}: {public_url(spec.environments[name])} serves it\n" for name in before)
        + "\nApprove to deliver it; Reject stops this delivery here."
    )
    users = [{"id": u, "name": u} for u in approval.assigned_users] or None
    timeout = timedelta(seconds=approval.timeout) if approval.timeout else None
    return DeliveryApprovalOperator(
        release_task_id=RELEASE,
        record={
            "service": spec.service,
            "environment": env_name,
            "deployment_type": t.stage.deploy.type,
            "param": t.stage.choice_param if t.stage.alternatives else None,
            "ledger": spec.pipeline.ledger,
            "ledger_conn_id": spec.pipeline.ledger_conn_id,
        },
        subject=f"Deliver {spec.service} to {env_name}?",
        body=body,
        response_timeout=timeout,
        assigned_users=users,
        ignore_downstream_trigger_rules=True,
        **common,
    )


def _build_hold(spec: PipelineSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    from docker_delivery.strategies.abort import hold_subject

    assert t.stage is not None
    env_name, after = t.stage.environment, t.extra["after"]
    env = spec.env(t.stage)
    preview = f"- preview: {public_url(env, preview=True)}\n" if env.router.preview_port else ""
    body = (
        f"**{spec.service}** in **{env_name}**: the {t.stage.deploy.type} rollout is held "
        f"after {after}.\n\n"
        f"- image: `{image_of(t)}`\n"
        f"- serves at: {public_url(env)}\n"
        f"{preview}"
        f"- run: `{{{{ run_id }}}}`\n\n"
        "**Continue** carries the rollout on; **Abort** takes the new release out, and what "
        "served before serves as before. `docker-delivery status "
        f"{spec.service} {env_name}` shows where it stands."
    )
    return HoldRolloutOperator(
        after=after,
        continue_task_id=t.extra["continue"],
        abort_task_id=t.extra["abort"],
        subject=f"{hold_subject(spec.service, env_name)} (held after {after})",
        body=body,
        assigned_users=[{"id": u, "name": u} for u in spec.pipeline.approval.assigned_users]
        or None,
        **common,
    )


def _build_promote(spec: PipelineSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    from docker_delivery.operators.promote import PromoteImageOperator

    assert t.stage is not None
    env = spec.env(t.stage)
    serving: dict[str, Any] = {  # the tag follows what serves, checked on the engine
        "docker_url": spec.pipeline.docker_url,
        "engine_conn_id": env.engine,
        "service": spec.service,
        "app_port": env.port,
        "lock_wait": t.stage.lock_wait,
    }
    return PromoteImageOperator(
        image=image_of(t),
        repository=spec.repository,
        environment=t.stage.environment,
        docker_conn_id=spec.pipeline.docker_conn_id,
        **({} if env.target == "ecs" else serving),
        **common,
    )


def _build_require(spec: PipelineSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    from docker_delivery.operators.promote import RequireTagOperator

    return RequireTagOperator(
        image=image_of(t), tag=t.extra["tag"], docker_conn_id=spec.pipeline.docker_conn_id, **common
    )


def _build_infra(spec: PipelineSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    from docker_delivery.operators.infra import ApplyInfraOperator

    assert t.stage is not None
    return ApplyInfraOperator(
        spec=spec.service_dict(),
        environment=t.stage.environment,
        docker_url=spec.pipeline.docker_url,
        engine_conn_id=spec.env(t.stage).engine,
        lock_wait=t.stage.lock_wait,
        **common,
    )


def _build_migrate(spec: PipelineSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    # imported only by pipelines that migrate
    from docker_delivery.operators.migrate import MigrateDatabaseOperator

    m = spec.pipeline.migrations
    assert m is not None
    optional: dict[str, Any] = {}
    if m.command is not None:
        optional["command"] = list(m.command)
    if m.status_command is not None:
        optional["status_command"] = list(m.status_command)
    return MigrateDatabaseOperator(
        image=image_of(t),
        database_conn_id=m.database_conn_id,
        phase=t.item,
        env=dict(m.env),
        timeout=m.timeout,
        network=m.network,
        extra_hosts=dict(m.extra_hosts) or None,
        docker_url=spec.pipeline.docker_url,
        engine_conn_id=spec.env(t.stage).engine if t.stage is not None else None,
        **optional,
        **common,
    )


def _build_health(spec: PipelineSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    from docker_delivery.sensors import ServiceHealthySensor

    assert t.stage is not None
    env = spec.env(t.stage)
    port = int(t.extra["port"])
    check = {**env.health().to_dict(), "port": port}
    url = public_url(env, preview=port == env.router.preview_port)
    return ServiceHealthySensor(
        addresses=url.split("://", 1)[1].split("/", 1)[0],
        check=check,
        timeout=t.stage.verify.timeout,
        mode="poke",
        **common,
    )


def _build_smoke(spec: PipelineSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    item = t.item
    assert isinstance(item, SmokeTest) and t.stage is not None
    if item.http is None:
        return _build_test(spec, t, common)
    http = item.http
    contains = http.contains or (_digest(t) if http.expect_digest else None)
    return PythonOperator(
        python_callable=http_check,
        op_kwargs={
            "url": public_url(spec.env(t.stage)).rstrip("/") + http.path,
            "status": http.status,
            "contains": contains,
            "timeout": http.timeout,
            "attempts": http.attempts,
            "interval": http.interval,
        },
        **common,
    )


def _build_record(spec: PipelineSpec, t: PlannedTask, common: dict[str, Any]) -> BaseOperator:
    from docker_delivery.operators.ledger import RecordDeliveryOperator

    assert t.stage is not None
    name = t.stage.environment
    stage = t.stage
    kind = f"{{{{ params.{stage.choice_param} }}}}" if stage.alternatives else stage.deploy.type
    return RecordDeliveryOperator(
        service=spec.service,
        environment=name,
        group=name,
        deployment_type=kind,
        image=image_of(t),
        ledger=spec.pipeline.ledger,
        ledger_conn_id=spec.pipeline.ledger_conn_id,
        deploy_task_ids=[
            f"{name}.deploy" + ("" if d is stage.deploy else f"_{d.type}") for d in stage.choices()
        ]
        + t.extra.get("partials", []),
        approval_task_id=f"approve_{name.replace('-', '_')}" if spec.gated(t.stage) else None,
        hold_task_ids=t.extra.get("holds", []),
        abort_task_id=t.extra.get("abort"),
        **common,
    )


BUILDERS: dict[str, Builder] = {
    "record": _build_record,
    "choose": _build_choose,
    "branch": _build_branch,
    "build": _build_build,
    "test": _build_test,
    "redeploy": _build_python(redeploy),
    "release": _build_python(release),
    "approval": _build_approval,
    "promote": _build_promote,
    "require": _build_require,
    "infra": _build_infra,
    "migrate": _build_migrate,
    "deploy": _build_deploy,
    "switch": _build_deploy,
    "retire": _build_deploy,
    "abort": _build_deploy,
    "hold": _build_hold,
    "verify_health": _build_health,
    "smoke": _build_smoke,
}


def _timeout(spec: PipelineSpec, t: PlannedTask, seconds: float | None) -> float | None:
    """The policy's timeout, or the task's own limit plus a margin."""
    item, stage = t.item, t.stage
    own: float | None = None
    if isinstance(item, (TestSpec, SmokeTest)) and item.command is not None:
        own = item.timeout + 300
    elif t.kind == "migrate" and spec.pipeline.migrations is not None:
        own = spec.pipeline.migrations.timeout + 300
    elif t.kind == "retire" and stage is not None and isinstance(stage.deploy, BlueGreenDeploy):
        own = stage.deploy.scale_down_delay + 1800
    elif t.kind == "verify_health" and stage is not None:
        own = stage.verify.timeout + 60
    if seconds is None:
        return own
    return max(seconds, own) if own is not None else seconds


def _common(spec: PipelineSpec, t: PlannedTask) -> dict[str, Any]:
    policy = spec.policy(t.policy)
    out: dict[str, Any] = {
        "task_id": t.local_id,
        "retries": policy.retries or 0,
        "retry_delay": timedelta(seconds=policy.retry_delay or 0),
        "retry_exponential_backoff": bool(policy.exponential_backoff),
        "trigger_rule": t.trigger_rule,
        "doc_md": t.summary,
    }
    timeout = _timeout(spec, t, policy.timeout)
    # A human's time is not the task's: an approval's limit is its response_timeout; a hold
    # waits as long as it takes.
    if timeout is not None and t.kind not in ("approval", "hold"):
        out["execution_timeout"] = timedelta(seconds=timeout)
    return out


def _schedule(spec: PipelineSpec) -> Any:
    trigger = spec.pipeline.trigger
    if trigger.asset is not None:
        from docker_delivery.operators.promote import image_asset

        repository = trigger.asset.repository or spec.repository
        return [image_asset(repository, trigger.asset.environment)]
    return trigger.schedule


def delivery_pipeline(
    spec: PipelineSpec | str | Path | Mapping[str, Any], **dag_kwargs: Any
) -> DAG:
    """The delivery DAG of ``spec`` (a pipeline spec: a YAML path, YAML text, a mapping, or a
    :class:`PipelineSpec`; or a release file: several services released as one, see
    :mod:`.release_spec`), validated first: :class:`~docker_delivery.spec.SpecInvalid`
    lists every problem with its field path. ``dag_kwargs`` override DAG arguments."""
    from docker_delivery.templates.plan import describe_plan
    from docker_delivery.templates.release_spec import load_release, release_source

    if release_source(spec):  # several services, released as one
        from docker_delivery.templates.release_dag import release_dag

        dag = release_dag(load_release(spec), **dag_kwargs)  # type: ignore[arg-type]
        dag.fileloc = sys._getframe(1).f_code.co_filename
        return dag
    spec = load_pipeline(spec)
    p = spec.pipeline
    tasks = plan_tasks(spec)
    kwargs: dict[str, Any] = {
        "dag_id": spec.dag_id,
        "description": p.description
        or f"{p.mode.replace('_', ' ')} of {spec.service}: "
        + " -> ".join(s.environment for s in p.stages),
        "schedule": _schedule(spec),
        "start_date": START,
        "catchup": False,
        "max_active_runs": 1,
        "tags": list(dict.fromkeys(["docker-delivery", p.mode, spec.service, *p.tags])),
        "params": {
            "revision": Param(
                "",
                type="string",
                description="commit SHA or git ref to build (empty: the source's own revision)",
            ),
            "image": Param(
                "",
                type="string",
                description="an image built before, pinned by digest: redeploy it (no build)",
            ),
        },
        "doc_md": f"```\n{describe_plan(spec)}\n```",
    }
    for stage in p.stages:
        if stage.alternatives:
            types = [d.type for d in stage.choices()]
            kwargs["params"][stage.choice_param] = Param(
                types[0],
                type="string",
                enum=types,
                description=f"how this run deploys to {stage.environment}",
            )
    kwargs.update(dag_kwargs)
    kwargs["user_defined_macros"] = {
        "engine_host": engine_host_of,
        **(kwargs.get("user_defined_macros") or {}),
    }
    with DAG(**kwargs) as dag:
        groups = {s.environment: TaskGroup(group_id=s.environment) for s in p.stages}
        ops: dict[str, BaseOperator] = {}
        for t in tasks:
            common = _common(spec, t)
            if t.group is not None:
                with groups[t.group]:
                    op = BUILDERS[t.kind](spec, t, common)
            else:
                op = BUILDERS[t.kind](spec, t, common)
            ops[t.task_id] = op
            for upstream in t.upstream:
                ops[upstream] >> op
    back = sys._getframe(1)
    dag.fileloc = back.f_code.co_filename  # the DAG file, not this module
    assert RELEASE in ops
    return dag
