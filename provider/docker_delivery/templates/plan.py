"""The tasks a pipeline spec gives, in order: what `delivery_pipeline` builds and what
`docker-delivery plan` prints. One list, so the CLI and the DAG never disagree.

The shape::

    what_to_deliver --> build --> test_<name> (parallel) --+
           |                                               +--> release
           +--------> redeploy ----------------------------+
    release --> [approve_<env>] --> [<env>.require_previous] --> <env>.apply_infra
        --> <env>.migrate_expand
        [--> <env>.deploy_stage_<n> --> <env>.hold_stage_<n>]   (held rolling; A/B: _step_<n>)
        --> <env>.deploy [--> <env>.verify_preview [--> <env>.hold_switch] --> <env>.switch]
                                                                   (blue/green)
        --> <env>.verify_health --> <env>.smoke_<name> (parallel) --> <env>.promote
        [--> <env>.retire]  (blue/green)  --> <env>.migrate_contract
        --> <env>.record (the ledger; runs whatever happened, fails if the stage did)
    A hold's Abort runs <env>.abort instead of the rest of the stage (then the record).
        --> [approve_<next>] --> [<next>.require_previous] ...

The environment tag ``<repository>:<env>`` names what passed there: ``<env>.promote`` moves it
only after the stage's deployment and checks have passed (and only if that release still serves
there); ``<next>.require_previous`` checks, before the next stage changes anything, that the
release is the one the previous environment's tag names.

``what_to_deliver`` branches: a run given an already built image (the ``image`` param, or the
promotion event that triggered it) skips build and tests (``redeploy``); any other run builds
its revision. ``release`` holds the digest-pinned image every later task uses.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from docker_delivery.spec import EnvironmentSpec
from docker_delivery.targets.address import LOCAL_HOST
from docker_delivery.templates.pipeline_spec import (
    ABDeploy,
    BlueGreenDeploy,
    MinInServiceDeploy,
    PipelineSpec,
    RollingDeploy,
    StageSpec,
)
from docker_delivery.templates.pipeline_spec.spec import held_at

__all__ = ["PlannedTask", "describe_plan", "plan_tasks"]

BRANCH = "what_to_deliver"
BUILD = "build"
REDEPLOY = "redeploy"
RELEASE = "release"
ABORT = "abort"  # a stage's task that takes a held rollout out

TYPE_NAMES = {
    "min_in_service": "minimum in-service",
    "rolling": "rolling",
    "blue_green": "blue/green",
    "ab": "A/B",
}


@dataclass(frozen=True)
class PlannedTask:
    """One task of the DAG. ``task_id`` is the full id (``staging.deploy`` in a group);
    ``kind`` says which builder makes it; ``policy`` which retries and timeout it gets."""

    task_id: str
    kind: str
    policy: str
    summary: str
    upstream: tuple[str, ...] = ()
    stage: StageSpec | None = None
    item: Any = None
    trigger_rule: str = "all_success"
    extra: dict[str, Any] = field(default_factory=dict)
    scope: str = ""
    """In a release, the service (its key) whose spec the task is made from; "" otherwise."""

    @property
    def group(self) -> str | None:
        """The task's task group (``staging``; ``staging.api`` in a release), if any."""
        return self.task_id.rsplit(".", 1)[0] if "." in self.task_id else None

    @property
    def local_id(self) -> str:
        return self.task_id.rsplit(".", 1)[-1]

    def upstream_of(self, task_id: str) -> str:
        """``task_id`` of the build section as this task's scope names it (``api.release``)."""
        return f"{self.scope}.{task_id}" if self.scope else task_id


