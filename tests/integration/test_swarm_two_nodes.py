"""Rolling, blue/green and rollback on the bed's two-node Swarm, under load from this machine.

The manager is this machine's engine, the second node the remote machine's (tests/bed/up). Swarm
spreads each release's tasks over both nodes; the router (a container on the manager) reaches
those on the second node over the service's overlay network; what runs is read from the
manager's Swarm API; a task a rolling deployment retires there is stopped through that node's
engine, which the manager's connection names (``swarm_nodes``, kit.remote.bed_connections).
"""

from __future__ import annotations

from typing import Any

import pytest
from kit.deploy import CHECK, LOOPBACK, SLOW_FEW_MIX, local_router, release, router_settings
from kit.loadgen import free_port
from kit.remote import RELEASES, under_load

from docker_delivery.strategies.bluegreen import BlueGreen, deploy_idle, retire, switch_traffic
from docker_delivery.strategies.deploy import deploy
from docker_delivery.strategies.rollback import roll_back
from docker_delivery.strategies.rolling import Rolling
from docker_delivery.targets import TargetError
from docker_delivery.targets.inventory import Inventory

SERVICE_PREFIX = "tn"  # the service fixture's names (tests/conftest.py)


def swarm_nodes(client: Any) -> dict[str, str]:
    """node id -> its role (manager or worker): both nodes of the bed's Swarm, ready and active."""
    nodes = {
        n.id: n.attrs["Spec"]["Role"]
        for n in client.nodes.list()
        if n.attrs["Status"]["State"] == "ready" and n.attrs["Spec"]["Availability"] == "active"
    }
    assert sorted(nodes.values()) == ["manager", "worker"], "the bed's Swarm has two nodes"
    return nodes


def task_nodes(client: Any, service: str) -> dict[str, str]:
    """task name -> node id, of the service's running tasks (read through the manager)."""
    return {i.name: i.node for i in Inventory(client).instances(service, "test")}


def test_rolling_on_two_nodes_drops_no_request(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str
) -> None:
    nodes = swarm_nodes(docker_client)
    router = local_router(
        port=free_port(), image=bed.haproxy_image, slots=10, check_interval_ms=500
    )
    lines: list[str] = []
    kw: dict[str, Any] = dict(router=router, check=CHECK, owner="test", log=lines.append)
    deploy(docker_client, release(demo_images["v1"], service), Rolling(replicas=4), **kw)
    where: dict[str, str] = task_nodes(docker_client, service)  # every task seen, and its node

    def rolling(n: int) -> None:
        r = release(demo_images[RELEASES[(n + 1) % 3]], service)
        deploy(docker_client, r, Rolling(replicas=4, stages=(1, "50%", "100%")), **kw)
        where.update(task_nodes(docker_client, service))

    under_load(router.url(LOOPBACK), rolling, mix=SLOW_FEW_MIX)
    stopped = [line.split()[-1] for line in lines if line.startswith("stopped task ")]
    print(f"{len(stopped)} tasks stopped one by one; nodes: {sorted(nodes.values())}")
    assert set(where.values()) == set(nodes), "tasks ran on both nodes"
    # Old tasks were retired one by one on each node: on the worker through its own engine.
    assert {nodes[where[name]] for name in stopped} == {"manager", "worker"}
    running = Inventory(docker_client).instances(service, "test")
    assert len(running) == 4 and len({i.digest for i in running}) == 1


def test_blue_green_and_rollback_on_two_nodes_drop_no_request(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str
) -> None:
    nodes = swarm_nodes(docker_client)
    router = router_settings(bed)
    kw: dict[str, Any] = dict(router=router, check=CHECK, owner="test", target="swarm", log=print)
    bg = BlueGreen(replicas=4, scale_down_delay=0, post_switch_check=1)
    seen: set[str] = set()
    kinds: list[str] = []

    def blue_green(n: int) -> None:
        """A release to the idle colour, the switch, then on every other one a rollback (a
        switch back to the warm colour) before the colour left is retired."""
        r = release(demo_images[RELEASES[n % 3]], service)
        deploy_idle(docker_client, r, bg, **kw)
        switch_traffic(docker_client, r, bg, **kw)
        seen.update(task_nodes(docker_client, service).values())
        if n % 2:
            back = roll_back(docker_client, service, "test", router=router, check=CHECK, owner="rb")
            kinds.append(back.kind)
            print(f"switch back in {back.switch_s:.3f}s")  # figures: scripts/bench_bluegreen_ab.py
        retire(docker_client, service, "test", bg, **kw)

    blue_green(0)
    under_load(router.url(LOOPBACK), lambda n: blue_green(n + 1), mix=SLOW_FEW_MIX)
    assert seen == set(nodes), "each colour's tasks ran on both nodes"
    assert kinds and set(kinds) == {"switch-back"}


def test_without_the_second_nodes_engine_a_rolling_deployment_is_refused_before_any_change(
    bed: Any, demo_images: dict[str, str], service: str
) -> None:
    import docker

    manager = docker.from_env()  # the manager's engine alone: no engine named for node 2
    try:
        with pytest.raises(TargetError) as refused:
            router = router_settings(bed, preview=False)
            r = release(demo_images["v1"], service)
            deploy(manager, r, Rolling(replicas=2), router=router, check=CHECK, owner="test")
        message = str(refused.value)
        assert f"(address {bed.remote_host}, id " in message and "swarm_nodes" in message
        label = {"label": f"io.docker-delivery.service={service}"}
        assert manager.services.list(filters=label) == []
        assert manager.containers.list(all=True, filters=label) == []  # no router either
    finally:
        manager.close()
