"""The tasks of a release's DAG, in order: what `delivery_pipeline` builds from a release file
and what `docker-delivery plan` prints.

The shape, per environment (services in dependency order, here api then web)::

    api.<build once> ...   web.<build once> ...            (each service's own build section)
    [approve_<env>] --> <env>.api.<infra, migrate expand, deploy, verify, smoke...>
        --> <env>.web.<...> --> <env>.check_<name> (parallel: the whole release)
        --> <env>.api.promote [--> retire] [--> migrate_contract]   (once everything passed)
        --> <env>.web.promote ...
        --> <env>.release_failed (runs whatever happened): nothing failed -> record;
            something failed -> <env>.roll_back_web --> <env>.roll_back_api (reverse order;
            each only undoes its service if this release's digest serves it)
        --> <env>.record (every service's record, one release id; fails if the release did)
    --> [approve_<next>] ...

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from docker_delivery.templates.plan import (
    RELEASE,
    TYPE_NAMES,
    PlannedTask,
    _leaves,
    _stage_tasks,
    build_once_tasks,
    public_url,
)
from docker_delivery.templates.release_spec import ReleaseSpec

__all__ = ["RELEASE_FAILED", "describe_release_plan", "plan_release", "release_plan_data"]

RELEASE_FAILED = "release_failed"
FINISH_KINDS = ("promote", "retire")
"""What waits for the whole release: the environment tag, the old colour's removal (and a
contract migration): until then every service can go back the fast way."""


def _finishing(task: PlannedTask) -> bool:
    return task.kind in FINISH_KINDS or (task.kind == "migrate" and task.item == "contract")


def plan_release(rs: ReleaseSpec) -> list[PlannedTask]:
    """Every task of the release's DAG, in an order that respects dependencies."""
    tasks: list[PlannedTask] = []
    for key in rs.order:
        pinned = rs.pinned_image(key)
        for task in build_once_tasks(rs.pipelines[key], key):
            if task.kind == "branch" and pinned:
                task = replace(task, extra={"image": pinned})
            tasks.append(task)
    leaves = tuple(f"{key}.{RELEASE}" for key in rs.order)
    previous: str | None = None
    for env in rs.settings.environments:
        if rs.gated(env):
            gate = PlannedTask(
                f"approve_{env.replace('-', '_')}",
                "release_approval",
                "approval",
                f"ApprovalOperator: a human approves the release of {', '.join(rs.order)} to "
                f"{env} (Reject stops it)",
                leaves,
                extra={"environment": env},
            )
            tasks.append(gate)
            leaves = (gate.task_id,)
        env_tasks, record = _environment_tasks(rs, env, previous, leaves)
        tasks += env_tasks
        leaves = (record,)
        previous = env
    return tasks


def _environment_tasks(
    rs: ReleaseSpec, env: str, previous: str | None, leaves: tuple[str, ...]
) -> tuple[list[PlannedTask], str]:
    out: list[PlannedTask] = []
    finishing: dict[str, list[PlannedTask]] = {}
    last = leaves
    for key in rs.order:
        spec, stage = rs.pipelines[key], rs.stage(key, env)
        before = rs.stage(key, previous) if previous else None
        stage_tasks = _stage_tasks(spec, stage, before, last, scope=key)
        delivered = [t for t in stage_tasks if not _finishing(t) and t.kind != "record"]
        finishing[key] = [t for t in stage_tasks if _finishing(t)]
        out += delivered
        last = _leaves(delivered)
    for check in rs.settings.checks:
        http = check.http
        url = public_url(rs.pipelines[http.service].environments[env], shown=True)
        out.append(
            PlannedTask(
                f"{env}.check_{check.name}",
                "release_check",
                "release",
                f"GET {url.rstrip('/')}{http.path} ({http.service}) expects {http.status}"
                + (f" containing {http.contains!r}" if http.contains else ""),
                last,
                item=check,
                extra={"environment": env},
            )
        )
    last = tuple(t.task_id for t in out if t.kind == "release_check") or last
    for key in rs.order:  # each service's chain after the checks, side by side
        after = last
        for task in finishing[key]:
            task = replace(task, upstream=after, trigger_rule="all_success")
            out.append(task)
            after = (task.task_id,)
    keys = list(reversed(rs.order))
    roll_backs = [f"{env}.roll_back_{key}" for key in keys]
    record = f"{env}.record"
    out.append(
        PlannedTask(
            f"{env}.{RELEASE_FAILED}",
            "release_failed",
            "release",
            "runs whatever happened: nothing failed -> record; a failure -> roll back every "
            "service this release moved, in reverse order",
            _leaves(out),
            trigger_rule="all_done",
            extra={"environment": env, "roll_backs": roll_backs, "record": record},
        )
    )
    decide, before = f"{env}.{RELEASE_FAILED}", None
    for key, task_id in zip(keys, roll_backs, strict=True):
        stage = rs.stage(key, env)
        out.append(
            PlannedTask(
                task_id,
                "release_roll_back",
                "release",
                f"RollbackOperator: {key} back to what served before, if this release's digest "
                f"serves it ({TYPE_NAMES[stage.deploy.type]}: a switch back where the old "
                "release is warm, a redeploy otherwise)",
                (decide,) if before is None else (decide, before),
                stage=stage,
                trigger_rule="all_done",
                scope=key,
            )
        )
        before = task_id
    out.append(
        PlannedTask(
            record,
            "release_record",
            "record",
            f"RecordReleaseOperator: one record per service in the ledger, one release id "
            f"({rs.name}-{env}-<run>); it fails when the release did",
            (f"{env}.{RELEASE_FAILED}", *roll_backs),
            trigger_rule="all_done",
            extra={"environment": env, "roll_backs": dict(zip(keys, roll_backs, strict=True))},
        )
    )
    return out, record


def release_plan_data(rs: ReleaseSpec) -> dict[str, Any]:
    """The release's plan as data (``docker-delivery plan --json``)."""
    from docker_delivery.templates.release_spec import RELEASE_POLICY

    tasks = []
    for task in plan_release(rs):
        policy = rs.pipelines[task.scope].policy(task.policy) if task.scope else RELEASE_POLICY
        tasks.append(
            {
                "task_id": task.task_id,
                "kind": task.kind,
                "service": task.scope or None,
                "summary": task.summary,
                "upstream": list(task.upstream),
                "trigger_rule": task.trigger_rule,
                "retries": policy.retries or 0,
                "timeout": policy.timeout,
            }
        )
    return {
        "dag_id": rs.dag_id,
        "release": rs.name,
        "services": {k: rs.pipelines[k].service for k in rs.order},
        "environments": rs.settings.environments,
        "mode": rs.settings.mode,
        "tasks": tasks,
    }


def describe_release_plan(rs: ReleaseSpec) -> str:
    """The release's plan as text: the services in order, then the tasks per environment."""
    tasks = plan_release(rs)
    mode = rs.settings.mode.replace("_", " ")
    order = " -> ".join(f"{k} ({rs.pipelines[k].service})" for k in rs.order)
    lines = [f"DAG {rs.dag_id}: {mode} of the release {rs.name}: {order}"]
    width = max(len(t.task_id) for t in tasks)
    for number, task in enumerate(tasks, 1):
        lines.append(f"    {number:>2}. {task.task_id:<{width}}  {task.summary}")
    return "\n".join(lines)
