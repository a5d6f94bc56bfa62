"""The deployment types on Amazon ECS, with the same settings models as on Docker.

* minimum in-service: one ECS service per environment, updated in place by ECS with the
  deployment configuration the settings map to (:func:`~docker_delivery.targets.ecs.
  deployment_configuration`), the circuit breaker and the environment's alarms; then watched
  until ECS says COMPLETED, and baked against the alarms.
* rolling: one service per environment whose tasks are in task sets (the EXTERNAL deployment
  controller): the release's task set takes each stage's share (``stages``), steady and baked
  against the alarms before the old one gives up as much; then it is primary and the old one
  goes. A failure puts the old task set back to 100 % (``failure_action: rollback``).
* blue/green: one ECS service per colour, each behind its own target group (ALB) or weighted
  record set (Route 53). The idle colour gets the release, its deployment completes, the health
  gate checks it (the test listener, its targets' health), then one weight change sends every
  request to it, read back. The old colour keeps serving for ``scale_down_delay`` (ALB) or the
  record's TTL plus the connection lifetime (Route 53, whichever is longer), watched against the
  alarms: one in ALARM switches back; then the old colour is scaled to 0.
* A/B: the live colour is variant A, the release goes to the idle one (B) beside it; each step
  sets the weights (ALB: 0-999; Route 53: 0-255), bakes for ``bake_time`` against the alarms
  (one in ALARM sets every request back to A and aborts), up to 100 %: then B is live and A is
  scaled to 0 after ``stop_grace``.

Every step first reads where things stand (the router's weights, the services' tags and
deployments) and does only what is missing: a retried task goes on where it stopped.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from docker_delivery.errors import ABTestAborted, DeployAborted, TargetError
from docker_delivery.images.ref import ImageRef
from docker_delivery.routing.alb import AlbRouter, target_health
from docker_delivery.routing.route53 import Route53Router
from docker_delivery.routing.weighted import WeightedRouter, all_to, live_group, split
from docker_delivery.spec.aws import AlbRouterSpec, Route53RouterSpec
from docker_delivery.strategies.aws_bake import AlarmBake, BakeHandedOver
from docker_delivery.strategies.aws_lock import AwsDeploymentLock
from docker_delivery.strategies.base import DeployResult, result_dict
from docker_delivery.strategies.rolling import resolve_stages
from docker_delivery.strategies.settings import (
    ABTest,
    BlueGreen,
    DeploySettings,
    MinimumInService,
    Rolling,
)
from docker_delivery.targets.ecs import (
    EcsDeploymentSettings,
    EcsRelease,
    EcsTarget,
    deployment_configuration,
)

if TYPE_CHECKING:
    from docker_delivery.spec import ServiceSpec

COLOURS = ("blue", "green")


@dataclass
class EcsContext:
    """What one deployment on ECS works with. ``release`` has no colour; ``target_groups``
    names each colour's (or variant's) target group, when an ALB routes; ``health_gate`` checks
    a colour before it takes traffic (raises to stop)."""

    target: EcsTarget
    release: EcsRelease
    replicas: int
    router: WeightedRouter | None = None
    target_groups: dict[str, str] = field(default_factory=dict)
    alarms: tuple[str, ...] = ()
    deploy_timeout: float = 900.0
    bake_s: float = 0.0
    health_gate: Callable[[str], None] | None = None
    lock: AwsDeploymentLock | None = None  # one delivery of the service and environment at once
    log: Callable[[str], None] = print
    sleep: Callable[[float], None] = time.sleep
    hand_over_after: float | None = None  # bakes this long or longer are handed over
    baked: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # key -> report

    def locked(self) -> AbstractContextManager[object]:
        return self.lock if self.lock is not None else nullcontext()

    def bake(self, name: str, seconds: float, *, step: str) -> None:
        """Watch the alarms for ``seconds`` while ``name`` serves (``step``: the point of the
        rollout); DeployAborted on one in ALARM. A bake already run elsewhere passes or fails by
        its report (``baked``); one of ``hand_over_after`` seconds or more is handed over
        (:class:`~docker_delivery.strategies.aws_bake.BakeHandedOver`)."""
        key = f"{name}:{step}"
        report = self.baked.get(key)
        if report is not None:
            if report.get("verdict") != "passed":
                raise DeployAborted(str(report.get("message") or f"the bake {key} failed"))
            self.log(f"{key}: baked {seconds:g}s elsewhere, no alarm fired")
            return
        if self.hand_over_after is not None and seconds >= self.hand_over_after:
            raise BakeHandedOver(AlarmBake(key, name, seconds, tuple(self.alarms), time.time()))
        self.target.bake(name, seconds, self.alarms)

    def needs_router(self) -> WeightedRouter:
        if self.router is None:
            raise TargetError(
                "blue/green and A/B on ECS need a router (alb or route53) in the environment"
            )
        return self.router


def deploy_in_place(ctx: EcsContext, settings: MinimumInService) -> DeployResult:
    """Minimum in-service: the environment's one service moves to the release by ECS's own
    deployment (the ECS deployment controller)."""
    started = time.monotonic()
    release = ctx.release
    before = ctx.target.service(release.name)
    if before is not None and before.controller != "ECS":
        raise TargetError(
            f"service {release.name} runs task sets (rolling deployments): minimum in-service "
            "updates a service in place; deliver this environment by rolling"
        )
    previous = before.digest if before is not None else None
    config = deployment_configuration(
        "min_in_service", ctx.replicas, keep=settings.min_in_service, alarms=ctx.alarms
    )
    ctx.log(
        f"ECS {settings.type}: minimum healthy {config.minimum_healthy_percent} %, maximum "
        f"{config.maximum_percent} %, circuit breaker with rollback, alarms {list(ctx.alarms)}"
    )
    ctx.target.apply(release, ctx.replicas, config, target_group_arn=ctx.target_groups.get("live"))
    ctx.target.wait(release.name, timeout=ctx.deploy_timeout, alarms=ctx.alarms)
    if ctx.health_gate is not None and "live" in ctx.target_groups:
        ctx.health_gate("live")
    if ctx.bake_s:
        ctx.log(f"baking {ctx.bake_s:.0f}s against the alarms")
        ctx.bake(release.name, ctx.bake_s, step="deployed")
    return DeployResult(
        release.service,
        release.environment,
        release.digest,
        previous_digests=[previous] if previous else [],
        previous_digest=previous,
        replaced=ctx.replicas if previous and previous != release.digest else 0,
        already_current=ctx.replicas if previous == release.digest else 0,
        steps=[f"ECS {settings.type} deployment of {release.name}"],
        duration_s=time.monotonic() - started,
    )


def deploy_rolling(ctx: EcsContext, settings: Rolling) -> DeployResult:
    """Rolling, stage by stage: the release's task set takes each stage's share of the
    service's tasks (its scale), is waited on until steady and baked against the alarms, then
    the old release's task set gives up as much; at the end the release's task set is primary
    and the old one goes. A failure sends the old task set back to 100 % and removes the new one
    (``failure_action: rollback``), or leaves both where they are (``pause``)."""
    started = time.monotonic()
    release, target = ctx.release, ctx.target
    name, total = release.name, ctx.replicas
    service = target.service(name)
    if service is not None and service.controller != "EXTERNAL":
        raise TargetError(
            f"service {name} is updated in place by ECS (minimum in-service); a rolling "
            "deployment moves task sets of a service of its own: deliver this environment by "
            "min_in_service, or remove the service first"
        )
    if service is None:
        target.create_external_service(release, total)
    previous = service.digest if service is not None else None
    sets = target.task_sets(name)
    new = next((t for t in sets if t.external_id == release.digest), None)
    old = [t for t in sets if t is not new]
    if new is not None and new.status == "PRIMARY" and not old:
        ctx.log(f"{release.digest} already runs all of {name}")
        return DeployResult(
            release.service, release.environment, release.digest, [release.digest],
            release.digest, 0, total, [], time.monotonic() - started,
        )  # fmt: skip
    counts = resolve_stages(settings.stages, total) if old else [total]
    group = ctx.target_groups.get("live")
    if new is None:
        new = target.create_task_set(release, target_group_arn=group)
    steps: list[str] = []
    try:
        for count in counts:
            percent = round(100 * count / total, 2)
            if new.scale < percent:  # a retry goes on from the share the task set has
                target.scale_task_set(name, new, percent)
            new = target.wait_task_set(
                name, release.digest, timeout=ctx.deploy_timeout, alarms=ctx.alarms
            )
            if ctx.health_gate is not None and group is not None:
                ctx.health_gate("live")
            bake = max(ctx.bake_s, settings.pause)
            if bake and new.scale <= percent:  # a stage past it was baked before
                ctx.bake(name, bake, step=f"{percent:g}%")
            for task_set in old:
                target.scale_task_set(name, task_set, max(0.0, 100 - percent))
            steps.append(f"{count} of {total} tasks on {release.digest[:19]}")
    except DeployAborted:
        if settings.failure_action == "rollback" and old:
            for task_set in old:
                target.scale_task_set(name, task_set, 100.0)
            target.delete_task_set(name, new)
            ctx.log(f"{name}: back on the old release's task set; the new one removed")
        raise
    target.make_primary(name, new)
    for task_set in old:
        target.delete_task_set(name, task_set)
    return DeployResult(
        release.service, release.environment, release.digest,
        [previous] if previous else [], previous, total if old else 0, 0, steps,
        time.monotonic() - started,
    )  # fmt: skip


def _other(colour: str | None) -> str:
    """The colour that is not ``colour`` (blue when there is none yet)."""
    return "green" if colour == "blue" else "blue"


def _coloured(ctx: EcsContext, colour: str) -> EcsRelease:
    return replace(ctx.release, colour=colour)


def _serving(ctx: EcsContext, groups: Sequence[str]) -> tuple[str | None, dict[str, str | None]]:
    """The live group (the router sends it the most requests and its service runs tasks) and
    each group's digest (by its tags; None when it runs none)."""
    router = ctx.needs_router()
    digests = {}
    for group in groups:
        service = ctx.target.service(_coloured(ctx, group).name)
        digests[group] = service.digest if service is not None and service.desired else None
    live = live_group(router.weights())
    return (live if live is not None and digests.get(live) else None), digests