def _deploy_summary(spec: PipelineSpec, stage: StageSpec) -> str:
    env = spec.env(stage)
    d = stage.deploy
    head = f"{TYPE_NAMES[d.type]} on {env.target}, {env.replicas} replicas"
    if isinstance(d, MinInServiceDeploy):
        return f"{head}, never fewer than {spec.min_in_service(stage)} in service"
    if isinstance(d, RollingDeploy):
        stages = ", ".join(str(s) for s in spec.rolling_stages(stage))
        return f"{head}, stages [{stages}], on failure {d.failure_action}"
    if isinstance(d, BlueGreenDeploy) and env.target == "ecs":
        router = env.aws.router.type if env.aws and env.aws.router else "?"
        return f"{head}: the idle colour's service, checked, then one {router} weight change"
    if isinstance(d, BlueGreenDeploy):
        return f"{head}: the new colour on :{env.router.preview_port} (preview)"
    assert isinstance(d, ABDeploy)
    steps = ", ".join(f"{s}%" for s in d.steps)
    return f"{head}: steps [{steps}], {d.bake_time:g}s each, max 5xx {d.max_5xx_ratio:g}"


def build_once_tasks(spec: PipelineSpec, scope: str = "") -> list[PlannedTask]:
    """What to deliver, the build and its tests, or the image to redeploy; then ``release``.
    In a release, ``scope`` (the service's key) prefixes the ids: ``api.build``."""
    p = spec.pipeline
    repo = spec.repository
    at = (scope + ".") if scope else ""
    tasks: list[PlannedTask] = [
        PlannedTask(
            at + BRANCH,
            "branch",
            "control",
            "build the revision, or redeploy an image built before (param image, or the "
            "promotion event that triggered the run)",
            scope=scope,
        ),
        PlannedTask(
            at + BUILD,
            "build",
            "build",
            f"BuildImageOperator: {repo}:<revision>, once, pushed; returns it by digest",
            (at + BRANCH,),
            scope=scope,
        ),
    ]
    tests = [
        PlannedTask(
            f"{at}test_{t.name}",
            "test",
            "test",
            f"TestImageOperator in the image, by digest: {_command(t.command)}",
            (at + BUILD,),
            item=t,
            scope=scope,
        )
        for t in p.tests
    ]
    tasks += tests
    tasks.append(
        PlannedTask(
            at + REDEPLOY,
            "redeploy",
            "control",
            "an image built before: build and tests skipped",
            (at + BRANCH,),
            scope=scope,
        )
    )
    tasks.append(
        PlannedTask(
            at + RELEASE,
            "release",
            "control",
            "the digest-pinned image every stage delivers",
            (*(t.task_id for t in tests or tasks[1:2]), at + REDEPLOY),
            trigger_rule="none_failed_min_one_success",
            scope=scope,
        )
    )
    return tasks


def plan_tasks(spec: PipelineSpec) -> list[PlannedTask]:
    """Every task of the DAG, in an order that respects dependencies."""
    p = spec.pipeline
    tasks = build_once_tasks(spec)
    leaves: tuple[str, ...] = (RELEASE,)
    previous: StageSpec | None = None
    for stage in p.stages:
        env_name = stage.environment
        if spec.gated(stage):
            gate = PlannedTask(
                f"approve_{env_name.replace('-', '_')}",
                "approval",
                "approval",
                f"ApprovalOperator: a human approves the delivery to {env_name} (Reject stops it)",
                leaves,
                stage=stage,
            )
            tasks.append(gate)
            leaves = (gate.task_id,)
        stage_tasks = _stage_tasks(spec, stage, previous, leaves)
        tasks += stage_tasks
        leaves = _leaves(stage_tasks)
        previous = stage
    return tasks


def _leaves(tasks: list[PlannedTask]) -> tuple[str, ...]:
    used = {u for t in tasks for u in t.upstream}
    return tuple(t.task_id for t in tasks if t.task_id not in used)


