"""Staged rolling deployments on the real Swarm, behind the real HAProxy, under load."""

from __future__ import annotations

import time

import pytest
from kit.deploy import CHECK, LOOPBACK, local_router, release
from kit.loadgen import LoadGenerator, free_port

from docker_delivery.errors import DeliveryError
from docker_delivery.routing.service import find_router
from docker_delivery.strategies import DeployAborted, DeploySettingsInvalid, Rolling, RolloutPaused
from docker_delivery.strategies.deploy import deploy
from docker_delivery.targets import SwarmTarget
from docker_delivery.targets.engine import network_name

SERVICE_PREFIX = "sw"  # the service fixture's names (tests/conftest.py)


def routed_releases(router_url: str, n: int = 40) -> set[str]:
    import httpx

    with httpx.Client() as client:
        return {client.get(router_url + "version").headers["X-Release"] for _ in range(n)}


def test_staged_rolling_deploy_drops_no_request(bed, docker_client, demo_images, service) -> None:  # type: ignore[no-untyped-def]
    router = local_router(
        port=free_port(), image=bed.haproxy_image, slots=10, check_interval_ms=500
    )
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    deploy(docker_client, release(demo_images["v1"], service), Rolling(replicas=4), **kw)
    settings = Rolling(replicas=4, stages=(1, "50%", "100%"))
    with LoadGenerator(router.url(LOOPBACK), rate=200, max_duration=180) as load:
        result = deploy(docker_client, release(demo_images["v2"], service), settings, **kw)
        load.mark("after")
        time.sleep(1.5)
    report = load.report
    print(report.summary())
    assert report.failed == 0, report.failures
    assert report.by_phase["after"].get("v1", 0) == 0
    assert len(result.steps) == 3
    target = SwarmTarget(docker_client)
    services = target.services(service, "test")
    assert [s.digest for s in services] == [result.digest]
    assert len(target.tasks(services[0].name)) == 4


