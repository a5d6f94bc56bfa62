"""The router of one service in one environment: an HAProxy container on the service's network.

Its ``public`` frontend is published on the engine's host (on ``address``, every interface by
default); an optional ``preview`` frontend (a second port) serves the idle colour of a blue/green
deployment. Users, smoke tests and the preview checks reach them at :meth:`RouterSettings.url`.
Both are switchable: which backend they serve is an entry of the routes map
(:func:`routed_backend`), changed at run time by :meth:`HaproxyRouter.route`; ``public`` serves
``live`` and ``preview`` serves ``green`` until a deployment routes them elsewhere.

Backends (each with pre-allocated server slots, filled at run time):

* ``live``, ``blue``, ``green``: the cookie-free *groups* an instance can serve in; the one
  ``public`` routes to is the live group. No sticky cookie here: HAProxy sends cookie-sticky
  requests even to a draining server, which would keep a min-in-service drain from finishing.
* ``ab``: an A/B test's backend (variant A's and B's instances side by side, shares set by server
  weights), sticky per client through HAProxy's dynamic cookie ``dd_ab``. ``public`` routes to it
  only while a test runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from docker_delivery.errors import DeliveryError
from docker_delivery.routing.haproxy import (
    BackendSpec,
    FrontendSpec,
    HaproxyRouter,
    RouterContainer,
    RouterHandle,
    render_config,
)
from docker_delivery.targets.labels import LABEL_ENVIRONMENT, LABEL_SERVICE

if TYPE_CHECKING:
    import docker

LIVE_PORT = 8080  # inside the router container
PREVIEW_PORT = 8081
PUBLIC = "public"
PREVIEW = "preview"
LIVE = "live"
COLOURS = ("blue", "green")
AB = "ab"
AB_COOKIE = "dd_ab"
BACKENDS = (LIVE, *COLOURS, AB)
DEFAULT_ROUTES = {PUBLIC: LIVE, PREVIEW: "green"}


class _Routes(Protocol):
    def routes(self) -> dict[str, str]: ...


def routed_backend(router: _Routes, frontend: str = PUBLIC) -> str:
    """The backend ``frontend`` serves now: its routes-map entry, else the configured default."""
    return router.routes().get(frontend) or DEFAULT_ROUTES[frontend]


ANY_ADDRESS = ("0.0.0.0", "::")


def url_host(host: str) -> str:
    """``host`` as it goes in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True)
class RouterSettings:
    """Where the service's router listens and what it runs.

    ``address``: the engine host's address the ports are published on (every interface by
    default). ``public_url`` / ``preview_url``: where users reach the two frontends, when that is
    not the engine's host (a load balancer, a DNS name); by default the bound address, or the
    engine's host when the ports are bound on every interface.
    """

    port: int
    preview_port: int | None = None
    image: str = "haproxy:lts"
    slots: int = 16
    check_interval_ms: int = 1000
    address: str = "0.0.0.0"
    public_url: str | None = None
    preview_url: str | None = None

    def __post_init__(self) -> None:
        for name, port in (("port", self.port), ("preview_port", self.preview_port)):
            if port is not None and not 1 <= port <= 65535:
                raise DeliveryError(f"router {name} {port} must be 1-65535")
        if self.preview_port is not None and self.preview_port == self.port:
            raise DeliveryError("router preview_port must differ from port")
        if not 1 <= self.slots <= 256:
            raise DeliveryError(f"router slots {self.slots} must be 1-256")

    def host_on(self, engine_host: str) -> str:
        """The host users reach the published ports at, for an engine on ``engine_host``."""
        return engine_host if self.address in ANY_ADDRESS else self.address

    def url(self, engine_host: str) -> str:
        """The public frontend's URL, for an engine on ``engine_host``."""
        return self.public_url or f"http://{url_host(self.host_on(engine_host))}:{self.port}/"

    def preview(self, engine_host: str) -> str | None:
        """The preview frontend's URL (None without a preview port)."""
        if self.preview_port is None:
            return None
        return self.preview_url or (
            f"http://{url_host(self.host_on(engine_host))}:{self.preview_port}/"
        )


def router_name(service: str, environment: str) -> str:
    return f"dd-router-{service}-{environment}"


def render_service_config(settings: RouterSettings, app_port: int, health_path: str) -> str:
    backend = BackendSpec(
        slots=settings.slots,
        port=app_port,
        health_path=health_path,
        check_interval_ms=settings.check_interval_ms,
    )
    frontends = {PUBLIC: FrontendSpec(port=LIVE_PORT, default_backend=DEFAULT_ROUTES[PUBLIC])}
    if settings.preview_port is not None:
        frontends[PREVIEW] = FrontendSpec(
            port=PREVIEW_PORT, default_backend=DEFAULT_ROUTES[PREVIEW]
        )
    backends = {name: backend for name in (LIVE, *COLOURS)}
    backends[AB] = replace(backend, cookie=AB_COOKIE)
    return render_config(frontends, backends)


def find_router(
    client: docker.DockerClient,
    service: str,
    environment: str,
    network: str,
    *,
    log: Callable[[str], None] = print,
) -> HaproxyRouter | None:
    """The service's running router, to read; None when it has none (nothing is started)."""
    handle = RouterContainer.find(
        client, router_name(service, environment), network=network, log=log
    )
    return None if handle is None else handle.router


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
        bind=settings.address,
        labels={
            LABEL_SERVICE: service,
            LABEL_ENVIRONMENT: environment,
        },
        log=log,
    )
