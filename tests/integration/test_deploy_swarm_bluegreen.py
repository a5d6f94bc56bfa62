"""Blue/green, A/B and rollback on the real single-node Swarm, behind the real HAProxy, under load.

Each colour (and each A/B variant) is a Swarm service of its own, ``<service>-<env>-<group>-
<config12>``; its tasks serve in the router slots of their task slots.
"""

from __future__ import annotations

import time

import pytest
from kit.deploy import CHECK, LOOPBACK, SLOW_FEW_MIX, release, router_settings
from kit.loadgen import LoadGenerator

from docker_delivery.strategies.ab import ABTest, ab_deploy
from docker_delivery.strategies.base import DeployAborted, DeploySettingsInvalid
from docker_delivery.strategies.bluegreen import (
    BlueGreen,
    deploy_idle,
    list_running,
    retire,
    switch_traffic,
)
from docker_delivery.strategies.deploy import deploy
from docker_delivery.strategies.min_in_service import MinimumInService
from docker_delivery.strategies.rollback import roll_back
from docker_delivery.targets import SwarmTarget

MIX = SLOW_FEW_MIX
SERVICE_PREFIX = "sb"  # the service fixture's names (tests/conftest.py)


def swarm_services(docker_client, service: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Swarm service name -> replicas, of the test's service."""
    target = SwarmTarget(docker_client, log=lambda _: None)
    return {s.name: s.replicas for s in target.services(service, "test")}


def digest(image: str) -> str:
    return image.split("@")[1]


def v1_live_on_swarm(bed, docker_client, demo_images, service, replicas: int):  # type: ignore[no-untyped-def]
    """v1 live in blue (``replicas`` tasks of one Swarm service); the router and the keywords
    every step of the test takes."""
    router = router_settings(bed)
    kw = dict(router=router, check=CHECK, owner="test", target="swarm", log=print)
    first = BlueGreen(replicas=replicas, post_switch_check=0, scale_down_delay=0)
    deploy_idle(docker_client, release(demo_images["v1"], service), first, **kw)
    switch_traffic(docker_client, release(demo_images["v1"], service), first, **kw)
    return router, kw


def test_blue_green_switch_retire_and_both_rollbacks_drop_no_request(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    router, kw = v1_live_on_swarm(bed, docker_client, demo_images, service, 3)
    assert swarm_services(docker_client, service) == {
        f"{service}-test-blue-{release(demo_images['v1'], service).config_id}": 3
    }
    settings = BlueGreen(preview_replicas=1, scale_down_delay=300, post_switch_check=2)
    with LoadGenerator(router.url(LOOPBACK), rate=120, mix=MIX, max_duration=300) as load:
        load.mark("deploy v2")
        idle = deploy_idle(docker_client, release(demo_images["v2"], service), settings, **kw)
        assert (idle.live, idle.idle, idle.replaced) == ("blue", "green", 1)
        load.mark("switch to v2")
        switched = switch_traffic(
            docker_client, release(demo_images["v2"], service), settings, **kw
        )
        load.mark("v2 live")
        assert switched.live == "green" and switched.replaced == 2, "scaled 1 -> 3 before"
        time.sleep(1.0)
        load.mark("switch back")
        back = roll_back(docker_client, service, "test", router=router, check=CHECK, owner="rb")
        load.mark("v1 back")
        print(f"switch back in {back.switch_s:.3f}s")  # figures: scripts/bench_bluegreen_ab.py
        # A switch, not a redeploy (seconds per batch); its speed is the benchmark's to show.
        assert (back.kind, back.live) == ("switch-back", "blue") and back.switch_s < 5.0
        time.sleep(1.0)
        # The bad colour is retired, then a second rollback has nothing warm: a redeploy of v2
        # (the release the switch back left) as a staged rollout of its Swarm service.
        retire(docker_client, service, "test", BlueGreen(scale_down_delay=0), **kw)
        load.mark("redeploy")
        again = roll_back(docker_client, service, "test", router=router, check=CHECK, owner="rb")
        load.mark("v2 again")
        time.sleep(1.5)
    report = load.report
    print(report.summary(), back.as_dict(), again.as_dict())
    assert report.failed == 0, report.failures
    assert report.total >= 1000
    assert set(report.by_phase["v2 live"]) - {"total", "failed"} == {"v2"}
    assert set(report.by_phase["v1 back"]) - {"total", "failed"} == {"v1"}
    assert set(report.by_phase["v2 again"]) - {"total", "failed"} == {"v2"}
    assert (again.kind, again.live) == ("redeploy", "blue")
    running = list_running(docker_client, service, "test", 8080)
    assert len(running) == 3 and {r.digest for r in running} == {digest(demo_images["v2"])}
    assert {r.group for r in running} == {"blue"} and all(r.swarm_service for r in running)
    assert list(swarm_services(docker_client, service).values()) == [3]


def test_ab_rollout_on_swarm_promotes_b_and_removes_a(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    router, kw = v1_live_on_swarm(bed, docker_client, demo_images, service, 3)
    settings = ABTest(steps=(25, 100), bake_time=4, poll=0.5)
    # Cookie-less clients: each request is a new client, assigned by the weights.
    with LoadGenerator(
        router.url(LOOPBACK), rate=120, mix=MIX, cookies=False, max_duration=180
    ) as load:
        result = ab_deploy(docker_client, release(demo_images["v2"], service), settings, **kw)
        load.mark("promoted")
        time.sleep(1.5)
    report = load.report
    print(report.summary(), result.as_dict())
    assert report.failed == 0, report.failures
    assert report.by_release.get("v2", 0) > 0 and report.by_release.get("v1", 0) > 0
    assert set(report.by_phase["promoted"]) - {"total", "failed"} == {"v2"}
    assert result.promoted and result.home == "blue"
    running = list_running(docker_client, service, "test", 8080)
    assert len(running) == 3 and {r.digest for r in running} == {digest(demo_images["v2"])}
    b_name = f"{service}-test-blue-{release(demo_images['v2'], service).config_id}"
    assert swarm_services(docker_client, service) == {b_name: 3}


def test_a_release_that_exits_at_start_leaves_nothing_on_swarm(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    _, kw = v1_live_on_swarm(bed, docker_client, demo_images, service, 2)
    before = swarm_services(docker_client, service)
    started = time.monotonic()
    with pytest.raises(DeployAborted, match="failed in green"):
        deploy_idle(
            docker_client,
            release(demo_images["v2"], service, EXIT_ON_START="1"),
            BlueGreen(replicas=2),
            **kw,
        )
    assert time.monotonic() - started < 60, "Swarm's task failure ends the wait"
    assert swarm_services(docker_client, service) == before


def test_the_target_must_match_what_runs(bed, docker_client, demo_images, service) -> None:  # type: ignore[no-untyped-def]
    router = router_settings(bed)
    engine_kw = dict(router=router, check=CHECK, owner="test", log=print)
    deploy(docker_client, release(demo_images["v1"], service), MinimumInService(2, 1), **engine_kw)
    with pytest.raises(DeploySettingsInvalid, match="runs as containers of the engine"):
        deploy_idle(
            docker_client,
            release(demo_images["v2"], service),
            BlueGreen(),
            **engine_kw,
            target="swarm",
        )


def test_scaling_a_swarm_service_up_replaces_no_running_task(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    target = SwarmTarget(docker_client, log=print)
    first = release(demo_images["v1"], service)
    [one] = target.start_many(first, [1])
    more = target.start_many(first, [2, 3])
    time.sleep(3)  # what Swarm would have replaced by now (docker-py's scale: task 1, at once)
    tasks = {t.slot: t.id for t in target.tasks(target.service_name(first))}
    assert tasks == {1: one.id, 2: more[0].id, 3: more[1].id}


def test_swarm_service_names_fit_swarms_limit(docker_client) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from docker_delivery.targets.labels import LABEL_SLOT_GROUP

    target = SwarmTarget(docker_client, log=print)
    short = release("127.0.0.1:5000/app@sha256:" + "a" * 64, "web")
    assert target.service_name(short) == f"web-test-{short.config_id}"
    blue = replace(short, labels={LABEL_SLOT_GROUP: "blue"})
    assert target.service_name(blue) == f"web-test-blue-{short.config_id}"
    long = replace(release("127.0.0.1:5000/app@sha256:" + "a" * 64, "s" * 32), environment="e" * 16)
    names = {
        target.service_name(replace(long, labels={LABEL_SLOT_GROUP: g})) for g in ("blue", "green")
    }
    assert len(names) == 2 and all(len(n) <= 63 and n.startswith("dd-") for n in names)


def test_roll_back_after_rolling_deployments_redeploys_the_previous_digest(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    from docker_delivery.strategies import Rolling

    router = router_settings(bed)
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    for name in ("v1", "v2"):
        deploy(docker_client, release(demo_images[name], service), Rolling(replicas=3), **kw)
    with LoadGenerator(router.url(LOOPBACK), rate=120, mix=MIX, max_duration=120) as load:
        result = roll_back(docker_client, service, "test", router=router, check=CHECK, owner="rb")
        load.mark("after")
        time.sleep(1.5)
    report = load.report
    print(report.summary(), result.as_dict())
    assert report.failed == 0, report.failures
    assert (result.kind, result.live) == ("redeploy", "live")
    assert result.to_digest == digest(demo_images["v1"])
    assert set(report.by_phase["after"]) - {"total", "failed"} == {"v1"}
    running = list_running(docker_client, service, "test", 8080)
    assert len(running) == 3 and {r.digest for r in running} == {digest(demo_images["v1"])}
    assert {r.previous_digest for r in running} == {digest(demo_images["v2"])}  # undo goes forward
    assert list(swarm_services(docker_client, service).values()) == [3]