def _start(ctx: EcsContext, group: str, replicas: int) -> None:
    release = _coloured(ctx, group)
    ctx.target.apply(
        release,
        replicas,
        EcsDeploymentSettings(minimum_healthy_percent=100, maximum_percent=200, alarms=ctx.alarms),
        target_group_arn=ctx.target_groups.get(group),
    )
    ctx.target.wait(release.name, timeout=ctx.deploy_timeout, alarms=ctx.alarms)
    if ctx.health_gate is not None:
        ctx.health_gate(group)


def _retire_after(ctx: EcsContext, group: str, wait_s: float, why: str) -> None:
    name = _coloured(ctx, group).name
    if wait_s > 0:
        ctx.log(f"{name} keeps serving {wait_s:.0f}s before it is scaled to 0: {why}")
        ctx.bake(name, wait_s, step="retire")
    ctx.target.scale(name, 0)


def deploy_blue_green(ctx: EcsContext, settings: BlueGreen) -> DeployResult:
    started = time.monotonic()
    router = ctx.needs_router()
    live, digests = _serving(ctx, COLOURS)
    release = ctx.release
    previous = digests.get(live) if live else None
    if live is not None and previous == release.digest:
        old = _other(live)
        if not ctx.baked or digests.get(old) is None:
            ctx.log(f"{release.digest} already serves in {live}: nothing to switch")
            return DeployResult(
                release.service, release.environment, release.digest, [previous], previous, 0,
                ctx.replicas, [f"{live} already serves it"], time.monotonic() - started,
            )  # fmt: skip
        # Resumed after a bake run elsewhere: the switch was made; the old colour is warm.
        ctx.log(f"switched to {live} before; carrying on from its bake")
        idle, live, previous = live, old, digests[old]
    else:
        idle = _other(live)
        ctx.log(f"live: {live or '(none)'}; the release goes to {idle}")
        _start(ctx, idle, settings.preview_replicas or ctx.replicas)
        router.set_weights(all_to(idle, COLOURS, router.max_weight))
    steps = [f"{idle} deployed", f"switched to {idle}"]
    if live is not None:
        try:
            if settings.post_switch_check:
                ctx.log(f"post-switch check: {settings.post_switch_check:.0f}s against the alarms")
                ctx.bake(_coloured(ctx, idle).name, settings.post_switch_check, step="switched")
        except DeployAborted:
            router.set_weights(all_to(live, COLOURS, router.max_weight))
            ctx.log(f"switched back to {live}: {idle} stays up for inspection")
            raise
        wait_s, why = router.hold_old(settings.scale_down_delay)
        _retire_after(ctx, live, wait_s, why)
        steps.append(f"{live} scaled to 0 after {wait_s:.0f}s")
    return DeployResult(
        release.service, release.environment, release.digest,
        [previous] if previous else [], previous, ctx.replicas if previous else 0, 0, steps,
        time.monotonic() - started,
    )  # fmt: skip


