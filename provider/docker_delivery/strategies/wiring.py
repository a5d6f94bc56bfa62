"""What a runner drives, wired once: the target (engine containers or Swarm services), the service's
router (started if needed), the health check and its gate; and the deployment lock every step
takes before it looks at what runs.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from docker_delivery.health import HealthCheck
from docker_delivery.routing.haproxy import HaproxyRouter
from docker_delivery.routing.service import RouterSettings, ensure_router
from docker_delivery.strategies.base import (
    DeploySettingsInvalid,
    HealthGate,
    Log,
    health_deadline,
    health_gate,
)
from docker_delivery.strategies.lock import DeploymentLock
from docker_delivery.strategies.state import ServiceState, list_running, read_state, running_kind
from docker_delivery.targets.base import SlotTarget, TargetKind
from docker_delivery.targets.engine import EngineTarget
from docker_delivery.targets.relay import ProbeTransport
from docker_delivery.targets.swarm import SwarmTarget

if TYPE_CHECKING:
    import docker


@dataclass(frozen=True)
class Wiring:
    """What a runner drives: the target, the service's router, the health check and its gate,
    and how probes reach the instances (``transport``: from the router container, through the
    engine; None: straight from here)."""

    client: Any
    target: SlotTarget
    router: HaproxyRouter
    check: HealthCheck
    gate: HealthGate
    log: Log
    transport: ProbeTransport | None = None

    def state(self, service: str, environment: str) -> ServiceState:
        return read_state(self.client, self.router, service, environment, port=self.check.port)

    def require_backends(self, *names: str) -> None:
        missing = [n for n in names if n not in self.router.backends()]
        if missing:
            raise DeploySettingsInvalid(
                f"the router has no backend {', '.join(map(repr, missing))}: start it from "
                "routing.service.RouterSettings (backends live, blue, green, ab)"
            )


def locked(
    client: docker.DockerClient,
    service: str,
    environment: str,
    owner: str,
    image: str,
    wait: float,
    log: Log,
) -> DeploymentLock:
    """The service's deployment lock (waiting ``wait`` seconds for another delivery): every
    step takes it before it looks at what runs, so it judges what no other delivery changes."""
    return DeploymentLock(
        client, service, environment, owner=owner, image=image, wait=wait, log=log
    )


def require_target(
    client: docker.DockerClient, service: str, environment: str, target: TargetKind, *, port: int
) -> None:
    """Refuse to work on ``target`` when the service runs on the other one: a service's
    instances are all containers of the engine, or all Swarm tasks (their network differs)."""
    running = {running_kind(r) for r in list_running(client, service, environment, port)}
    if running - {target}:
        what = "Swarm tasks" if "swarm" in running else "containers of the engine"
        raise DeploySettingsInvalid(
            f"{service}/{environment} runs as {what}, not on target {target!r}: deploy it "
            f"there (target {sorted(running)[0]!r}), or remove what runs first"
        )


def service_router(
    client: docker.DockerClient,
    service: str,
    environment: str,
    network: str,
    router: RouterSettings | HaproxyRouter,
    *,
    check: HealthCheck,
    log: Log,
) -> tuple[HaproxyRouter, ProbeTransport | None]:
    """The service's router (its container started from ``router``'s settings unless it runs
    with them) and how probes reach its instances: from that container, through the engine;
    None (from here) for an HAProxy given as it is."""
    if not isinstance(router, RouterSettings):
        return router, None
    handle = ensure_router(
        client,
        service,
        environment,
        network,
        router,
        app_port=check.port,
        health_path=check.path,
        log=log,
    )
    return handle.router, handle.probes


def connect(
    client: docker.DockerClient,
    service: str,
    environment: str,
    *,
    router: RouterSettings | HaproxyRouter,
    check: HealthCheck,
    target: TargetKind = "engine",
    log: Log = print,
) -> Wiring:
    """The target (``engine``: containers; ``swarm``: Swarm services), the service's router
    (started if ``router`` is its settings and it does not run) and a health gate with
    ``check``; instances listen on ``check.port``."""
    if target not in ("engine", "swarm"):
        raise DeploySettingsInvalid(f"target must be 'engine' or 'swarm', got {target!r}")
    require_target(client, service, environment, target, port=check.port)
    slots = _slots(client, target, check, log)
    network = slots.network(service, environment)
    haproxy, transport = service_router(
        client, service, environment, network, router, check=check, log=log
    )
    return _wired(client, slots, haproxy, check, log, transport)


def _slots(
    client: docker.DockerClient, target: TargetKind, check: HealthCheck, log: Log
) -> SlotTarget:
    if target == "swarm":
        return SwarmTarget(client, log=log)
    return EngineTarget(client, port=check.port, log=log)


def _wired(
    client: docker.DockerClient,
    slots: SlotTarget,
    router: HaproxyRouter,
    check: HealthCheck,
    log: Log,
    transport: ProbeTransport | None,
) -> Wiring:
    gate = health_gate(
        check, slots.exit_reason, deadline=health_deadline(check), log=log, transport=transport
    )
    return Wiring(client, slots, router, check, gate, log, transport)


def attach(
    client: docker.DockerClient,
    service: str,
    environment: str,
    *,
    router: HaproxyRouter | None,
    check: HealthCheck,
    target: TargetKind = "engine",
    log: Log = print,
) -> Wiring:
    """What :func:`connect` wires, for a watch that goes on elsewhere (a trigger): nothing is
    started or changed. ``router``: an HAProxy given as it is; None: the service's own router
    container, which must run."""
    from docker_delivery.errors import RouterError
    from docker_delivery.routing.haproxy.container import RouterContainer
    from docker_delivery.routing.service import router_name

    slots = _slots(client, target, check, log)
    transport = None
    if router is None:
        network = slots.network(service, environment)
        handle = RouterContainer.find(
            client, router_name(service, environment), network=network, log=log
        )
        if handle is None:
            raise RouterError(f"{service}/{environment} has no router running")
        router, transport = handle.router, handle.probes
    return _wired(client, slots, router, check, log, transport)
