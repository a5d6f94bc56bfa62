"""How traffic moves between releases: HAProxy driven through its Runtime API (Docker), an
ALB listener's weights or Route 53 weighted records (AWS)."""

from docker_delivery.routing.alb import AlbRouter
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
from docker_delivery.routing.route53 import Route53Router
from docker_delivery.routing.weighted import WeightedRouter

__all__ = [
    "AlbRouter",
    "BackendSpec",
    "BackendStats",
    "FrontendSpec",
    "HaproxyRouter",
    "Route53Router",
    "RouterContainer",
    "RouterError",
    "RouterHandle",
    "ServerState",
    "ServerStats",
    "WeightedRouter",
    "render_config",
]