@dataclass(frozen=True)
class SwitchedBack:
    """A switch back: the colour that serves again, and its digest."""

    service: str
    environment: str
    colour: str
    digest: str

    def as_dict(self) -> dict[str, Any]:
        return result_dict(self)


def switch_back(ctx: EcsContext) -> SwitchedBack:
    """The colour that served before the last switch takes every request again, if it still
    runs (warm); TargetError otherwise (redeploy its digest instead)."""
    router = ctx.needs_router()
    live, digests = _serving(ctx, COLOURS)
    other = _other(live)
    if live is None or digests.get(other) is None:
        raise TargetError(
            f"no warm colour to switch back to ({other} runs no tasks): redeploy the previous "
            "digest instead"
        )
    router.set_weights(all_to(other, COLOURS, router.max_weight))
    ctx.log(f"switched back from {live} to {other} ({digests[other]})")
    release = ctx.release
    return SwitchedBack(release.service, release.environment, other, str(digests[other]))


@dataclass(frozen=True)
class RolledBack:
    """An in-place rollback: the service's release before, and the one it runs again."""

    service: str
    environment: str
    from_digest: str
    to_digest: str
    task_definition: str

    def as_dict(self) -> dict[str, Any]:
        return result_dict(self)


def roll_back(ctx: EcsContext) -> SwitchedBack | RolledBack:
    """The previous release back: a switch back to the warm colour where a router moves
    traffic; else the service on the newest earlier task definition revision with another image,
    through its deployment (watched like a deployment)."""
    with ctx.locked():
        if ctx.router is not None:
            return switch_back(ctx)
        return _previous_revision(ctx)


