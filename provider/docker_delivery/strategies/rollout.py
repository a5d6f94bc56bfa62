"""Where a rollout stands: how many instances of a digest take public traffic, for any type.

:func:`rollout_status` reads the running containers (Engine containers and Swarm tasks alike)
and the service's router, and changes nothing. A rollout of ``digest`` to ``replicas`` is
complete when at least ``replicas`` instances of it are ready and up in the backend the public
frontend routes to, and no instance of another digest is ready there. It is what
RolloutCompleteSensor waits for: after a rolling deployment held by ``until_stage``, a
deployment run by another DAG, or a rollout someone continues by hand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from docker_delivery.errors import DeliveryError
from docker_delivery.routing.service import find_router
from docker_delivery.strategies.state import read_state
from docker_delivery.targets.engine import network_name

if TYPE_CHECKING:
    import docker


@dataclass(frozen=True)
class RolloutStatus:
    """``updated``: instances of ``digest`` ready and up in ``backend`` (the group public routes
    to); ``waiting``: ready there but not up yet at HAProxy; ``others``: ready instances of
    other digests there, by digest. ``backend`` is empty when the service has no router."""

    service: str
    environment: str
    digest: str
    replicas: int
    backend: str
    updated: int
    waiting: int = 0
    others: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return bool(self.backend) and self.updated >= self.replicas and not self.others

    def describe(self) -> str:
        where = f"{self.service}/{self.environment}"
        if not self.backend:
            return f"{where}: no router runs yet: nothing of {self.digest[7:19]} is rolled out"
        text = f"{where}: {self.updated}/{self.replicas} updated to {self.digest[7:19]} in "
        text += self.backend
        if self.waiting:
            text += f", {self.waiting} ready but not up at the router yet"
        if self.others:
            old = ", ".join(f"{n} of {d[7:19]}" for d, n in sorted(self.others.items()))
            text += f"; still serving: {old}"
        return text + (" (complete)" if self.complete else "")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}


def check_digest(digest: str) -> str:
    """``sha256:<64 hex>`` from a digest or a digest-pinned reference; DeliveryError otherwise."""
    from docker_delivery.errors import InvalidReference
    from docker_delivery.images.ref import ImageRef

    if digest.startswith("sha256:") and "@" not in digest:
        try:
            ImageRef.parse(f"x/y@{digest}")  # validates the algorithm and length
        except InvalidReference as exc:
            raise InvalidReference(digest, exc.reason) from None
        return digest
    ref = ImageRef.parse(digest)
    if not ref.digest:
        raise DeliveryError(f"{digest!r} is not pinned to a digest: give image@sha256:...")
    return ref.digest


def rollout_status(
    client: docker.DockerClient,
    service: str,
    environment: str,
    digest: str,
    *,
    replicas: int,
    port: int = 8080,
    log: Callable[[str], None] = print,
) -> RolloutStatus:
    """Read (never change) how far ``digest`` is rolled out to ``service`` in ``environment``."""
    digest = check_digest(digest)
    if replicas < 1:
        raise DeliveryError(f"replicas must be at least 1, not {replicas}")
    router = find_router(client, service, environment, network_name(service, environment), log=log)
    if router is None:
        return RolloutStatus(service, environment, digest, replicas, backend="", updated=0)
    state = read_state(client, router, service, environment, port=port)
    members = state.members(state.public)
    mine = [s for r, s in members if r.digest == digest]
    others = Counter(r.digest for r, _ in members if r.digest != digest)
    up = sum(1 for s in mine if s.operational == "up")
    return RolloutStatus(
        service,
        environment,
        digest,
        replicas,
        backend=state.public,
        updated=up,
        waiting=len(mine) - up,
        others=dict(others),
    )
