"""Where a service stands: its running instances with their labels, the router's routes and every
backend's slots, read in one snapshot (:func:`read_state`). Blue/green, A/B, rollback, rollout
status and the environment tag all judge from it.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from docker_delivery.routing.haproxy import HaproxyRouter, ServerState
from docker_delivery.routing.service import AB, COLOURS, LIVE, PREVIEW, PUBLIC, find_router
from docker_delivery.strategies.base import most_common
from docker_delivery.targets.base import Release, TargetKind
from docker_delivery.targets.engine import network_name
from docker_delivery.targets.inventory import Instance, Inventory
from docker_delivery.targets.labels import (
    LABEL_PREVIOUS_DIGEST,
    LABEL_PREVIOUS_IMAGE,
    LABEL_SLOT_GROUP,
)

if TYPE_CHECKING:
    import docker


GROUPS = (LIVE, *COLOURS)  # the cookie-free groups; the one ``public`` routes to is live


Running = Instance
"""A running instance with its labels (the inventory's :class:`~docker_delivery.targets.
inventory.Instance`; the name the strategies always used)."""


@dataclass(frozen=True)
class ServiceState:
    """A snapshot: the routes, every backend's slots, and the running containers."""

    service: str
    environment: str
    public: str
    preview: str | None
    running: tuple[Running, ...]
    servers: Mapping[str, tuple[ServerState, ...]]
    read_at: float = field(default_factory=time.time)

    def members(
        self, backend: str, states: Sequence[str] = ("ready",)
    ) -> list[tuple[Running, ServerState]]:
        """Running instances assigned to ``backend``'s slots in one of ``states``, by slot."""
        by_address = {r.address: r for r in self.running}
        found = []
        for server in self.servers.get(backend, ()):
            if server.assigned and server.admin_state in states:
                member = by_address.get(server.endpoint)
                if member is not None:
                    found.append((member, server))
        return found

    def serving(self, backend: str) -> list[Running]:
        return [r for r, _ in self.members(backend)]

    def live(self) -> list[Running]:
        """The instances taking public traffic (ready in the group ``public`` routes to)."""
        return self.serving(self.public)

    def assigned(self, backend: str) -> list[ServerState]:
        """Every slot of ``backend`` holding an address (a running instance or not)."""
        return [s for s in self.servers.get(backend, ()) if s.assigned]

    def in_backend(self, backend: str) -> set[str]:
        """Instance ids assigned to ``backend`` in any state."""
        return {r.id for r, _ in self.members(backend, ("ready", "drain", "maint"))}

    @staticmethod
    def main_digest(members: Sequence[Running]) -> str:
        return most_common([m.digest for m in members]) or ""

    @staticmethod
    def main_config(members: Sequence[Running]) -> str:
        return most_common([m.config for m in members]) or ""

    def describe(self) -> str:
        parts = []
        for backend, servers in self.servers.items():
            ready = self.members(backend)
            digests = sorted({r.digest[7:19] for r, _ in ready})
            if any(s.assigned for s in servers):
                parts.append(f"{backend}: {len(ready)} ready ({', '.join(digests) or '-'})")
        route = f"public -> {self.public}" + (
            f", preview -> {self.preview}" if self.preview else ""
        )
        return f"{self.service}/{self.environment}: {route}; " + ("; ".join(parts) or "empty")


def list_running(
    client: docker.DockerClient, service: str, environment: str, port: int
) -> list[Running]:
    """The service's running instances (containers and Swarm tasks) from the inventory, by
    group, slot and name."""
    found = Inventory(client, port=port).instances(service, environment)
    return sorted(found, key=lambda r: (r.group, r.slot, r.name))


def running_kind(member: Running) -> TargetKind:
    """The target an instance runs on: a Swarm task, or a container of the engine."""
    return "swarm" if member.swarm_service else "engine"


def read_state(
    client: docker.DockerClient,
    router: HaproxyRouter,
    service: str,
    environment: str,
    *,
    port: int,
) -> ServiceState:
    backends = set(router.backends())
    servers = {b: tuple(router.servers(b)) for b in (*GROUPS, AB) if b in backends}
    routes = router.routes()
    return ServiceState(
        service=service,
        environment=environment,
        public=routes.get(PUBLIC) or LIVE,
        preview=routes.get(PREVIEW),
        running=tuple(list_running(client, service, environment, port)),
        servers=servers,
    )


def serving_digest(
    client: docker.DockerClient, service: str, environment: str, *, port: int
) -> str | None:
    """The digest that takes the service's public traffic now: what most of its live instances
    run, by its router; without a router of its own, what most of its running instances run.
    None when nothing runs."""
    router = find_router(client, service, environment, network_name(service, environment))
    if router is None:
        return ServiceState.main_digest(list_running(client, service, environment, port)) or None
    state = read_state(client, router, service, environment, port=port)
    return state.main_digest(state.live()) or None


def idle_colour(live: str) -> str:
    """The colour a blue/green deployment goes to when ``live`` is the live group."""
    return "green" if live == "blue" else "blue"


def with_history(release: Release, *, group: str, previous: Sequence[Running] = ()) -> Release:
    """``release`` with the labels of its group and of what ran before it (the most common digest
    of ``previous``); labels the release already has win."""
    labels = {LABEL_SLOT_GROUP: group}
    before = ServiceState.main_digest(previous)
    if before and before != release.digest:
        image = next((p.image for p in previous if p.digest == before), "")
        labels[LABEL_PREVIOUS_DIGEST] = before
        if image:
            labels[LABEL_PREVIOUS_IMAGE] = image
    return replace(release, labels={**labels, **release.labels})