def _previous_revision(ctx: EcsContext) -> RolledBack:
    name = ctx.release.name
    service = ctx.target.service(name)
    if service is None:
        raise TargetError(f"no ECS service {name}: nothing to roll back")
    sets = ctx.target.task_sets(name) if service.controller == "EXTERNAL" else []
    primary = next((t for t in sets if t.status == "PRIMARY"), None)
    current = primary.task_definition if primary is not None else service.task_definition
    image = ctx.target.task_definition(current)["containerDefinitions"][0]["image"]
    revisions = ctx.target.revisions(name)
    older = revisions[revisions.index(current) + 1 :] if current in revisions else revisions
    for arn in older:
        before = ctx.target.task_definition(arn)["containerDefinitions"][0]["image"]
        if before != image:
            to = str(ImageRef.parse(before).digest)
            if service.controller == "EXTERNAL":
                _task_set_back(ctx, replace(ctx.release, image=before), arn, sets)
            else:
                settings = deployment_configuration(
                    "rolling", max(1, service.desired), alarms=ctx.alarms
                )
                ctx.target.redeploy(name, arn, service.desired, settings)
                ctx.target.wait(name, timeout=ctx.deploy_timeout, alarms=ctx.alarms)
            ctx.log(f"{name} rolled back: {service.digest} -> {to}")
            return RolledBack(
                ctx.release.service, ctx.release.environment, str(service.digest), to, arn
            )
    raise TargetError(f"{name}: no earlier task definition revision with another image")