def _stage_tasks(
    spec: PipelineSpec,
    stage: StageSpec,
    previous: StageSpec | None,
    leaves: tuple[str, ...],
    *,
    scope: str = "",
) -> list[PlannedTask]:
    """The stage's tasks after ``leaves``. In a release, ``scope`` (the service's key) puts
    them in the group ``<env>.<scope>``."""
    env = spec.env(stage)
    ecs = env.target == "ecs"  # the deploy task checks, switches and retires on its own
    name = f"{stage.environment}.{scope}" if scope else stage.environment
    out: list[PlannedTask] = []
    last = leaves
    join: str | None = None  # the trigger rule of the task after a choice's paths

    def add(
        local: str, kind: str, policy: str, summary: str, *, at: StageSpec | None = None, **kw: Any
    ) -> PlannedTask:
        nonlocal last, join
        if join is not None:
            kw.setdefault("trigger_rule", join)
            join = None
        task = PlannedTask(
            f"{name}.{local}", kind, policy, summary, last, stage=at or stage, scope=scope, **kw
        )
        out.append(task)
        last = (task.task_id,)
        return task

    def apply_infra(at: StageSpec, suffix: str = "") -> PlannedTask | None:
        if not spec.applies_infra(at):
            return None
        return add(
            f"apply_infra{suffix}",
            "infra",
            "infra",
            f"ApplyInfraOperator: replicas {env.replicas}, env, secrets, networks, limits",
            at=at,
        )

    def migrate_expand() -> None:
        if spec.migrates(stage):
            add(
                "migrate_expand",
                "migrate",
                "migrate",
                "MigrateDatabaseOperator: expand",
                item="expand",
            )

    holds: list[str] = []
    partials: list[str] = []  # the deploys up to a hold

    def hold(local: str, after: str, next_local: str) -> None:
        """A human's Continue (``next_local`` carries the rollout on) or Abort (``abort``)."""
        add(
            local,
            "hold",
            "control",
            f"HoldRolloutOperator: held after {after}; Continue -> {next_local}, Abort -> "
            "abort (what served before serves again)",
            extra={
                "after": after,
                "continue": f"{name}.{next_local}",
                "abort": f"{name}.{ABORT}",
            },
        )
        holds.append(f"{name}.{local}")

    def partial_deploys(at: StageSpec, suffix: str) -> None:
        """A held rolling rollout or A/B test: a deploy up to each hold, then the hold."""
        d = at.deploy
        points = held_at(d) if not ecs else []
        if not points or isinstance(d, BlueGreenDeploy):
            return
        if isinstance(d, RollingDeploy):
            unit, field, count = "stage", "until_stage", len(spec.rolling_stages(at))
        else:
            assert isinstance(d, ABDeploy)
            unit, field, count = "step", "until_step", len(d.steps)
        for i, n in enumerate(points):
            part = at.as_deploy(d.model_copy(update={field: n, "hold_after": ()}))
            partial = add(
                f"deploy_{unit}_{n}",
                "deploy",
                "deploy",
                f"{_deploy_summary(spec, at)}; up to {unit} {n} of {count}",
                at=part,
            )
            partials.append(partial.task_id)
            following = f"deploy_{unit}_{points[i + 1]}" if i + 1 < len(points) else "deploy"
            hold(f"hold_{unit}_{n}", f"{unit} {n} of {count}", following + suffix)

    def deploy(at: StageSpec, suffix: str = "") -> PlannedTask:
        """[deploy up to a hold -> hold ...] deploy [-> verify preview [-> hold] -> switch];
        returns the deploy task."""
        partial_deploys(at, suffix)
        task = add(f"deploy{suffix}", "deploy", "deploy", _deploy_summary(spec, at), at=at)
        if isinstance(at.deploy, BlueGreenDeploy) and not ecs:
            add(
                "verify_preview",
                "verify_health",
                "verify",
                f"ServiceHealthySensor: the new colour answers {env.health_check.path} on "
                f"{public_url(env, preview=True, shown=True)}",
                at=at,
                extra={"port": env.router.preview_port},
            )
            if held_at(at.deploy):
                hold("hold_switch", "the preview, before the switch", "switch")
            add(
                "switch",
                "switch",
                "deploy",
                "SwitchTrafficOperator: all traffic to the new colour",
                at=at,
            )
        return task

    require = previous.environment if previous is not None and stage.require_previous else None
    if require is not None:
        add(
            "require_previous",
            "require",
            "promote",
            f"RequireTagOperator: the digest is what {require}'s tag names (it passed there); "
            "nothing moves",
            extra={"tag": require},
        )
    choices = stage.choices()
    if len(choices) == 1:
        apply_infra(stage)
        migrate_expand()
        deploy(stage)
    else:
        migrate_expand()
        types = [d.type for d in choices]
        choose = add(
            "choose_deploy",
            "choose",
            "control",
            f"the run's param {stage.choice_param} picks the deployment type: "
            + " or ".join(TYPE_NAMES[t] for t in types)
            + f" (default {TYPE_NAMES[types[0]]})",
            extra={"param": stage.choice_param},
        )
        paths, ends = {}, []
        for choice in choices:  # apply infra (when its type wants it) -> deploy ...
            last = (choose.task_id,)
            at, suffix = (
                stage.as_deploy(choice),
                "" if choice is stage.deploy else f"_{choice.type}",
            )
            first = apply_infra(at, suffix)
            task = deploy(at, suffix)
            paths[choice.type] = (first or task).task_id
            ends.append(last[0])
        choose.extra["paths"] = paths
        last, join = tuple(ends), "none_failed_min_one_success"
    router = public_url(env, shown=True).split("://", 1)[1].rstrip("/")
    if stage.verify.health and not ecs:
        add(
            "verify_health",
            "verify_health",
            "verify",
            f"ServiceHealthySensor: {router} answers {env.health_check.path}",
            extra={"port": env.router.port},
        )
    smokes = []
    base = last
    for smoke in stage.verify.smoke:
        if smoke.http is not None:
            what = f"GET http://{router}{smoke.http.path} expects {smoke.http.status}" + (
                ", serving the digest" if smoke.http.expect_digest else ""
            )
        else:
            what = f"TestImageOperator: {_command(smoke.command or [])}"
        task = PlannedTask(
            f"{name}.smoke_{smoke.name}", "smoke", "verify", what, base, stage=stage, item=smoke,
            trigger_rule=join or "all_success", scope=scope,
        )  # fmt: skip
        smokes.append(task)
    out += smokes
    if smokes:
        last, join = tuple(t.task_id for t in smokes), None
    add(
        "promote",
        "promote",
        "promote",
        f"PromoteImageOperator: tag {stage.environment} -> the digest, once it passed its "
        "checks there"
        if ecs
        else f"PromoteImageOperator: tag {stage.environment} -> the digest, once it serves there "
        "and passed "
        "its checks (under the deployment lock)",
    )
    verified = last
    colour = next((d for d in choices if isinstance(d, BlueGreenDeploy)), None)
    if colour is not None and not ecs:
        # After a choice, retire follows the switch too: skipped when blue/green was not chosen.
        switch = (f"{name}.switch",) if len(choices) > 1 else ()
        last = (*last, *switch)
        add(
            "retire",
            "retire",
            "retire",
            f"RetireOperator: the old colour removed {colour.scale_down_delay:g}s after the switch",
            at=stage.as_deploy(colour) if len(choices) > 1 else None,
        )
        if len(choices) > 1:  # what follows runs whether retire ran or was skipped
            last, join = (*verified, *last), "none_failed_min_one_success"
    if spec.migrates(stage):
        add(
            "migrate_contract",
            "migrate",
            "migrate",
            "MigrateDatabaseOperator: contract",
            item="contract",
        )
    join = None
    if holds:  # beside the stage's line: runs only when a human chose Abort
        out.append(
            PlannedTask(
                f"{name}.{ABORT}",
                "abort",
                "deploy",
                "AbortRolloutOperator: the release under way drained and removed; what served "
                "before serves as before",
                tuple(holds),
                stage=stage,
                trigger_rule="none_failed_min_one_success",
                extra={"holds": list(holds)},
            )
        )
        last = (*last, f"{name}.{ABORT}")
    add(
        "record",
        "record",
        "record",
        f"RecordDeliveryOperator: the delivery to {name} in the ledger (outcome, digests, who "
        "approved); it fails when the stage did",
        trigger_rule="all_done",
        extra={"holds": holds, "abort": f"{name}.{ABORT}", "partials": partials} if holds else {},
    )
    return out


