"""The one inventory on the real engine: containers and Swarm tasks in one model, one listing."""

from __future__ import annotations

from typing import Any

from kit.deploy import CHECK, release, router_settings

from docker_delivery.images.ref import ImageRef
from docker_delivery.strategies.deploy import deploy
from docker_delivery.strategies.min_in_service import MinimumInService
from docker_delivery.strategies.rolling import Rolling
from docker_delivery.targets.inventory import Inventory

SERVICE_PREFIX = "inv"


def test_containers_and_swarm_tasks_read_alike(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str
) -> None:
    kw: dict[str, Any] = {"check": CHECK, "owner": "test"}
    v1 = ImageRef.parse(demo_images["v1"])
    engine = f"{service}e"
    deploy(docker_client, release(demo_images["v1"], engine), MinimumInService(2, 1),
           router=router_settings(bed, preview=False), **kw)  # fmt: skip
    deploy(docker_client, release(demo_images["v1"], service), Rolling(2),
           router=router_settings(bed, preview=False), **kw)  # fmt: skip
    try:
        inventory = Inventory(docker_client)
        containers = inventory.instances(engine, "test")
        tasks = inventory.instances(service, "test")
        for found, kind in ((containers, "engine"), (tasks, "swarm")):
            assert [i.slot for i in found] == [1, 2], found
            assert {(i.kind, i.digest, i.group, i.port) for i in found} == {
                (kind, v1.digest, "live", 8080)
            }
            assert all(i.running and i.ip and i.image == demo_images["v1"] for i in found)
        assert len({t.swarm_service for t in tasks}) == 1
        assert inventory.tasks(tasks[0].swarm_service) == tasks
        docker_client.containers.get(containers[0].id).stop(timeout=1)
        stopped = inventory.instances(engine, "test", include_stopped=True)
        assert [(i.slot, i.running) for i in stopped] == [(1, False), (2, True)]
        assert stopped[0].exit_code is not None and stopped[0].ip == ""
    finally:
        from kit.cleanup import remove_service

        remove_service(docker_client, engine)