def _task_set_back(
    ctx: EcsContext, release: EcsRelease, task_definition: str, sets: Sequence[Any]
) -> None:
    """The earlier release's task set at 100 %, primary; the others removed."""
    name, target = release.name, ctx.target
    back = next((t for t in sets if t.external_id == release.digest), None)
    if back is None:
        back = target.create_task_set(
            release, target_group_arn=ctx.target_groups.get("live"),
            task_definition=task_definition,
        )  # fmt: skip
    target.scale_task_set(name, back, 100.0)
    back = target.wait_task_set(name, release.digest, timeout=ctx.deploy_timeout, alarms=ctx.alarms)
    target.make_primary(name, back)
    for task_set in sets:
        if task_set.external_id != release.digest:
            target.delete_task_set(name, task_set)


def deploy_ab(ctx: EcsContext, settings: ABTest) -> DeployResult:
    started = time.monotonic()
    router = ctx.needs_router()
    weights = router.weights()
    live, digests = _serving(ctx, COLOURS)
    # A retry finds the release already taking a share: B is the colour that runs it.
    b = next((c for c in COLOURS if digests.get(c) == ctx.release.digest and weights.get(c)), None)
    a = _other(b) if b else live
    if a is None or digests.get(a) is None:
        raise TargetError(
            "an A/B test needs a release serving (variant A); deploy the first release with "
            "min_in_service or blue_green"
        )
    b = b or _other(a)
    ctx.log(f"A/B: variant A is {a} ({digests[a]}), B is {b} ({ctx.release.digest})")
    done = 100 * weights.get(b, 0) / router.max_weight  # B's share now (%)
    steps = []
    at = round(done)  # where the test stands (%), for a failure's message
    try:  # B may take a share already (a retry, a resumed bake): any failure sends all to A
        _start(ctx, b, ctx.replicas)
        for percent in settings.steps:
            if percent + 0.5 < done:
                continue  # a retry goes on from the step the router serves, baking it again
            at = percent
            router.set_weights(split(a, b, percent, router.max_weight))
            steps.append(f"{percent} % to {b}")
            ctx.bake(_coloured(ctx, b).name, settings.bake_time, step=f"{percent}%")
    except DeployAborted as exc:
        router.set_weights(all_to(a, COLOURS, router.max_weight))
        raise ABTestAborted(
            f"A/B test aborted at {at} %: {exc}; every request back to {a}",
            figures={"percent": at},
        ) from exc
    _retire_after(ctx, a, settings.stop_grace, "the connections it still serves")
    return DeployResult(
        ctx.release.service, ctx.release.environment, ctx.release.digest,
        [str(digests[a])], digests[a], ctx.replicas, 0, steps, time.monotonic() - started,
    )  # fmt: skip


def targets_healthy(
    elbv2: Any,
    groups: dict[str, str],
    timeout: float,
    log: Callable[[str], None],
    *,
    preview: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[str], None]:
    """The health gate behind an ALB: ``group`` (a colour, or ``live``: the service's one
    target group) on the test listener first when ``preview`` is given, then every target of its
    target group healthy by ALB's own health checks, within ``timeout``."""

    def gate(group: str) -> None:
        if preview is not None and group != "live":
            preview(group)
        deadline = clock() + timeout
        while True:
            health = target_health(elbv2, groups[group])
            if health and all(state == "healthy" for state in health.values()):
                log(f"{group}: {len(health)} targets healthy")
                return
            if clock() >= deadline:
                raise DeployAborted(
                    f"{group}'s targets not healthy after {timeout:.0f}s: {health or 'none'}"
                )
            sleep(5.0)

    return gate