def _command(command: list[str] | str) -> str:
    text = " ".join((command if isinstance(command, str) else " ".join(command)).split())
    return text if len(text) <= 60 else text[:57] + "..."


def plan_data(spec: PipelineSpec) -> dict[str, Any]:
    """The plan as data (``docker-delivery plan --json``): the DAG, and each task with its
    environment, upstream tasks, trigger rule, retries and timeout, in order."""
    tasks = []
    for task in plan_tasks(spec):
        policy = spec.policy(task.policy)
        tasks.append(
            {
                "task_id": task.task_id,
                "kind": task.kind,
                "environment": task.stage.environment if task.stage else None,
                "summary": task.summary,
                "upstream": list(task.upstream),
                "trigger_rule": task.trigger_rule,
                "retries": policy.retries or 0,
                "retry_delay": policy.retry_delay,
                "timeout": policy.timeout,
            }
        )
    p = spec.pipeline
    return {
        "dag_id": spec.dag_id,
        "service": spec.service,
        "repository": spec.repository,
        "mode": p.mode,
        "environments": [
            {
                "name": stage.environment,
                "target": spec.env(stage).target,
                "deployment_types": [d.type for d in stage.choices()],
                "approval": spec.gated(stage),
                "url": public_url(spec.env(stage), shown=True),
            }
            for stage in p.stages
        ],
        "tasks": tasks,
    }


