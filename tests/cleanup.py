"""Test helper: remove what a test's Swarm service left (its services, router, lock, network)."""

from __future__ import annotations

import time
from typing import Any

from docker_delivery.routing.service import router_name


def remove_swarm_service(client: Any, name: str, environment: str = "test") -> None:
    for svc in client.services.list(filters={"label": f"io.docker-delivery.service={name}"}):
        svc.remove()
    for n in (router_name(name, environment), f"dd-lock-{name}-{environment}"):
        for c in client.containers.list(all=True, filters={"name": n}):
            c.remove(force=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            for net in client.networks.list(names=[f"dd-{name}-{environment}"]):
                net.remove()
            break
        except Exception:  # tasks still detaching from the network
            time.sleep(0.5)
