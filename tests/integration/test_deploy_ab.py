"""A/B tests on the real engine, behind the real HAProxy (sticky ab backend), under load."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from kit.deploy import CHECK, LOOPBACK, first_event, release, router_settings
from kit.loadgen import LoadGenerator
from kit.remote import SWARM_CONN_ID

from docker_delivery.strategies.ab import (
    ABTest,
    ABTestAborted,
    StepEvent,
    ab_deploy,
    split_weights,
    weight_order,
)
from docker_delivery.strategies.ab_analysis import BakeReport
from docker_delivery.strategies.base import DeploySettingsInvalid
from docker_delivery.strategies.bluegreen import list_running
from docker_delivery.strategies.deploy import deploy
from docker_delivery.strategies.min_in_service import MinimumInService

SHARE_MIX = {"get": 0.6, "get_new_conn": 0.2, "post": 0.2}  # no slow requests: shares per start
SERVICE_PREFIX = "ab"  # the service fixture's names (tests/conftest.py)


def live_v1(bed, docker_client, demo_images, service):  # type: ignore[no-untyped-def]
    router = router_settings(bed, preview=False)
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    deploy(docker_client, release(demo_images["v1"], service), MinimumInService(3, 2), **kw)
    return router, kw


def test_rollout_through_every_step_keeps_shares_and_drops_no_request(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    router, kw = live_v1(bed, docker_client, demo_images, service)
    settings = ABTest(steps=(5, 25, 50, 100), bake_time=11, poll=0.5)
    events: list[tuple[int, int, str]] = []
    # Two kinds of clients at once: cookie-less ones (each request a new client: the shares),
    # and one cookie-keeping client (sticky: it must never see a failure either).
    with (
        LoadGenerator(
            router.url(LOOPBACK), rate=100, mix=SHARE_MIX, cookies=False, max_duration=240
        ) as load,
        LoadGenerator(router.url(LOOPBACK), rate=20, cookies=True, max_duration=240) as sticky,
    ):

        def on_step(step: StepEvent) -> None:
            events.append((step.number, step.weight, step.event))
            label = f"step {step.weight}" if step.event == "start" else f"end {step.weight}"
            load.mark(label)
            sticky.mark(label)

        load.mark("start")
        result = ab_deploy(
            docker_client, release(demo_images["v2"], service), settings, on_step=on_step, **kw
        )
        load.mark("promoted")
        sticky.mark("promoted")
        time.sleep(1.5)
    report, sticky_report = load.report, sticky.report
    print(report.summary())
    print(sticky_report.summary())
    assert report.failed == 0, report.failures
    assert sticky_report.failed == 0, sticky_report.failures
    assert events == [
        (n, w, e) for n, w in ((1, 5), (2, 25), (3, 50), (4, 100)) for e in ("start", "end")
    ]
    for weight in (5, 25, 50, 100):
        phase = report.by_phase[f"step {weight}"]
        share = report.share("v2", f"step {weight}") * 100
        print(f"step {weight}%: {phase['total']} requests, v2 share {share:.1f}%")
        assert phase["total"] >= 1000, phase
        assert abs(share - weight) <= 5, (weight, share, phase)
    assert set(report.by_phase["promoted"]) - {"total", "failed"} == {"v2"}
    assert result.promoted and result.home == "live" and len(result.figures) == 4
    assert all(f["b_requests"] >= settings.min_requests for f in result.figures)
    running = list_running(docker_client, service, "test", 8080)
    assert len(running) == 3 and {r.digest for r in running} == {result.digest}
    assert {r.previous_digest for r in running} == {demo_images["v1"].split("@")[1]}
    with httpx.Client(trust_env=False) as client:
        response = client.get(router.url(LOOPBACK) + "version")
        assert response.headers["X-Release"] == "v2" and "dd_ab" not in response.cookies


def test_a_faulty_variant_is_aborted_at_its_first_step(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    router, kw = live_v1(bed, docker_client, demo_images, service)
    settings = ABTest(steps=(5, 50, 100), bake_time=20, poll=0.5)
    bad = release(demo_images["v2"], service, ERROR_RATE="0.2")
    with LoadGenerator(
        router.url(LOOPBACK), rate=120, mix=SHARE_MIX, cookies=False, max_duration=120
    ) as load:
        with pytest.raises(ABTestAborted, match="error ratio") as caught:
            ab_deploy(
                docker_client,
                bad,
                settings,
                on_step=lambda step: load.mark(f"{step.event} {step.weight}"),
                **kw,
            )
        load.mark("aborted")  # "end 5" is marked just before public goes back to A
        time.sleep(1.5)
    report = load.report
    figures = caught.value.figures
    step = report.by_phase["start 5"]  # from B's weights set to the abort's decision
    to_a = report.by_phase["end 5"]  # then until public routes to A again
    expected = 0.05 * 0.2 * step["total"]
    print(report.summary())
    print(
        f"step 5%: {step['total']} requests until the abort, {step['failed']} failed at the "
        f"clients; weight x fault rate x requests = {expected:.1f}; router figures {figures}"
    )
    assert figures["step"] == 1 and figures["weight"] == 5
    assert figures["b_5xx"] >= 1 and figures["b_requests"] >= settings.min_requests
    assert figures["seconds"] < settings.bake_time
    assert all(why == "status 500" for (_, why) in report.failures), report.failures
    after = report.by_phase["aborted"]
    assert after["total"] >= 100 and after["failed"] == 0
    # Failures only while B took 5 %: a request is counted in the phase it was sent in, and the
    # step's mark follows its weight change, so one sent in that instant counts before it.
    assert report.failed - step["failed"] - to_a["failed"] <= 1, report.by_phase
    assert step["failed"] <= 3 * expected + 5
    assert set(after) - {"total", "failed"} == {"v1"}
    running = list_running(docker_client, service, "test", 8080)
    assert {r.digest for r in running} == {demo_images["v1"].split("@")[1]} and len(running) == 3


def test_weights_and_bad_settings() -> None:
    assert split_weights(5, 3, 1) == (19, 3)  # 3 x 19 : 1 x 3 = 95 : 5
    assert split_weights(25, 3, 1) == (1, 1)
    assert split_weights(50, 3, 2) == (2, 3)
    assert split_weights(100, 3, 3) == (0, 1)
    a, b = split_weights(1, 16, 16)
    assert (a, b) == (99, 1)
    # A (slots 1-3, weight 1) goes up to 19 before new B (slot 4, weight 0) gets 3: B never
    # takes more than 5 % on the way (B first would give it 50 % for a moment).
    assert weight_order({1: 1, 2: 1, 3: 1, 4: 0}, {1: 19, 2: 19, 3: 19, 4: 3}, {4}) == [
        (1, 19),
        (2, 19),
        (3, 19),
        (4, 3),
    ]
    with pytest.raises(DeploySettingsInvalid, match="increase"):
        ABTest(steps=(5, 5, 100))
    with pytest.raises(DeploySettingsInvalid, match="last step must be 100"):
        ABTest(steps=(5, 50))
    with pytest.raises(DeploySettingsInvalid, match=r"within 1\.\.100"):
        ABTest(steps=(0, 100))
    with pytest.raises(DeploySettingsInvalid, match="max_5xx_ratio"):
        ABTest(max_5xx_ratio=1.5)


def test_a_test_held_after_a_step_keeps_its_share_and_an_abort_goes_back_to_a(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    """until_step stops with B at its share (a pipeline's hold), B keeps serving it; an abort
    of the held test routes every client back to A and removes B, under load."""
    from docker_delivery.strategies.abort import abort_rollout

    router, kw = live_v1(bed, docker_client, demo_images, service)
    held = ABTest(steps=(10, 100), bake_time=2, min_requests=1, poll=0.5, until_step=1)
    v2 = release(demo_images["v2"], service)
    with LoadGenerator(
        router.url(LOOPBACK), rate=100, mix=SHARE_MIX, cookies=False, max_duration=120
    ) as load:
        result = ab_deploy(docker_client, v2, held, **kw)
        load.mark("held")
        time.sleep(3)
        load.mark("abort")
        aborted = abort_rollout(docker_client, v2, held, target="engine", **kw)
        load.mark("aborted")
        time.sleep(1.5)
    report = load.report
    print(report.summary(), aborted.as_dict())
    assert not result.promoted and "test held at step 1/2" in result.steps[-1]
    assert report.failed == 0, report.failures
    assert {"v1", "v2"} <= set(report.by_phase["held"])  # B kept its share while held
    assert set(report.by_phase["aborted"]) - {"total", "failed"} == {"v1"}
    assert aborted.kind == "ab" and aborted.serving == demo_images["v1"].split("@")[1]
    running = list_running(docker_client, service, "test", 8080)
    assert {r.digest for r in running} == {aborted.serving} and len(running) == 3


def bake_in_trigger(service: str, settings: ABTest, bake: dict[str, Any]) -> dict[str, Any]:
    """The step's bake as Airflow's triggerer runs it: ABBakeTrigger's first event. The trigger
    finds the service's router through the engine's connection, as in the triggerer."""
    from docker_delivery.triggers.ab import ABBakeTrigger

    return first_event(ABBakeTrigger(service, "test", settings, bake, engine_conn_id=SWARM_CONN_ID))


def test_steps_baked_in_the_triggerer_promote_b_and_drop_no_request(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    """The runner stops once a step's weights are set, keeping the deployment lock; the trigger
    bakes the step; the runner carries on from its report: the next step, then the promotion."""
    router, kw = live_v1(bed, docker_client, demo_images, service)
    settings = ABTest(steps=(50, 100), bake_time=3, min_requests=5, poll=0.5)
    v2 = release(demo_images["v2"], service)
    reports = []
    with LoadGenerator(
        router.url(LOOPBACK), rate=60, mix=SHARE_MIX, cookies=False, max_duration=120
    ) as load:
        result = ab_deploy(docker_client, v2, settings, bake_elsewhere=True, **kw)
        while result.bake is not None:
            lock = docker_client.containers.get(f"dd-lock-{service}-test")
            assert lock.labels["io.docker-delivery.lock-owner"] == "test"  # kept while baking
            load.mark(f"baking step {result.bake['number']}")
            reports.append(bake_in_trigger(service, settings, result.bake))
            baked = BakeReport.from_dict(reports[-1])
            result = ab_deploy(docker_client, v2, settings, bake_elsewhere=True, baked=baked, **kw)
        load.mark("promoted")
        time.sleep(1.5)
    report = load.report
    print(report.summary(), [r["figures"] for r in reports])
    assert [(r["verdict"], r["bake"]["weight"]) for r in reports] == [
        ("passed", 50),
        ("passed", 100),
    ]
    assert all(r["figures"]["b_requests"] >= 5 for r in reports)
    assert result.promoted and len(result.figures) == 1  # this last try's step
    assert report.failed == 0, report.failures
    assert {"v1", "v2"} <= set(report.by_phase["baking step 1"])
    assert set(report.by_phase["promoted"]) - {"total", "failed"} == {"v2"}
    assert not docker_client.containers.list(all=True, filters={"name": f"dd-lock-{service}-"})


def test_a_faulty_variant_baked_in_the_triggerer_is_sent_back_to_a_by_the_trigger(
    bed, docker_client, demo_images, service
) -> None:  # type: ignore[no-untyped-def]
    """On a breach the trigger routes every client back to A at once; the task, resumed seconds
    later, finds A serving and removes B: only the requests B took before the cut failed."""
    router, kw = live_v1(bed, docker_client, demo_images, service)
    settings = ABTest(steps=(5, 50, 100), bake_time=20, poll=0.5)
    bad = release(demo_images["v2"], service, ERROR_RATE="0.2")
    with LoadGenerator(
        router.url(LOOPBACK), rate=120, mix=SHARE_MIX, cookies=False, max_duration=120
    ) as load:
        handed = ab_deploy(docker_client, bad, settings, bake_elsewhere=True, **kw)
        load.mark("baking")
        assert handed.bake is not None and handed.bake["weight"] == 5
        event = bake_in_trigger(service, settings, handed.bake)
        load.mark("sent back")  # the trigger routed public to A's home group
        time.sleep(3)  # the scheduler takes seconds to resume the task: B serves nobody meanwhile
        load.mark("resumed")
        with pytest.raises(ABTestAborted, match="error ratio"):
            ab_deploy(docker_client, bad, settings, baked=BakeReport.from_dict(event), **kw)
        load.mark("aborted")
        time.sleep(1.5)
    report = load.report
    figures = event["figures"]
    baking = report.by_phase["baking"]
    expected = 0.05 * 0.2 * baking["total"]
    print(report.summary())
    print(
        f"step 5% baked in the trigger: {baking['total']} requests until the cut, "
        f"{baking['failed']} failed at the clients; weight x fault rate x requests = "
        f"{expected:.1f}; router figures {figures}"
    )
    assert event["verdict"] == "failed" and figures["seconds"] < settings.bake_time
    assert figures["b_5xx"] >= 1 and figures["b_requests"] >= settings.min_requests
    for phase in ("sent back", "resumed", "aborted"):
        after = report.by_phase[phase]
        assert after["failed"] == 0 and set(after) - {"total", "failed"} == {"v1"}, (phase, after)
    assert report.failed - baking["failed"] <= 1, report.by_phase  # one sent at the cut's instant
    assert baking["failed"] <= 3 * expected + 5
    running = list_running(docker_client, service, "test", 8080)
    assert {r.digest for r in running} == {demo_images["v1"].split("@")[1]} and len(running) == 3
    assert not docker_client.containers.list(all=True, filters={"name": f"dd-lock-{service}-"})
