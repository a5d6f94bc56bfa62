"""Blue/green deployments on the real engine, behind the real HAProxy, under load."""

from __future__ import annotations

import time

import httpx
import pytest
from kit.deploy import CHECK, LOOPBACK, SLOW_FEW_MIX, first_event, release, router_settings
from kit.loadgen import LoadGenerator
from kit.remote import SWARM_CONN_ID

from docker_delivery.strategies.base import DeployAborted, DeploySettingsInvalid
from docker_delivery.strategies.bluegreen import (
    BlueGreen,
    RetireNotDue,
    SwitchAborted,
    blue_green_status,
    deploy_idle,
    last_switch,
    list_running,
    retire,
    switch_traffic,
)
from docker_delivery.strategies.deploy import deploy
from docker_delivery.strategies.min_in_service import MinimumInService
from docker_delivery.strategies.post_switch import WatchReport

MIX = SLOW_FEW_MIX
SERVICE_PREFIX = "bg"  # the service fixture's names (tests/conftest.py)


def releases_at(url: str, n: int = 30) -> set[str]:
    with httpx.Client(trust_env=False) as client:
        return {client.get(url + "version").headers["X-Release"] for _ in range(n)}


def test_switch_and_retire_drop_no_request_and_colours_alternate(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    router = router_settings(bed)
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    deploy(docker_client, release(demo_images["v1"], service), MinimumInService(3, 2), **kw)
    settings = BlueGreen(preview_replicas=1, scale_down_delay=1, post_switch_check=2)
    preview = router.preview(LOOPBACK)
    with LoadGenerator(router.url(LOOPBACK), rate=120, mix=MIX, max_duration=180) as load:
        load.mark("deploy v2")
        idle = deploy_idle(docker_client, release(demo_images["v2"], service), settings, **kw)
        assert (idle.live, idle.idle, idle.replaced) == ("live", "blue", 1)
        assert releases_at(preview) == {"v2"}
        load.mark("switch to v2")
        switched = switch_traffic(
            docker_client, release(demo_images["v2"], service), settings, **kw
        )
        load.mark("v2 live")
        assert switched.live == "blue" and switched.replaced == 2, "scaled 1 -> 3 before"
        assert switched.figures["requests"] > 0 and switched.figures["5xx"] == 0
        retired = retire(docker_client, service, "test", settings, **kw)
        assert "retired live" in retired.steps[0]
        load.mark("deploy v3")
        idle = deploy_idle(docker_client, release(demo_images["v3"], service), settings, **kw)
        assert (idle.live, idle.idle, idle.replaced) == ("blue", "green", 1)
        switch_traffic(docker_client, release(demo_images["v3"], service), settings, **kw)
        load.mark("v3 live")
        time.sleep(1.0)
        retire(docker_client, service, "test", settings, **kw)
        time.sleep(1.0)
    report = load.report
    print(report.summary())
    assert report.failed == 0, report.failures
    assert report.by_phase["switch to v2"]["v2"] > 0
    assert set(report.by_release) == {"v1", "v2", "v3"}
    assert set(report.by_phase["v2 live"]) - {"total", "failed"} == {"v2"}
    assert set(report.by_phase["v3 live"]) - {"total", "failed"} == {"v3"}
    running = list_running(docker_client, service, "test", 8080)
    assert len(running) == 3 and {r.group for r in running} == {"green"}
    assert {r.previous_digest for r in running} == {demo_images["v2"].split("@")[1]}
    status = blue_green_status(docker_client, service, "test", settings, router=router, check=CHECK)
    assert (status.live, status.live_count, status.retire_due) == ("green", 3, None)


def test_a_failing_post_switch_check_switches_back_by_itself(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    router = router_settings(bed)
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    first = BlueGreen(replicas=2, post_switch_check=1)
    deploy_idle(docker_client, release(demo_images["v1"], service), first, **kw)
    switch_traffic(docker_client, release(demo_images["v1"], service), first, **kw)
    # Healthy (GET /health answers 200) but 20 % of the requests answer 500.
    bad = release(demo_images["v2"], service, ERROR_RATE="0.2")
    settings = BlueGreen(post_switch_check=10, scale_down_delay=60)
    deploy_idle(docker_client, bad, settings, **kw)
    with LoadGenerator(router.url(LOOPBACK), rate=120, mix=MIX, max_duration=120) as load:
        time.sleep(0.5)
        load.mark("switch")
        started = time.monotonic()
        with pytest.raises(SwitchAborted, match="post-switch check of green failed") as caught:
            switch_traffic(docker_client, bad, settings, **kw)
        took = time.monotonic() - started
        load.mark("back")
        time.sleep(1.5)
    report = load.report
    print(report.summary(), caught.value.figures, f"switch + check + back: {took:.2f}s")
    assert caught.value.figures["5xx"] >= 1 and caught.value.figures["seconds"] < 10
    assert set(report.by_phase["back"]) - {"total", "failed"} == {"v1"}
    assert report.by_phase["back"]["failed"] == 0
    failed = report.by_phase["switch"]["failed"]
    assert failed == sum(n for (_, why), n in report.failures.items() if why == "status 500")
    assert releases_at(router.url(LOOPBACK)) == {"v1"}
    record = last_switch(docker_client, service, "test")
    assert record is not None and (record.live, record.previous) == ("blue", "green")
    # The failed colour is what retire removes, once its delay has passed.
    with pytest.raises(RetireNotDue) as not_due:
        retire(docker_client, service, "test", settings, wait=False, **kw)
    assert not_due.value.due.timestamp() > time.time() + 50
    retire(docker_client, service, "test", BlueGreen(scale_down_delay=0), **kw)
    running = list_running(docker_client, service, "test", 8080)
    assert {(r.group, r.digest) for r in running} == {("blue", demo_images["v1"].split("@")[1])}


def test_no_switch_below_full_capacity_or_health(bed, docker_client, demo_images, service) -> None:  # type: ignore[no-untyped-def]
    router = router_settings(bed)
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    first = BlueGreen(replicas=2, post_switch_check=0)
    deploy_idle(docker_client, release(demo_images["v1"], service), first, **kw)
    switch_traffic(docker_client, release(demo_images["v1"], service), first, **kw)
    v2 = release(demo_images["v2"], service)
    with pytest.raises(DeployAborted, match="does not run in green"):
        switch_traffic(docker_client, v2, first, **kw)
    deploy_idle(docker_client, v2, first, **kw)
    # One idle instance turns unhealthy after deploy_idle: the switch must not happen.
    green = [r for r in list_running(docker_client, service, "test", 8080) if r.group == "green"]
    httpx.post(
        f"http://{green[0].address}/admin/fault", json={"unhealthy": True}, trust_env=False
    ).raise_for_status()
    with pytest.raises(DeployAborted, match="no switch to green"):
        switch_traffic(docker_client, v2, first, **kw)
    assert releases_at(router.url(LOOPBACK)) == {"v1"}


def test_bad_settings_are_refused() -> None:
    with pytest.raises(DeploySettingsInvalid, match="preview_replicas"):
        BlueGreen(replicas=2, preview_replicas=3)
    with pytest.raises(DeploySettingsInvalid, match="scale_down_delay"):
        BlueGreen(scale_down_delay=-1)
    with pytest.raises(DeploySettingsInvalid, match="max_5xx_ratio"):
        BlueGreen(max_5xx_ratio=2)


def test_minimum_in_service_after_blue_green_replaces_the_serving_colour_in_place(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    """The deployment type may change between deliveries: blue/green, then minimum in-service
    (in place, in the colour that serves), then blue/green again (to the other colour)."""
    from docker_delivery.errors import DeliveryError
    from docker_delivery.strategies import Rolling

    router = router_settings(bed)
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    deploy(docker_client, release(demo_images["v1"], service), MinimumInService(3, 2), **kw)
    settings = BlueGreen(scale_down_delay=1, post_switch_check=1)
    deploy_idle(docker_client, release(demo_images["v2"], service), settings, **kw)
    switch_traffic(docker_client, release(demo_images["v2"], service), settings, **kw)
    # The old release stays warm in "live" (not retired): a minimum in-service deploy removes it.
    with pytest.raises(
        DeliveryError, match="runs as containers of the engine, not on target 'swarm'"
    ):  # refused before anything changes
        deploy(docker_client, release(demo_images["v3"], service), Rolling(replicas=3), **kw)
    with LoadGenerator(router.url(LOOPBACK), rate=120, mix=MIX, max_duration=180) as load:
        load.mark("min in-service v3")
        result = deploy(
            docker_client, release(demo_images["v3"], service), MinimumInService(3, 2), **kw
        )
        load.mark("v3 live")
        time.sleep(1.0)
    report = load.report
    print(report.summary())
    assert report.failed == 0, report.failures
    assert set(report.by_phase["v3 live"]) - {"total", "failed"} == {"v3"}
    assert result.replaced == 3
    running = list_running(docker_client, service, "test", 8080)
    assert len(running) == 3 and {r.group for r in running} == {"blue"}  # in place
    assert {r.digest for r in running} == {demo_images["v3"].split("@")[1]}
    idle = deploy_idle(docker_client, release(demo_images["v1"], service), settings, **kw)
    assert (idle.live, idle.idle) == ("blue", "green")  # blue/green goes on from there
    switch_traffic(docker_client, release(demo_images["v1"], service), settings, **kw)
    assert releases_at(router.url(LOOPBACK)) == {"v1"}
    # The live release again: nothing is deployed, and the preview shows what serves.
    again = deploy_idle(docker_client, release(demo_images["v1"], service), settings, **kw)
    assert again.steps == ["already live"]
    assert releases_at(router.preview(LOOPBACK)) == {"v1"}


def test_a_preview_held_for_a_decision_and_aborted_leaves_the_live_colour_alone(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    """A human's Abort before the switch: the new colour is drained and removed, the live
    release serves as before, under load with no request lost; too late after the switch."""
    from docker_delivery.strategies.abort import AbortImpossible, abort_rollout

    router = router_settings(bed)
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    deploy(docker_client, release(demo_images["v1"], service), MinimumInService(3, 2), **kw)
    settings = BlueGreen(hold_before_switch=True, scale_down_delay=0, post_switch_check=0)
    v2 = release(demo_images["v2"], service)
    deploy_idle(docker_client, v2, settings, **kw)
    assert releases_at(router.preview(LOOPBACK)) == {"v2"}
    with LoadGenerator(router.url(LOOPBACK), rate=120, max_duration=120) as load:
        aborted = abort_rollout(docker_client, v2, settings, target="engine", **kw)
        time.sleep(1.5)
    print(load.report.summary(), aborted.as_dict())
    assert load.report.failed == 0, load.report.failures
    assert set(load.report.by_release) == {"v1"}
    assert aborted.kind == "blue_green" and aborted.serving == demo_images["v1"].split("@")[1]
    running = list_running(docker_client, service, "test", 8080)
    assert {r.digest for r in running} == {aborted.serving} and len(running) == 3
    assert abort_rollout(docker_client, v2, settings, target="engine", **kw).kind == "nothing"
    deploy_idle(docker_client, v2, settings, **kw)
    switch_traffic(docker_client, v2, settings, **kw)
    with pytest.raises(AbortImpossible, match="too late to abort: roll back instead"):
        abort_rollout(docker_client, v2, settings, target="engine", **kw)


def check_in_trigger(service: str, settings: BlueGreen, watch: dict) -> dict:  # type: ignore[type-arg]
    """The post-switch check as Airflow's triggerer runs it: PostSwitchCheckTrigger's first
    event; it finds the router (and probes from its container) through the engine's connection."""
    from docker_delivery.triggers.post_switch import PostSwitchCheckTrigger

    trigger = PostSwitchCheckTrigger(
        service, "test", settings, CHECK, watch, engine_conn_id=SWARM_CONN_ID
    )
    return first_event(trigger)


def test_post_switch_checks_run_in_the_triggerer_pass_or_send_clients_back_at_once(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    """The switch watches the first 10 s itself, then hands the rest of its check over (the
    lock kept); the trigger passes a good colour, and sends every client back to the old one at
    once when the new one turns bad; the switch, called again with the report, returns, or
    records the switch back and fails."""
    router = router_settings(bed)
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    first = BlueGreen(replicas=2, post_switch_check=0)
    deploy_idle(docker_client, release(demo_images["v1"], service), first, **kw)
    switch_traffic(docker_client, release(demo_images["v1"], service), first, **kw)
    settings = BlueGreen(post_switch_check=14, scale_down_delay=0)
    good, later_bad = release(demo_images["v2"], service), release(demo_images["v3"], service)
    lock = f"dd-lock-{service}-test"
    with LoadGenerator(router.url(LOOPBACK), rate=100, mix=MIX, max_duration=240) as load:
        deploy_idle(docker_client, good, settings, **kw)
        load.mark("good switched")
        handed = switch_traffic(docker_client, good, settings, watch_elsewhere=True, **kw)
        assert handed.watch is not None and handed.live == "green"
        assert "10s of 14s passed here" in handed.steps[-1]
        assert docker_client.containers.get(lock).labels["io.docker-delivery.lock-owner"] == "test"
        passed = check_in_trigger(service, settings, handed.watch)
        done = switch_traffic(
            docker_client, good, settings, watched=WatchReport.from_dict(passed), **kw
        )
        retire(docker_client, service, "test", settings, **kw)
        deploy_idle(docker_client, later_bad, settings, **kw)
        handed = switch_traffic(docker_client, later_bad, settings, watch_elsewhere=True, **kw)
        load.mark("turned bad")  # once handed over, 30 % of its answers become 500s
        for instance in list_running(docker_client, service, "test", 8080):
            if instance.group == "blue":
                httpx.post(
                    f"http://{instance.address}/admin/fault",
                    json={"error_rate": 0.3},
                    trust_env=False,
                ).raise_for_status()
        failed = check_in_trigger(service, settings, handed.watch)
        load.mark("sent back")  # by the trigger
        time.sleep(3)  # the task resumes seconds later: nobody may see the bad colour meanwhile
        with pytest.raises(SwitchAborted, match="post-switch check of blue failed") as caught:
            switch_traffic(
                docker_client, later_bad, settings, watched=WatchReport.from_dict(failed), **kw
            )
        load.mark("recorded")
        time.sleep(1.5)
    report = load.report
    print(report.summary(), passed["figures"], failed["figures"])
    assert passed["verdict"] == "passed" and passed["figures"]["seconds"] >= 14
    assert passed["figures"]["probes"] >= 2 and passed["figures"]["5xx"] == 0
    assert done.figures == passed["figures"] and done.live == "green"
    assert report.by_phase["good switched"]["failed"] == 0
    assert failed["verdict"] == "failed" and failed["figures"]["5xx"] >= 1
    assert failed["figures"]["seconds"] < settings.post_switch_check
    assert caught.value.figures == failed["figures"]
    for phase in ("sent back", "recorded"):
        after = report.by_phase[phase]
        assert after["failed"] == 0 and set(after) - {"total", "failed"} == {"v2"}, (phase, after)
    assert report.failed == report.by_phase["turned bad"]["failed"], report.by_phase
    record = last_switch(docker_client, service, "test")
    assert record is not None and (record.live, record.previous) == ("green", "blue")
    assert not docker_client.containers.list(all=True, filters={"name": lock})