def context_for(
    spec: ServiceSpec,
    environment: str,
    image: str,
    client: Callable[[str], Any],
    log: Callable[[str], None] = print,
    *,
    owner: str | None = None,
    lock_wait: float = 0.0,
) -> EcsContext:
    """The context of a deployment of ``image`` to an ``ecs`` environment of ``spec``;
    ``client(name)`` gives a boto3 client (``ecs``, ``elbv2``, ``route53``, ``cloudwatch``,
    ``ssm``). With ``owner`` the deployment takes the service's lock (waiting ``lock_wait``)."""
    env = spec.environment(environment)
    aws = env.aws
    if env.target != "ecs" or aws is None:
        raise TargetError(f"environments.{environment}: not an ecs environment")
    release = EcsRelease(
        service=spec.service,
        environment=environment,
        image=image,
        port=env.port,
        environment_vars=dict(env.env),
        secrets={s.name: s.ref for s in env.secrets},
        cpu=aws.cpu,
        memory=aws.memory,
        execution_role_arn=aws.execution_role_arn,
    )
    target = EcsTarget(
        client("ecs"),
        aws.cluster,
        cloudwatch=client("cloudwatch") if aws.alarms else None,
        launch_type=aws.launch_type,
        network=aws.network(),
        log=log,
    )
    router: WeightedRouter | None = None
    groups: dict[str, str] = {"live": aws.target_group} if aws.target_group else {}
    preview = None
    if isinstance(aws.router, AlbRouterSpec):
        alb = AlbRouter(
            client("elbv2"),
            aws.router.listener_arn,
            aws.router.arns,
            test_listener_arn=aws.router.test_listener_arn,
            stickiness_s=aws.router.stickiness,
            log=log,
        )
        router = alb
        groups.update(aws.router.arns)
        preview = alb.preview if aws.router.test_listener_arn else None
    elif isinstance(aws.router, Route53RouterSpec):
        router = Route53Router(
            client("route53"),
            aws.router.zone_id,
            aws.router.record_name,
            {name: t.as_target() for name, t in aws.router.targets.items()},
            record_type=aws.router.record_type,
            ttl=aws.router.ttl,
            connection_lifetime_s=aws.router.hold_s - aws.router.ttl,
            log=log,
        )
    gate = None
    if groups:
        gate = targets_healthy(client("elbv2"), groups, aws.deploy_timeout, log, preview=preview)
    lock = None
    if owner is not None:
        lock = AwsDeploymentLock(
            client("ssm"), aws.cluster, spec.service, environment, owner=owner,
            wait=lock_wait, log=log,
        )  # fmt: skip
    return EcsContext(
        target,
        release,
        env.replicas,
        router=router,
        target_groups=groups,
        alarms=tuple(aws.alarms),
        deploy_timeout=aws.deploy_timeout,
        bake_s=aws.bake,
        health_gate=gate,
        lock=lock,
        log=log,
    )


def run_on_ecs(ctx: EcsContext, settings: DeploySettings) -> DeployResult:
    """The deployment type ``settings`` names, on ECS, under the service's lock."""
    with ctx.locked():
        if isinstance(settings, MinimumInService):
            return deploy_in_place(ctx, settings)
        if isinstance(settings, Rolling):
            return deploy_rolling(ctx, settings)
        if isinstance(settings, BlueGreen):
            return deploy_blue_green(ctx, settings)
        if isinstance(settings, ABTest):
            return deploy_ab(ctx, settings)
    raise TargetError(f"no ECS runner for {settings.type}")
