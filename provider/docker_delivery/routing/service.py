"""The router of one service in one environment: an HAProxy container on the service's network.

Its ``public`` frontend (backend ``live``) is published on the host (``127.0.0.1:port``); an
optional ``preview`` frontend (a second port) serves the idle colour of a blue/green deployment.
Backends ``live``, ``blue`` and ``green`` each hold pre-allocated server slots, filled at run
time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from docker_delivery.errors import DeliveryError
from docker_delivery.routing.haproxy import (
    BackendSpec,
    FrontendSpec,
    RouterContainer,
    RouterHandle,
    render_config,
)

if TYPE_CHECKING:
    import docker

LIVE_PORT = 8080  # inside the router container
PREVIEW_PORT = 8081
BACKENDS = ("live", "blue", "green")


@dataclass(frozen=True)
class RouterSettings:
    """Where the service's router listens and what it runs."""

    port: int
    preview_port: int | None = None
    image: str = "haproxy:lts"
    slots: int = 16
    check_interval_ms: int = 1000

    def __post_init__(self) -> None:
        for name, port in (("port", self.port), ("preview_port", self.preview_port)):
            if port is not None and not 1 <= port <= 65535:
                raise DeliveryError(f"router {name} {port} must be 1-65535")
        if self.preview_port is not None and self.preview_port == self.port:
            raise DeliveryError("router preview_port must differ from port")
        if not 1 <= self.slots <= 256:
            raise DeliveryError(f"router slots {self.slots} must be 1-256")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


def router_name(service: str, environment: str) -> str:
    return f"dd-router-{service}-{environment}"


def render_service_config(settings: RouterSettings, app_port: int, health_path: str) -> str:
    backend = BackendSpec(
        slots=settings.slots,
        port=app_port,
        health_path=health_path,
        check_interval_ms=settings.check_interval_ms,
    )
    frontends = {"public": FrontendSpec(port=LIVE_PORT, default_backend="live")}
    if settings.preview_port is not None:
        frontends["preview"] = FrontendSpec(port=PREVIEW_PORT, default_backend="green")
    return render_config(frontends, dict.fromkeys(BACKENDS, backend))


def ensure_router(
    client: docker.DockerClient,
    service: str,
    environment: str,
    network: str,
    settings: RouterSettings,
    *,
    app_port: int,
    health_path: str,
    log: Callable[[str], None] = print,
) -> RouterHandle:
    """The service's router container, started once and reused while its config is unchanged."""
    publish = {LIVE_PORT: settings.port}
    if settings.preview_port is not None:
        publish[PREVIEW_PORT] = settings.preview_port
    return RouterContainer.ensure(
        client,
        name=router_name(service, environment),
        network=network,
        image=settings.image,
        config=render_service_config(settings, app_port, health_path),
        publish=publish,
        labels={
            "io.docker-delivery.service": service,
            "io.docker-delivery.environment": environment,
        },
        log=log,
    )
