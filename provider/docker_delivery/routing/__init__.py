"""How traffic moves between releases: HAProxy driven through its Runtime API."""

from docker_delivery.routing.haproxy import (
    BackendSpec,
    BackendStats,
    FrontendSpec,
    HaproxyRouter,
    RouterContainer,
    RouterError,
    RouterHandle,
    ServerState,
    ServerStats,
    render_config,
)

__all__ = [
    "BackendSpec",
    "BackendStats",
    "FrontendSpec",
    "HaproxyRouter",
    "RouterContainer",
    "RouterError",
    "RouterHandle",
    "ServerState",
    "ServerStats",
    "render_config",
]
