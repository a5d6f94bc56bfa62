"""Abort a rollout held for a human's decision: the release under way leaves, what served before
serves as it did before the delivery began.

A pipeline holds a rollout at a point its deployment type gives it (``hold_after`` a rolling
stage or an A/B step, ``hold_before_switch`` of blue/green); a human answers Continue or Abort.
Abort is not a rollback: the release being rolled out never took over, so it goes back to what
still serves, never to what served before that.

* rolling (Swarm): the old release's service back to ``replicas`` tasks, health-gated and routed,
  then the new tasks drained and the new service removed
  (:meth:`~docker_delivery.strategies.rolling.RollingDeployment.abort`);
* blue/green before the switch: nothing was switched; the new colour (the idle group, on the
  preview port) is drained and removed;
* A/B during the test: ``public`` back to A's home group (atomic), B drained and removed (the
  rollback's first case, :mod:`.rollback`).

Every case reads where things stand first and does only what is left: aborting twice changes
nothing the second time. It runs under the service's deployment lock, as every step does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from docker_delivery.errors import AbortImpossible as AbortImpossible
from docker_delivery.routing.service import AB
from docker_delivery.strategies.base import Log, result_dict
from docker_delivery.strategies.groups import clear_other_groups
from docker_delivery.strategies.rolling import RollingDeployment
from docker_delivery.strategies.settings import ABTest, BlueGreen, DeploySettings, Rolling
from docker_delivery.strategies.wiring import connect, locked
from docker_delivery.targets.swarm import SwarmTarget

if TYPE_CHECKING:
    import docker

    from docker_delivery.health import HealthCheck
    from docker_delivery.routing.haproxy import HaproxyRouter
    from docker_delivery.routing.service import RouterSettings
    from docker_delivery.targets.base import Release, TargetKind


def hold_subject(service: str, environment: str) -> str:
    """How a hold of ``service`` in ``environment`` asks (the start of its question's subject):
    what the pipeline's hold task says, and what ``docker-delivery continue/abort`` look for."""
    return f"Continue the rollout of {service} in {environment}?"


@dataclass
class AbortResult:
    """What an abort did: ``digest`` left; ``serving`` (a digest) serves again; ``kind``:
    ``rolling``, ``blue_green``, ``ab`` or ``nothing`` (already aborted, or never started)."""

    service: str
    environment: str
    digest: str
    kind: str
    serving: str | None = None
    steps: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return result_dict(self)


def abort_rollout(
    client: docker.DockerClient,
    release: Release,
    settings: DeploySettings,
    *,
    router: RouterSettings | HaproxyRouter,
    check: HealthCheck,
    target: TargetKind,
    owner: str,
    lock_wait: float = 0.0,
    log: Log = print,
) -> AbortResult:
    """Abort the held rollout of ``release`` (its deployment type's ``settings``)."""
    started = time.monotonic()
    with locked(
        client, release.service, release.environment, owner, str(release.image), lock_wait, log
    ):
        w = connect(
            client,
            release.service,
            release.environment,
            router=router,
            check=check,
            target=target,
            log=log,
        )
        result = AbortResult(release.service, release.environment, release.digest, "nothing")
        state = w.state(release.service, release.environment)
        mine = [r for r in state.running if r.config == release.config_id]
        if isinstance(settings, Rolling):
            assert isinstance(w.target, SwarmTarget), "a rolling deployment runs on Swarm"
            done = RollingDeployment(w.target, w.router, w.gate, log=log).abort(release, settings)
            if "nothing to abort" not in done.steps:
                result.kind, result.serving = "rolling", done.previous_digest
            result.steps += done.steps
        elif isinstance(settings, ABTest) and state.public == AB:
            from docker_delivery.strategies.rollback import Rollback

            back = Rollback(w).run(
                release.service, release.environment, stop_grace=release.stop_grace
            )
            result.kind, result.serving = "ab", back.to_digest
            result.steps += back.steps
        elif isinstance(settings, (ABTest, BlueGreen)):
            live = state.live()
            if any(r.config == release.config_id for r in live):
                raise AbortImpossible(
                    f"{release.service}/{release.environment}: {release.short_digest} already "
                    f"serves ({state.public}); it is too late to abort: roll back instead"
                )
            if mine:
                line = (
                    f"aborting: {len(mine)} instance(s) of {release.short_digest} out of the "
                    f"router and removed; {state.public} keeps serving"
                )
                log(line)
                result.steps.append(line)
                clear_other_groups(w, state, grace=release.stop_grace)
                result.kind = "ab" if isinstance(settings, ABTest) else "blue_green"
            result.serving = state.main_digest(live) or None
        else:
            raise AbortImpossible(
                f"a {settings.type} deployment is never held for a decision: nothing to abort"
            )
        if result.kind == "nothing":
            log(f"nothing of {release.short_digest} runs: nothing to abort")
        result.duration_s = time.monotonic() - started
        return result
