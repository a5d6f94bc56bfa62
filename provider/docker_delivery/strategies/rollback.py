"""Rollback: return a service in an environment to its previous release.

Everything is read from running objects (a worker that crashed halfway left nothing else):

* the router's routes map says which group is live (``public``) and whether an A/B test runs
  (``public`` -> ``ab``);
* the live instances' labels say what ran before them: ``io.docker-delivery.previous-digest``
  and ``previous-image`` (written by blue/green, A/B, rollback and min in-service when they start
  an instance); the most common value among the live instances wins, unless the newest switch
  marker made the live release live (then its ``previous-digest``: after a switch back, a second
  rollback goes forward again);
* the router's slots and the containers' labels say whether that previous release still runs,
  ready, in another group.

It works on both targets: containers of the engine, or Swarm tasks (a Swarm service per release
and group); :func:`roll_back` tells which from what runs.

Three cases, the cheapest first:

1. an A/B test under way (``public`` -> ``ab``): A never left its home group; ``public`` goes
   back to it (atomic), the ``ab`` backend is emptied and B's containers removed;
2. the previous release is still warm (blue/green before ``retire``: the old colour runs, ready
   in its backend): HAProxy must see all its servers up and one direct probe of each must pass,
   then ``public`` is routed to it (atomic; requests in flight finish on the bad release). A
   switch marker is written, so a later ``retire`` removes the bad colour after its delay;
3. otherwise a redeploy of the previous digest into the live group, in batches (min in-service on
   the engine; on Swarm a staged rollout of its Swarm service with the same batches): the image is
   ``previous-image`` (or the current image's repository at ``previous-digest``), the run-time
   environment is the current one (an environment change is an infrastructure change, not part
   of a release): ``template`` (the release as the environment spec describes it) with the
   previous image, or else the names in ``io.docker-delivery.env-keys`` with the values in the
   live container's configuration. The redeployed instances record the bad release as their
   previous one, so a second rollback goes forward again (like ``kubectl rollout undo``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from docker_delivery.errors import RollbackImpossible as RollbackImpossible
from docker_delivery.health import HealthCheck
from docker_delivery.images.ref import ImageRef
from docker_delivery.routing.haproxy import HaproxyRouter
from docker_delivery.routing.service import AB, PUBLIC, RouterSettings
from docker_delivery.strategies.base import DeployAborted, Log, most_common, result_dict
from docker_delivery.strategies.groups import (
    clear_other_groups,
    into_group,
    remove_instances,
    take_out,
)
from docker_delivery.strategies.markers import last_switch, record_switch
from docker_delivery.strategies.min_in_service import (
    MinimumInService,
    MinimumInServiceDeployment,
)
from docker_delivery.strategies.rolling import Rolling, RollingDeployment
from docker_delivery.strategies.state import (
    GROUPS,
    Running,
    ServiceState,
    list_running,
    running_kind,
)
from docker_delivery.strategies.watch import probe_all
from docker_delivery.strategies.wiring import Wiring, connect, locked
from docker_delivery.targets.base import Release, TargetKind
from docker_delivery.targets.engine import EngineTarget
from docker_delivery.targets.labels import (
    LABEL_PREVIOUS_DIGEST,
    LABEL_PREVIOUS_IMAGE,
    LABEL_SECRET_KEYS,
    LABEL_SLOT_GROUP,
)
from docker_delivery.targets.swarm import SwarmTarget

if TYPE_CHECKING:
    import docker

Kind = Literal["switch-back", "redeploy"]


@dataclass(frozen=True)
class RollbackPlan:
    """What a rollback will do, decided from the running objects alone."""

    kind: Kind
    live: str  # the group public routes to now
    target: str  # the group public will route to
    from_digest: str
    to_digest: str
    to_image: str
    instances: int  # live instances now (the size of a redeploy)
    why: str

    def describe(self) -> str:
        short = self.to_digest[7:19] or "?"
        if self.kind == "switch-back":
            return (
                f"switch back: public {self.live} -> {self.target} ({short}, still warm): "
                f"{self.why}"
            )
        return (
            f"redeploy {short} ({self.to_image}) into {self.target}, in batches, "
            f"{self.instances} instance(s): {self.why}"
        )


@dataclass
class RollbackResult:
    service: str
    environment: str
    kind: Kind
    from_digest: str
    to_digest: str
    live: str
    switch_s: float | None = None  # from the call to the switch (switch-back only)
    steps: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return result_dict(self)


@dataclass(frozen=True)
class NotServing:
    """A rollback of one release that had nothing to undo: nothing was changed."""

    service: str
    environment: str
    serving: str
    release: str
    why: str
    kind: str = "nothing"

    def as_dict(self) -> dict[str, Any]:
        return result_dict(self)


class Rollback:
    """Plans and runs a rollback from where things stand (see the module docstring)."""

    def __init__(self, wiring: Wiring) -> None:
        self._w = wiring
        self._log = wiring.log

    # -- the plan --------------------------------------------------------------------------

    def plan(self, service: str, environment: str, to_digest: str | None = None) -> RollbackPlan:
        return self._plan(self._w.state(service, environment), to_digest)

    def _plan(self, state: ServiceState, to_digest: str | None = None) -> RollbackPlan:
        """``to_digest``: go back to that release (a release's rollback by id knows what ran
        before it from the ledger), not to what the live instances' labels name."""
        if state.public == AB:
            return self._plan_ab(state)
        live = state.live()
        if not live:
            raise RollbackImpossible(
                f"{state.service}/{state.environment}: nothing is live in {state.public}: "
                "there is no release to roll back from"
            )
        current = state.main_digest(live)
        current_ones = [r for r in live if r.digest == current]
        previous = most_common([r.previous_digest for r in current_ones]) or ""
        record = last_switch(self._w.client, state.service, state.environment)
        if record and (record.live, record.digest) == (state.public, current):
            # The last switch made this release live: what it replaced is the previous one
            # (after a switch back, that is the release rolled back from: undo goes forward).
            previous = record.previous_digest or previous
        previous = to_digest or previous
        if not previous:
            raise RollbackImpossible(
                f"{state.service}/{state.environment}: the live instances ({current[7:19]}) do "
                f"not record a previous release (label {LABEL_PREVIOUS_DIGEST}); deploy the "
                "digest you want by its reference instead"
            )
        for group in GROUPS:
            if group == state.public:
                continue
            ready = state.serving(group)
            if ready and all(r.digest == previous for r in ready):
                return RollbackPlan(
                    kind="switch-back",
                    live=state.public,
                    target=group,
                    from_digest=current,
                    to_digest=previous,
                    to_image=ready[0].image,
                    instances=len(live),
                    why=f"{len(ready)} instance(s) of it still ready in {group}",
                )
        image = (
            most_common(
                [
                    r.previous_image
                    for r in current_ones
                    if (r.previous_image or "").endswith(previous)
                ]
            )
            or ""
        )
        if not image:
            image = str(ImageRef.parse(current_ones[0].image).without_tag().with_digest(previous))
        return RollbackPlan(
            kind="redeploy",
            live=state.public,
            target=state.public,
            from_digest=current,
            to_digest=previous,
            to_image=image,
            instances=len(live),
            why="the previous release no longer runs",
        )

    def _plan_ab(self, state: ServiceState) -> RollbackPlan:
        in_ab = [r for r, _ in state.members(AB, ("ready", "drain", "maint"))]
        digests = {r.digest for r in in_ab}
        # B is the variant whose instances record another variant present as their previous one.
        b = next(
            (
                d
                for d in digests
                if any(r.previous_digest in digests - {d} for r in in_ab if r.digest == d)
            ),
            "",
        )
        a_members = [r for r in in_ab if r.digest != b]
        if not a_members:
            raise RollbackImpossible(
                f"{state.service}/{state.environment}: public routes to ab but variant A is not "
                "there any more; deploy the release you want"
            )
        home = a_members[0].group
        return RollbackPlan(
            kind="switch-back",
            live=AB,
            target=home,
            from_digest=b,
            to_digest=a_members[0].digest,
            to_image=a_members[0].image,
            instances=len(a_members),
            why=f"an A/B test runs: A still runs ({len(a_members)} instance(s), home {home})",
        )

    # -- the run ---------------------------------------------------------------------------

    def run(
        self,
        service: str,
        environment: str,
        *,
        settings: MinimumInService | None = None,
        template: Release | None = None,
        stop_grace: float = 30.0,
        started_at: float | None = None,
        to_digest: str | None = None,
    ) -> RollbackResult:
        """Roll back (to ``to_digest`` when given); ``started_at`` (time.monotonic() at the
        call) times the switch."""
        t0 = started_at if started_at is not None else time.monotonic()
        state = self._w.state(service, environment)
        plan = self._plan(state, to_digest)
        self._log(plan.describe())
        result = RollbackResult(
            service, environment, plan.kind, plan.from_digest, plan.to_digest, plan.target
        )
        result.steps.append(plan.describe())
        if plan.kind == "switch-back" and plan.live == AB:
            result.switch_s = self._back_from_ab(state, plan, t0, stop_grace)
        elif plan.kind == "switch-back":
            switched = self._switch_back(state, plan, t0)
            if switched is None:  # the warm group failed its check: redeploy instead
                plan = RollbackPlan(
                    "redeploy",
                    plan.live,
                    plan.live,
                    plan.from_digest,
                    plan.to_digest,
                    plan.to_image,
                    plan.instances,
                    "the warm copy failed its check",
                )
                result.kind, result.live = "redeploy", plan.live
                result.steps.append(plan.describe())
                self._redeploy(state, plan, settings, template, stop_grace)
            else:
                result.switch_s = switched
        else:
            self._redeploy(state, plan, settings, template, stop_grace)
        result.duration_s = time.monotonic() - t0
        return result

    def _switch_back(self, state: ServiceState, plan: RollbackPlan, t0: float) -> float | None:
        w = self._w
        members = state.members(plan.target)
        servers = {s.slot: s for s in w.router.servers(plan.target)}
        down = [s.slot for _, s in members if servers[s.slot].operational != "up"]
        failed = {
            a: d
            for a, (ok, d) in probe_all([r for r, _ in members], w.check, w.transport).items()
            if not ok
        }
        if down or failed:
            self._log(
                f"{plan.target} is not fit to take traffic (router: slots {down} not up; "
                f"probes: {failed or 'ok'})"
            )
            return None
        w.router.route(PUBLIC, plan.target)
        switched = time.monotonic() - t0
        self._log(
            f"public -> {plan.target} ({plan.to_digest[7:19]}) {switched:.3f}s after the call"
        )
        record_switch(
            w.client,
            state.service,
            state.environment,
            image=plan.to_image,
            live=plan.target,
            previous=plan.live,
            digest=plan.to_digest,
            previous_digest=plan.from_digest,
            log=self._log,
        )
        return switched

    def _back_from_ab(
        self, state: ServiceState, plan: RollbackPlan, t0: float, stop_grace: float
    ) -> float:
        w = self._w
        home = plan.target
        a = [
            r
            for r, _ in state.members(AB, ("ready", "drain", "maint"))
            if r.digest == plan.to_digest
        ]
        a_addresses = {r.address for r in a}
        ready = {s.endpoint for r, s in state.members(home) if r.address in a_addresses}
        if len(ready) < len(a):
            # The promotion had begun: A back into its home slots (home is not routed now).
            out = [s for s in state.assigned(home) if s.endpoint not in a_addresses]
            if out:
                take_out(w, home, out, drain_timeout=120.0)
            missing = [r for r in a if r.address not in ready]
            into_group(w, home, missing, router_up_timeout=30.0)
        w.router.route(PUBLIC, home)
        switched = time.monotonic() - t0
        self._log(f"public -> {home} (A, {plan.to_digest[7:19]}) {switched:.3f}s after the call")
        state = w.state(state.service, state.environment)
        servers = state.assigned(AB)
        if servers:
            take_out(w, AB, servers, drain_timeout=120.0)
        serving = {r.id for r in state.serving(home)}
        b = [r for r in state.running if r.digest == plan.from_digest and r.id not in serving]
        remove_instances(w, b, grace=stop_grace)
        return switched

    def _redeploy(
        self,
        state: ServiceState,
        plan: RollbackPlan,
        settings: MinimumInService | None,
        template: Release | None,
        stop_grace: float,
    ) -> None:
        w = self._w
        live = state.live()
        clear_other_groups(w, state, grace=stop_grace)
        current = next(r for r in live if r.digest == plan.from_digest)
        history = {
            LABEL_SLOT_GROUP: state.public,
            LABEL_PREVIOUS_DIGEST: plan.from_digest,
            LABEL_PREVIOUS_IMAGE: current.image,
        }
        if template is not None:
            if (template.service, template.environment) != (state.service, state.environment):
                raise RollbackImpossible(
                    f"the template is a release of {template.service}/{template.environment}, "
                    f"not of {state.service}/{state.environment}"
                )
            release = replace(
                template,
                image=ImageRef.parse(plan.to_image),
                labels={**template.labels, **history},
            )
        else:
            if current.labels.get(LABEL_SECRET_KEYS):
                raise RollbackImpossible(
                    f"{state.service}/{state.environment} runs with secrets, which no label "
                    "holds: pass template= (the release as the environment spec describes it) "
                    "to redeploy the previous digest"
                )
            release = Release(
                state.service,
                state.environment,
                ImageRef.parse(plan.to_image),
                port=w.check.port,
                env=self._run_env(current),
                labels=history,
                stop_grace=stop_grace,
            )
        w.target.ensure_image(release)
        count = len(live)
        mis = settings or MinimumInService(
            replicas=count, min_in_service=count - max(1, count // 2)
        )
        if isinstance(w.target, SwarmTarget):
            # The same batches as a staged rollout of the previous digest's Swarm service.
            batch = mis.count - mis.keep
            stages = (*range(batch, mis.count, batch), mis.count)
            RollingDeployment(w.target, w.router, w.gate, backend=state.public, log=self._log).run(
                release, Rolling(replicas=mis.count, stages=stages)
            )
            return
        assert isinstance(w.target, EngineTarget)
        MinimumInServiceDeployment(
            w.target, w.router, w.gate, backend=state.public, log=self._log
        ).run(release, mis)

    def _run_env(self, member: Running) -> dict[str, str]:
        """The live instance's run-time environment: the names in its env-keys label with the
        values of its configuration; without the label, what differs from its image's ENV."""
        api = self._w.client.api
        if member.task_id:  # a Swarm task, on any node: its spec, from the manager
            spec = api.inspect_task(member.task_id)["Spec"]["ContainerSpec"]
            variables, image_id = spec.get("Env") or [], member.image or spec["Image"]
        else:
            attrs = api.inspect_container(member.id)
            variables, image_id = (attrs.get("Config") or {}).get("Env") or [], attrs["Image"]
        env = {k: v for k, v in (e.split("=", 1) for e in variables if "=" in e)}
        keys = member.env_keys
        if keys is not None:
            return {k: env[k] for k in keys if k in env}
        image = api.inspect_image(image_id)
        image_pairs = [
            e.split("=", 1) for e in (image.get("Config") or {}).get("Env") or [] if "=" in e
        ]
        image_env = {k: v for k, v in image_pairs}
        return {k: v for k, v in env.items() if image_env.get(k) != v and k != "APP_DIGEST"}


def roll_back(
    client: docker.DockerClient,
    service: str,
    environment: str,
    *,
    router: RouterSettings | HaproxyRouter,
    check: HealthCheck,
    target: TargetKind | None = None,
    owner: str,
    settings: MinimumInService | None = None,
    template: Release | None = None,
    stop_grace: float = 30.0,
    lock_wait: float = 0.0,
    dry_run: bool = False,
    log: Log = print,
    to_digest: str | None = None,
) -> RollbackResult:
    """Return ``service`` in ``environment`` to its previous release (RollbackOperator), or to
    ``to_digest`` (a release's rollback by id: what ran before it, from the ledger).

    A switch back when the previous release is still warm (blue/green before retire, or an A/B
    test under way), a min-in-service redeploy of the previous digest otherwise (``settings``;
    default: batches of half the live size). ``template``: the release as the environment spec
    describes it (environment, secrets, limits, networks, command, port, stop grace); its image
    is replaced by the previous one. Without it, the live containers' run-time environment
    variables are carried over (``io.docker-delivery.env-keys``), nothing else, and a release
    with secrets is refused. ``dry_run`` logs the plan and changes nothing. Raises
    :class:`RollbackImpossible` when the running objects do not tell what ran before.
    """
    t0 = time.monotonic()
    live = [r for r in list_running(client, service, environment, check.port) if r.image]
    if not live:
        raise RollbackImpossible(f"nothing runs for {service}/{environment}")

    def runner() -> Rollback:
        kind = target
        if kind is None:  # what runs tells
            kinds = {
                running_kind(r) for r in list_running(client, service, environment, check.port)
            }
            kind = "swarm" if kinds == {"swarm"} else "engine"
        w = connect(client, service, environment, router=router, check=check, target=kind, log=log)
        return Rollback(w)

    if dry_run:
        plan = runner().plan(service, environment, to_digest)
        log(plan.describe())
        return RollbackResult(
            service, environment, plan.kind, plan.from_digest, plan.to_digest, plan.target
        )
    with locked(client, service, environment, owner, live[0].image, lock_wait, log):
        try:
            return runner().run(
                service,
                environment,
                settings=settings,
                template=template,
                stop_grace=stop_grace,
                started_at=t0,
                to_digest=to_digest,
            )
        except DeployAborted as exc:
            raise DeployAborted(f"rollback of {service}/{environment} failed: {exc}") from exc


def nothing_to_undo(
    client: docker.DockerClient,
    service: str,
    environment: str,
    release: str,
    *,
    back_to: str | None,
    **wiring: Any,
) -> NotServing | None:
    """Whether the release of digest ``release`` has nothing to undo here (a release's rollback
    task, after a failure anywhere in it): None when it serves and replaced something (roll it
    back, to ``back_to``: what served before it); else why not: it replaced nothing (its deploy
    found it serving already: ``back_to`` is the same digest), or something else serves (it
    never got there, or its own deploy stepped back). ``wiring``: :func:`roll_back`'s router,
    check, target and owner."""
    if back_to == release:
        return NotServing(service, environment, release, release, "it replaced nothing here")
    try:
        serving = roll_back(client, service, environment, dry_run=True, **wiring).from_digest
    except RollbackImpossible:  # nothing ran before: a first release, or nothing runs
        port = wiring["check"].port
        running = {r.digest for r in list_running(client, service, environment, port)}
        if release in running:
            raise
        serving = ",".join(sorted(running)) or "nothing"
    if serving == release:
        return None
    return NotServing(service, environment, serving, release, f"{serving[7:19]} serves, not it")
