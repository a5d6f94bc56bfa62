"""Minimum in-service deployments on the real engine, behind the real HAProxy, under load."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from kit.deploy import CHECK, LOOPBACK, local_router, release
from kit.loadgen import LoadGenerator, free_port

from docker_delivery.errors import InvalidReference
from docker_delivery.routing.service import find_router
from docker_delivery.strategies.base import DeployAborted, DeploySettingsInvalid
from docker_delivery.strategies.deploy import deploy
from docker_delivery.strategies.min_in_service import MinimumInService
from docker_delivery.targets import EngineTarget, Release
from docker_delivery.targets.base import TargetError
from docker_delivery.targets.engine import network_name

SERVICE_PREFIX = "web"  # the service fixture's names (tests/conftest.py)


def test_minimum_in_service_deploy_drops_no_request(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    router = local_router(port=free_port(), image=bed.haproxy_image, slots=8, check_interval_ms=500)
    settings = MinimumInService(replicas=4, min_in_service=2)
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    deploy(docker_client, release(demo_images["v1"], service), settings, **kw)
    with LoadGenerator(router.url(LOOPBACK), rate=200, max_duration=120) as load:
        load.mark("deploy")
        result = deploy(docker_client, release(demo_images["v2"], service), settings, **kw)
        load.mark("after")
        import time

        time.sleep(1.5)
    report = load.report
    print(report.summary())
    assert report.failed == 0, report.failures
    assert report.by_phase["deploy"]["total"] >= 500
    assert report.by_phase["after"].get("v2", 0) > 0 and report.by_phase["after"].get("v1", 0) == 0
    assert result.replaced == 4 and len(result.steps) == 2
    running = EngineTarget(docker_client).instances(service, "test", include_stopped=True)
    assert len(running) == 4 and {i.digest for i in running} == {result.digest}
    assert all(i.running for i in running), "no stopped leftovers"


def test_a_bad_release_aborts_and_the_old_one_keeps_serving(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    router = local_router(port=free_port(), image=bed.haproxy_image, slots=8, check_interval_ms=500)
    settings = MinimumInService(replicas=3, min_in_service=2)
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    first = deploy(docker_client, release(demo_images["v1"], service), settings, **kw)
    for bad_env in ({"FAIL_HEALTH": "1"}, {"EXIT_ON_START": "1"}):
        with (
            LoadGenerator(router.url(LOOPBACK), rate=150, max_duration=60) as load,
            pytest.raises(DeployAborted, match=r"GET /health on :8080 expects 200|exited"),
        ):
            deploy(
                docker_client,
                release(demo_images["v3"], service, **bad_env),
                settings,
                **kw,
            )
        assert load.report.failed == 0, load.report.failures
        assert set(load.report.by_release) == {"v1"}
    running = EngineTarget(docker_client).instances(service, "test", include_stopped=True)
    assert {i.digest for i in running} == {first.digest} and len(running) == 3


def test_impossible_settings_are_refused_before_anything_changes(
    docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DeploySettingsInvalid, match="min_in_service"):
        MinimumInService(replicas=2, min_in_service=2)
    with pytest.raises(DeploySettingsInvalid, match="drain_timeout must be > 0"):
        MinimumInService(replicas=4, min_in_service=2, drain_timeout=-1)
    with pytest.raises(DeploySettingsInvalid, match="add up"):
        MinimumInService(replicas=4, min_in_service=1, batch_sizes=(1, 1))
    with pytest.raises(InvalidReference, match="not pinned"):
        Release.of(service, "test", demo_images["v1"].split("@")[0])
    assert not docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"io.docker-delivery.service={service}"}
    )


def test_engine_networks_are_local_and_swarm_networks_overlays(docker_client) -> None:  # type: ignore[no-untyped-def]
    from docker_delivery.targets import SwarmTarget, TargetError

    name = f"net{uuid.uuid4().hex[:6]}"
    engine, swarm = EngineTarget(docker_client), SwarmTarget(docker_client)
    image = "docker-delivery-bed/debian:bookworm"
    try:
        local = docker_client.networks.get(engine.network(name, "test"))
        assert local.attrs["Scope"] == "local"  # starts do not wait on the Swarm manager
        user = docker_client.containers.run(image, ["sleep", "60"], network=local.name, detach=True)
        with pytest.raises(TargetError, match="local-scoped and in use"):
            swarm.network(name, "test")
        user.remove(force=True)
        # Unused, it is made again as asked for: an attachable overlay (tasks on every node)...
        made = docker_client.networks.get(swarm.network(name, "test"))
        assert made.attrs["Scope"] == "swarm" and made.attrs["Attachable"] is True
        assert made.attrs["Driver"] == "overlay"
        assert made.id != local.id
        assert swarm.network(name, "test") == made.name  # ...once
        # and local again for an engine target (an earlier version made every network
        # swarm-scoped inside a Swarm).
        again = docker_client.networks.get(engine.network(name, "test"))
        assert again.attrs["Scope"] == "local" and again.id != made.id
        # An earlier version's swarm-scoped bridge (one per node) is made an overlay when unused.
        again.remove()
        old = docker_client.networks.create(
            f"dd-{name}-test", driver="bridge", scope="swarm", attachable=True
        )
        overlay = docker_client.networks.get(swarm.network(name, "test"))
        assert overlay.attrs["Driver"] == "overlay" and overlay.id != old.id
    finally:
        for c in docker_client.containers.list(
            ignore_removed=True, all=True, filters={"network": f"dd-{name}-test"}
        ):
            c.remove(force=True)
        for net in docker_client.networks.list(names=[f"dd-{name}-test"]):
            net.remove()


def test_a_drain_that_times_out_puts_the_batch_back(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    """Not only a failed health check: any failure inside a batch (here its drain, held by 1 s
    requests longer than drain_timeout) puts the batch back in rotation on the old release,
    instead of leaving its slots out of service until someone runs the deployment again."""
    router = local_router(port=free_port(), image=bed.haproxy_image, slots=8, check_interval_ms=500)
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    first = deploy(docker_client, release(demo_images["v1"], service), MinimumInService(3, 1), **kw)
    impatient = MinimumInService(replicas=3, min_in_service=1, drain_timeout=0.2)
    with (
        LoadGenerator(
            router.url(LOOPBACK), rate=100, max_duration=60, mix={"slow": 0.6, "post": 0.4}
        ) as load,
        pytest.raises(DeployAborted, match=r"batch 1 .* still has \d+ session\(s\).* went back to"),
    ):
        deploy(docker_client, release(demo_images["v2"], service), impatient, **kw)
    assert load.report.failed == 0, load.report.failures
    assert set(load.report.by_release) == {"v1"}
    running = EngineTarget(docker_client).instances(service, "test", include_stopped=True)
    assert {i.digest for i in running} == {first.digest} and len(running) == 3
    assert all(i.running for i in running)
    haproxy = find_router(docker_client, service, "test", network_name(service, "test"), log=print)
    assert haproxy is not None
    states = {s.slot: s.admin_state for s in haproxy.servers("live") if s.slot <= 3}
    assert states == {1: "ready", 2: "ready", 3: "ready"}, states


def test_a_release_the_engine_cannot_run_is_refused_before_anything_changes(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    router = local_router(port=free_port(), image=bed.haproxy_image, slots=8)
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    settings = MinimumInService(replicas=2, min_in_service=1)
    deploy(docker_client, release(demo_images["v1"], service), settings, **kw)
    before = EngineTarget(docker_client).instances(service, "test", include_stopped=True)
    elsewhere = dataclasses.replace(
        release(demo_images["v2"], service), networks=(f"dd-{service}-nowhere",)
    )
    with pytest.raises(TargetError, match=r"networks \['dd-.*-nowhere'\] do not exist"):
        deploy(docker_client, elsewhere, settings, **kw)
    after = EngineTarget(docker_client).instances(service, "test", include_stopped=True)
    assert [(i.id, i.running) for i in after] == [(i.id, i.running) for i in before]
