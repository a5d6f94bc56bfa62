"""One call per deployment: target, router, health gate and lock assembled around a strategy.

Operators call :func:`deploy`; so do tests and benchmarks. Everything is validated before the
first change: the release (digest-pinned, names), the strategy's settings, the router's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from docker_delivery.health import HealthCheck
from docker_delivery.routing.haproxy import HaproxyRouter
from docker_delivery.routing.service import (
    AB,
    COLOURS,
    RouterSettings,
    routed_backend,
)
from docker_delivery.strategies.base import (
    DeployResult,
    DeploySettingsInvalid,
    HealthGate,
    Log,
    health_deadline,
    health_gate,
    require_slots,
)
from docker_delivery.strategies.lock import DeploymentLock
from docker_delivery.strategies.min_in_service import MinimumInService, MinimumInServiceDeployment
from docker_delivery.strategies.rolling import Rolling, RollingDeployment
from docker_delivery.targets.base import Release
from docker_delivery.targets.engine import EngineTarget, pull_if_missing, require_networks
from docker_delivery.targets.labels import LABEL_SLOT_GROUP
from docker_delivery.targets.swarm import SwarmTarget

if TYPE_CHECKING:
    import docker

Strategy = MinimumInService | Rolling


def deploy(
    client: docker.DockerClient,
    release: Release,
    strategy: Strategy,
    *,
    router: RouterSettings | HaproxyRouter,
    check: HealthCheck,
    owner: str,
    lock_wait: float = 0.0,
    dry_run: bool = False,
    hold: Callable[[int], None] | None = None,
    keep_lock: bool = False,
    log: Log = print,
) -> DeployResult:
    """Deploy ``release`` with ``strategy``; ``router`` is the service's own (started if needed)
    or an existing HAProxy. ``dry_run`` prints the plan and changes nothing.

    The deployment lock is taken first (waiting ``lock_wait`` seconds for another delivery):
    what runs is judged only once no other delivery can change it. ``keep_lock``: it stays
    ``owner``'s once the deployment returns (a rollout stopped at ``until_stage`` that the same
    owner carries on after a pause); a failure frees it."""
    if check.port != release.port:
        raise DeploySettingsInvalid(
            f"the health check probes port {check.port} but the release listens on {release.port}"
        )
    from docker_delivery.strategies.wiring import require_target, service_router

    if isinstance(router, RouterSettings):  # its own router: too few slots is refused now
        kind = "minimum in-service" if isinstance(strategy, MinimumInService) else "rolling"
        what = f"{kind} of {strategy.replicas} replicas"
        require_slots(router.slots, strategy.slots_needed(), what)
    pull_if_missing(client, release, log)  # the lock container and the instances need it
    with DeploymentLock(
        client,
        release.service,
        release.environment,
        owner=owner,
        image=str(release.image),
        wait=lock_wait,
        log=log,
    ) as lock:
        if keep_lock and not dry_run:
            lock.keep()  # freed by the exit all the same when the deployment fails
        require_target(
            client,
            release.service,
            release.environment,
            "engine" if isinstance(strategy, MinimumInService) else "swarm",
            port=release.port,
        )
        engine = EngineTarget(client, port=release.port, log=log)
        target: EngineTarget | SwarmTarget = (
            engine if isinstance(strategy, MinimumInService) else SwarmTarget(client, log=log)
        )
        if isinstance(target, EngineTarget):
            target.check(release)  # what the engine cannot run is refused before any change
        else:
            require_networks(client, release)
            target.require_node_engines("a rolling deployment")
        network = target.network(release.service, release.environment)
        haproxy, transport = service_router(
            client, release.service, release.environment, network, router, check=check, log=log
        )
        if "live" not in haproxy.backends():
            raise DeploySettingsInvalid("the router has no backend named 'live' to deploy into")
        serving = routed_backend(haproxy)
        in_colour = serving in COLOURS and isinstance(strategy, MinimumInService)
        if serving == AB:
            raise DeploySettingsInvalid(
                f"{release.service}/{release.environment} is served by the router's 'ab' backend "
                "(an A/B test is under way): promote or abort it first; a minimum in-service or "
                "rolling deployment here would stop serving containers without draining them"
            )
        if serving != "live" and not in_colour:
            raise DeploySettingsInvalid(
                f"{release.service}/{release.environment} is served by the blue/green colour "
                f"{serving!r}: deploy it with blue/green, or minimum in-service (which replaces "
                "the colour's instances in place); a rolling deployment on Swarm cannot take "
                "over them"
            )
        gate = health_gate(
            check,
            target.exit_reason,
            deadline=health_deadline(check),
            log=log,
            transport=transport,
        )
        if isinstance(strategy, MinimumInService):
            assert isinstance(target, EngineTarget)
            if in_colour and dry_run:
                log(f"{serving} serves: its instances are replaced in place")
                release = replace(release, labels={**release.labels, LABEL_SLOT_GROUP: serving})
            elif in_colour:
                release = _into_colour(client, engine, haproxy, check, gate, release, serving, log)
            mis = MinimumInServiceDeployment(target, haproxy, gate, backend=serving, log=log)
            if dry_run:
                for batch in (batches := mis.plan(release, strategy)):
                    log(batch.describe(len(batches)))
                return DeployResult(release.service, release.environment, release.digest)
            return mis.run(release, strategy)
        assert isinstance(target, SwarmTarget)
        rolling = RollingDeployment(target, haproxy, gate, hold=hold, log=log)
        if dry_run:
            for line in rolling.plan(release, strategy):
                log(line)
            return DeployResult(release.service, release.environment, release.digest)
        return rolling.run(release, strategy)


def _into_colour(
    client: docker.DockerClient,
    engine: EngineTarget,
    haproxy: HaproxyRouter,
    check: HealthCheck,
    gate: HealthGate,
    release: Release,
    colour: str,
    log: Log,
) -> Release:
    """A minimum in-service deployment of a service a blue/green colour serves: it replaces the
    serving colour's instances in place (they keep its group label, so the next blue/green
    deployment goes to the other colour), once what takes no traffic (the warm old colour) is
    gone, as the rollback's redeploy does."""
    from docker_delivery.strategies.groups import clear_other_groups
    from docker_delivery.strategies.state import read_state
    from docker_delivery.strategies.wiring import Wiring

    state = read_state(client, haproxy, release.service, release.environment, port=check.port)
    log(
        f"{release.service}/{release.environment}: public routes to {colour}; minimum "
        f"in-service replaces its {len(state.live())} instance(s) in place"
    )
    clear_other_groups(
        Wiring(client, engine, haproxy, check, gate, log),
        state,
        grace=release.stop_grace,
    )
    return replace(release, labels={**release.labels, LABEL_SLOT_GROUP: colour})