def test_until_stage_holds_and_a_second_run_continues(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    router = local_router(
        port=free_port(), image=bed.haproxy_image, slots=10, check_interval_ms=500
    )
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    deploy(docker_client, release(demo_images["v1"], service), Rolling(replicas=4), **kw)
    held = Rolling(replicas=4, stages=(1, "50%", "100%"), until_stage=2)
    deploy(docker_client, release(demo_images["v2"], service), held, **kw)
    assert routed_releases(router.url(LOOPBACK)) == {"v1", "v2"}
    lines: list[str] = []
    kw["log"] = lines.append
    rest = Rolling(replicas=4, stages=(1, "50%", "100%"))
    deploy(docker_client, release(demo_images["v2"], service), rest, **kw)
    assert routed_releases(router.url(LOOPBACK)) == {"v2"}
    assert not any(line.startswith("stage 1/") or line.startswith("stage 2/") for line in lines)


def test_a_held_rollout_aborted_goes_back_to_the_old_release_at_full_size(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    """A human's Abort at a hold: v1 back to 4 routed tasks before v2 leaves, under load, with
    no request lost; a second abort finds nothing to do."""
    from docker_delivery.strategies.abort import abort_rollout

    router = local_router(
        port=free_port(), image=bed.haproxy_image, slots=10, check_interval_ms=500
    )
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    deploy(docker_client, release(demo_images["v1"], service), Rolling(replicas=4), **kw)
    held = Rolling(replicas=4, stages=(1, "50%", "100%"), until_stage=2)
    v2 = release(demo_images["v2"], service)
    deploy(docker_client, v2, held, **kw)
    assert routed_releases(router.url(LOOPBACK)) == {"v1", "v2"}
    with LoadGenerator(router.url(LOOPBACK), rate=200, max_duration=180) as load:
        aborted = abort_rollout(docker_client, v2, held, target="swarm", **kw)
        load.mark("after")
        time.sleep(1.5)
    report = load.report
    print(report.summary(), aborted.as_dict())
    assert report.failed == 0, report.failures
    assert report.by_phase["after"].get("v2", 0) == 0
    assert aborted.kind == "rolling" and aborted.serving == demo_images["v1"].split("@")[-1]
    target = SwarmTarget(docker_client)
    services = target.services(service, "test")
    assert [s.digest for s in services] == [aborted.serving]
    assert len(target.tasks(services[0].name)) == 4
    again = abort_rollout(docker_client, v2, held, target="swarm", **kw)
    assert again.kind == "nothing"


def test_a_failing_stage_rolls_back_or_pauses(bed, docker_client, demo_images, service) -> None:  # type: ignore[no-untyped-def]
    router = local_router(
        port=free_port(), image=bed.haproxy_image, slots=10, check_interval_ms=500
    )
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    deploy(docker_client, release(demo_images["v1"], service), Rolling(replicas=3), **kw)
    bad = release(demo_images["v3"], service, FAIL_HEALTH="1")
    with LoadGenerator(router.url(LOOPBACK), rate=150, max_duration=120) as load:
        with pytest.raises(DeployAborted, match="Rolled back"):
            deploy(docker_client, bad, Rolling(replicas=3, stages=(1, "100%")), **kw)
        with pytest.raises(RolloutPaused, match="paused at stage 1"):
            deploy(
                docker_client,
                bad,
                Rolling(replicas=3, stages=(1, "100%"), failure_action="pause"),
                **kw,
            )
    assert load.report.failed == 0, load.report.failures
    assert set(load.report.by_release) == {"v1"}
    assert routed_releases(router.url(LOOPBACK)) == {"v1"}


def test_bad_stage_settings_are_refused() -> None:
    with pytest.raises(DeploySettingsInvalid, match="must increase"):
        Rolling(replicas=4, stages=(2, "50%", "100%"))
    with pytest.raises(DeploySettingsInvalid, match="last stage must be 100%"):
        Rolling(replicas=4, stages=(1, 2))
    with pytest.raises(DeploySettingsInvalid, match="failure_action"):
        Rolling(replicas=4, failure_action="explode")  # type: ignore[arg-type]
    with pytest.raises(DeploySettingsInvalid, match="drain_timeout must be > 0"):
        Rolling(replicas=4, drain_timeout=0)


def test_a_drain_that_times_out_stops_the_rollout_and_a_second_run_waits_for_it(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    """An old task still busy at drain_timeout stops the rollout where it stands (the new tasks
    serve, the busy old one keeps finishing its requests); the next run drains it again, waits,
    and frees its router slot, instead of stopping it with requests in flight."""
    router = local_router(port=free_port(), image=bed.haproxy_image, slots=8)
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    deploy(docker_client, release(demo_images["v1"], service), Rolling(replicas=2), **kw)
    impatient = Rolling(replicas=2, stages=(1, "100%"), drain_timeout=0.2)
    v2 = release(demo_images["v2"], service)
    with LoadGenerator(
        router.url(LOOPBACK), rate=100, max_duration=90, mix={"slow": 0.6, "post": 0.4}
    ) as load:
        with pytest.raises(DeliveryError, match=r"still has \d+ session\(s\)"):
            deploy(docker_client, v2, impatient, **kw)
        load.mark("second run")
        result = deploy(docker_client, v2, Rolling(replicas=2, stages=(1, "100%")), **kw)
        load.mark("after")
        time.sleep(1.5)
    report = load.report
    assert report.failed == 0, report.failures
    assert report.by_phase["after"].get("v1", 0) == 0
    haproxy = find_router(docker_client, service, "test", network_name(service, "test"), log=print)
    assert haproxy is not None
    used = [s for s in haproxy.servers("live") if s.admin_state != "maint"]
    assert len(used) == 2 and all(s.admin_state == "ready" for s in used), used
    tasks = SwarmTarget(docker_client).tasks(
        SwarmTarget(docker_client).services(service, "test")[0].name
    )
    assert {f"{t.ip}:{t.port}" for t in tasks} == {f"{s.address}:{s.port}" for s in used}
    assert [s.digest for s in SwarmTarget(docker_client).services(service, "test")] == [
        result.digest
    ]
