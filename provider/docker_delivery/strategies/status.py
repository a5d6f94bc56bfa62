"""What runs where, and how far a rollout is: one read-only snapshot of a service in an
environment on a Docker Engine or a Swarm (``docker-delivery status``).

It reads the one inventory of what runs (containers and Swarm tasks, with their labels), the
service's router (its routes, every backend's slots: address, admin state, health, weight,
sessions) and, on a Swarm, each service's update status; and tells the rollout's stage from
them: which digest takes the public traffic, and whether another one shares it (a rollout in
progress or held, an A/B test) or waits on the preview. Nothing is changed.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from docker_delivery.routing.service import find_router
from docker_delivery.strategies.state import list_running, read_state
from docker_delivery.targets.engine import network_name
from docker_delivery.targets.inventory import Inventory, is_swarm_manager

if TYPE_CHECKING:
    import docker

__all__ = ["ServiceStatus", "service_status"]


@dataclass(frozen=True)
class ServiceStatus:
    """A service in an environment, as read at one moment."""

    service: str
    environment: str
    public: str | None
    """The backend the public frontend routes to (None: the service has no router)."""
    preview: str | None
    serving: dict[str, int]
    """Digests ready and up in the public backend, and how many instances of each."""
    stage: str
    """``none`` (nothing runs), ``stable`` (one digest serves), ``mixed`` (two or more share the
    public traffic: a rollout in progress or held, an A/B test), ``preview`` (one serves, another
    waits on the preview), ``unrouted`` (instances run, no router)."""
    backends: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Each backend's slots holding an instance: slot, instance, digest, admin state, health,
    weight, current sessions."""
    instances: list[dict[str, Any]] = field(default_factory=list)
    swarm: list[dict[str, Any]] = field(default_factory=list)
    """Swarm services of the environment: name, image digest, replicas, update state."""

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def describe(self) -> str:
        """A short report for a terminal."""
        where = f"{self.service}/{self.environment}"
        lines = [f"{where}: {self.stage}" + _serving(self.serving)]
        if self.public:
            lines.append(
                f"  routes: public -> {self.public}"
                + (f", preview -> {self.preview}" if self.preview else "")
            )
        for backend, slots in self.backends.items():
            lines.append(f"  backend {backend}:")
            for s in slots:
                lines.append(
                    f"    slot {s['slot']}: {s['instance'] or s['address']} "
                    f"{(s['digest'] or '')[7:19] or '-'} {s['admin_state']}/{s['health']} "
                    f"weight {s['weight']}, {s['sessions']} sessions"
                )
        for swarm in self.swarm:
            lines.append(
                f"  swarm service {swarm['name']}: {swarm['replicas']} replicas of "
                f"{(swarm['digest'] or '?')[7:19]}, update {swarm['update_state'] or 'none'}"
                + (f" ({swarm['update_message']})" if swarm["update_message"] else "")
            )
        if not self.backends and self.instances:
            for i in self.instances:
                lines.append(f"  {i['name']}: {i['digest'][7:19]} {i['state']}")
        return "\n".join(lines)


def _serving(serving: dict[str, int]) -> str:
    if not serving:
        return ""
    return ": " + ", ".join(f"{n} of {d[7:19]}" for d, n in sorted(serving.items()))


def service_status(
    client: docker.DockerClient,
    service: str,
    environment: str,
    *,
    port: int = 8080,
    log: Callable[[str], None] = lambda _: None,
) -> ServiceStatus:
    """Read (never change) ``service`` in ``environment`` through ``client``."""
    router = find_router(client, service, environment, network_name(service, environment), log=log)
    swarm = (
        [_swarm(s) for s in Inventory(client, port=port).swarm_services(service, environment)]
        if is_swarm_manager(client)
        else []
    )
    if router is None:
        running = list_running(client, service, environment, port)
        return ServiceStatus(
            service,
            environment,
            public=None,
            preview=None,
            serving={},
            stage="unrouted" if running else "none",
            instances=[_instance(r) for r in running],
            swarm=swarm,
        )
    state = read_state(client, router, service, environment, port=port)
    by_address = {r.address: r for r in state.running}
    backends: dict[str, list[dict[str, Any]]] = {}
    for backend, servers in state.servers.items():
        slots = []
        for s in servers:
            if not s.assigned:
                continue
            member = by_address.get(s.endpoint)
            slots.append(
                {
                    "slot": s.slot,
                    "address": s.endpoint,
                    "instance": member.name if member else None,
                    "digest": member.digest if member else None,
                    "admin_state": s.admin_state,
                    "health": s.operational,
                    "weight": s.weight,
                    "sessions": s.current_sessions,
                }
            )
        if slots:
            backends[backend] = slots
    serving = Counter(r.digest for r, s in state.members(state.public) if s.operational == "up")
    preview = {r.digest for r in state.serving(state.preview)} if state.preview else set()
    stage = (
        "none"
        if not serving and not state.running
        else "mixed"
        if len(serving) > 1
        else "preview"
        if preview - set(serving)
        else "stable"
    )
    return ServiceStatus(
        service,
        environment,
        public=state.public,
        preview=state.preview,
        serving=dict(serving),
        stage=stage,
        backends=backends,
        instances=[_instance(r) for r in state.running],
        swarm=swarm,
    )


def _instance(member: Any) -> dict[str, Any]:
    return {
        "name": member.name,
        "digest": member.digest,
        "group": member.group,
        "slot": member.slot,
        "address": member.address,
        "state": "running" if member.running else f"exited ({member.exit_code})",
    }


def _swarm(service: Any) -> dict[str, Any]:
    attrs = service.attrs
    spec = attrs.get("Spec", {})
    image = spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image", "")
    update = attrs.get("UpdateStatus") or {}
    return {
        "name": spec.get("Name", ""),
        "digest": image.rsplit("@", 1)[1] if "@" in image else None,
        "replicas": spec.get("Mode", {}).get("Replicated", {}).get("Replicas"),
        "update_state": update.get("State"),
        "update_message": update.get("Message"),
    }