def describe_plan(spec: PipelineSpec) -> str:
    """The plan as text: the DAG, its triggers, and its tasks per environment, in order."""
    p = spec.pipeline
    tasks = plan_tasks(spec)
    mode = p.mode.replace("_", " ")
    lines = [f"DAG {spec.dag_id}: {mode} of {spec.service} ({spec.repository})"]
    trig = p.trigger
    if trig.schedule:
        lines.append(
            f"  runs: on schedule {trig.schedule}; manual runs take params revision, image"
        )
    elif trig.asset:
        repo = trig.asset.repository or spec.repository
        lines.append(
            f"  runs: when {repo}:{trig.asset.environment} is promoted (redeploys that digest); "
            "manual runs take params revision, image"
        )
    else:
        lines.append("  runs: manual; params revision (commit SHA / ref) or image (redeploy)")
    width = max(len(t.task_id) for t in tasks)
    number = 0

    def row(task: PlannedTask) -> str:
        nonlocal number
        number += 1
        policy = spec.policy(task.policy)
        retries = f"retries {policy.retries}" if policy.retries else "no retry"
        return f"    {number:>2}. {task.task_id:<{width}}  {task.summary}  [{retries}]"

    lines.append("  build once:")
    for task in tasks:
        if task.stage is None:
            lines.append(row(task))
    for stage in p.stages:
        env = spec.env(stage)
        gate = " (after an approval)" if spec.gated(stage) else ""
        kinds = " or ".join(TYPE_NAMES[d.type] for d in stage.choices())
        chosen = f" (param {stage.choice_param})" if stage.alternatives else ""
        lines.append(
            f"  {stage.environment}{gate}: {kinds}{chosen} on {env.target}, "
            f"{public_url(env, shown=True)}"
        )
        for task in tasks:  # a choice's paths carry a copy of the stage (another deploy)
            if task.stage is not None and task.stage.environment == stage.environment:
                lines.append(row(task))
    return "\n".join(lines)


def public_url(env: EnvironmentSpec, *, preview: bool = False, shown: bool = False) -> str:
    """Where users reach the environment's router (``preview``: its preview frontend): the
    spec's URL (on ECS: ``aws.public_url``), else the engine's host: ``localhost`` for the
    local engine, or the host of the environment's engine connection, read when the task runs
    (the delivery DAG's ``engine_host`` macro; ``shown``: a placeholder for a printed plan)."""
    if env.target == "ecs":
        aws = env.aws
        return aws.public_url if aws and aws.public_url else "http://<no aws.public_url>/"
    if not env.engine:
        host = LOCAL_HOST
    elif shown:
        host = f"<host of {env.engine}>"
    else:
        host = "{{ engine_host('" + env.engine + "') }}"
    settings = env.router.settings()
    url = settings.preview(host) if preview else settings.url(host)
    assert url is not None, "a preview URL needs a preview port"
    return url
