"""Test helper: what the blue/green, A/B and rollback integration tests share (a health check
patient with a busy machine, a load mix, the demo app's release, a router on free ports)."""

from __future__ import annotations

from typing import Any

from docker_delivery.health import HealthCheck
from docker_delivery.routing.service import RouterSettings
from docker_delivery.targets import Release
from kit.loadgen import free_port

# start_period: on a busy test machine an instance may take a few seconds to listen.
CHECK = HealthCheck(
    interval=0.25, healthy_threshold=2, unhealthy_threshold=3, timeout=1.0, start_period=10
)

# Few slow (1 s) requests: enough to have requests in flight at every switch and drain, few
# enough that the in-process load generator's connection pool stays small on a busy machine.
SLOW_FEW_MIX = {"get": 0.55, "get_new_conn": 0.2, "post": 0.2, "slow": 0.05}


def release(image: str, service: str, **env: str) -> Release:
    """The demo app ``image`` as ``service`` in environment ``test``; APP_RELEASE comes from the
    image (baked from the build's RELEASE argument)."""
    return Release.of(
        service, "test", image, env={"EXIT_ON_SIGTERM_IMMEDIATELY": "1", **env}, stop_grace=10
    )


LOOPBACK = "127.0.0.1"  # the bed's routers publish on this machine's loopback only


def local_router(**settings: Any) -> RouterSettings:
    """A router whose ports are published on the bed's loopback (not on every interface)."""
    return RouterSettings(address=LOOPBACK, **settings)


def router_settings(bed: Any, *, preview: bool = True) -> RouterSettings:
    return local_router(
        port=free_port(),
        preview_port=free_port() if preview else None,
        image=bed.haproxy_image,
        slots=8,
        check_interval_ms=500,
    )


def first_event(trigger: Any) -> dict[str, Any]:
    """A trigger's first event's payload, run as the triggerer runs it (its own event loop)."""
    import asyncio

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first())
