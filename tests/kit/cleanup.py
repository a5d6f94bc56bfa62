"""Test helper: remove what a test's service left, on the engine or Swarm (its Swarm services,
containers, router, lock and network)."""

from __future__ import annotations

import time
from typing import Any

from docker_delivery.routing.service import router_name


def remove_containers(client: Any, **filters: Any) -> None:
    """Force-remove the containers ``filters`` select; one Swarm removes meanwhile (a task of a
    service just removed) is gone already, which is what was wanted."""
    import docker.errors

    for container in client.containers.list(all=True, filters=filters, ignore_removed=True):
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:  # Swarm is removing it already
            if "already in progress" not in str(exc):
                raise


def remove_service(client: Any, name: str, environment: str = "test") -> None:
    """Everything of service ``name`` in every environment: its Swarm services, containers,
    routers, locks and networks (``environment`` names the router and lock of one that carries
    no label)."""
    import docker.errors

    label = f"io.docker-delivery.service={name}"
    try:
        services = client.services.list(filters={"label": label})
    except docker.errors.APIError as exc:  # an engine that is no Swarm manager has none to list
        if exc.status_code != 503:
            raise
        services = []
    for svc in services:
        svc.remove()
    remove_containers(client, label=label)
    for n in (router_name(name, environment), f"dd-lock-{name}-"):
        remove_containers(client, name=n)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            for net in client.networks.list(filters={"label": label}):
                net.remove()
            for net in client.networks.list(names=[f"dd-{name}-{environment}"]):
                net.remove()
            break
        except Exception:  # Swarm tasks still detaching from the network
            time.sleep(0.5)
