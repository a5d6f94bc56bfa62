"""An A/B step's analysis as data: judged from the router's counters, handed to the triggerer
(ABBakeTrigger) and back (BakeReport), and the operator that defers for it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from docker_delivery.routing.haproxy import BackendStats
from docker_delivery.routing.haproxy.runtime import ServerStats
from docker_delivery.strategies.ab_analysis import BakeReport, StepBake, judge
from docker_delivery.strategies.settings import ABTest

ZERO = dict(
    status="UP", sessions_total=0, hrsp_2xx=0, hrsp_3xx=0, hrsp_4xx=0, connect_errors=0,
    response_errors=0, current_sessions=0, queued=0, ttime_ms=0,
)  # fmt: skip


def stats(**servers: tuple[int, int, int]) -> BackendStats:
    """The ab backend's counters: slot name ``s<k>`` -> (requests, 5xx, rtime ms)."""
    rows = tuple(
        ServerStats(
            **ZERO,
            name=name,
            slot=int(name[1:]),
            address=f"10.0.0.{name[1:]}:8080",
            selected=0,
            requests=req,
            hrsp_5xx=err,
            rtime_ms=rtime,
        )
        for name, (req, err, rtime) in servers.items()
    )
    total = sum(s.requests for s in rows)
    return BackendStats(**ZERO, backend="ab", requests=total, hrsp_5xx=0, rtime_ms=0, servers=rows)


# A in slots 1-2, B in slot 3; at the start A had served 100 requests each, B none.
BASE = stats(s1=(100, 0, 5), s2=(100, 1, 5), s3=(0, 0, 0))
SETTINGS = ABTest(bake_time=30, min_requests=20, max_5xx_ratio=0.05, max_response_ms=200)


def bake() -> StepBake:
    """Step 1 (5 %), its weights set now (the bake's clock is the wall clock)."""
    return StepBake.start(1, 5, "live", [1, 2], [3], BASE)


def test_a_step_bakes_on_until_its_time_then_passes() -> None:
    now = stats(s1=(190, 0, 5), s2=(190, 1, 5), s3=(40, 1, 30))
    early = judge(SETTINGS, bake(), now, elapsed=10)
    assert early["verdict"] is None and early["failed"] is None
    assert (early["b_requests"], early["b_5xx"], early["a_requests"]) == (40, 1, 180)
    done = judge(SETTINGS, bake(), now, elapsed=30.2)
    assert done["verdict"] == "passed" and done["b_5xx_ratio"] == 0.025


def test_a_breach_fails_at_once_and_says_why() -> None:
    errors = judge(
        SETTINGS, bake(), stats(s1=(150, 0, 5), s2=(150, 1, 5), s3=(20, 2, 9)), elapsed=3
    )
    assert errors["verdict"] == "failed" and "error ratio 10.0% (2 of 20" in errors["failed"]
    slow = judge(
        SETTINGS, bake(), stats(s1=(150, 0, 5), s2=(150, 1, 5), s3=(25, 0, 450)), elapsed=3
    )
    assert slow["verdict"] == "failed" and "response time 450 ms > 200 ms" in slow["failed"]
    few = judge(SETTINGS, bake(), stats(s1=(150, 0, 5), s2=(150, 1, 5), s3=(5, 0, 9)), elapsed=150)
    assert few["verdict"] == "failed" and few["failed"].startswith("inconclusive: B served 5")
    waiting = judge(
        SETTINGS, bake(), stats(s1=(150, 0, 5), s2=(150, 1, 5), s3=(5, 0, 9)), elapsed=60
    )
    assert waiting["verdict"] is None  # too few requests yet: it waits for them


def test_the_bake_and_its_report_travel_as_json() -> None:
    original = bake()
    back = StepBake.from_dict(json.loads(json.dumps(original.as_dict())))
    assert back == original
    figures = judge(SETTINGS, back, stats(s1=(150, 0, 5), s2=(150, 1, 5), s3=(20, 2, 9)))
    report = BakeReport("failed", back, figures, figures["failed"])
    assert BakeReport.from_dict(json.loads(json.dumps(report.as_dict()))) == report
    with pytest.raises(ValueError, match="not a bake report"):
        BakeReport.from_dict({"verdict": "maybe", "bake": original.as_dict()})


class FakeRouter:
    """A router whose ``ab`` counters come from a list (one per read); records route changes."""

    def __init__(self, reads: list[BackendStats]) -> None:
        self.reads, self.routed, self.public = reads, [], "ab"

    def routes(self) -> dict[str, str]:
        return {"public": self.public}

    def stats(self, backend: str) -> BackendStats:
        assert backend == "ab"
        return self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]

    def route(self, frontend: str, backend: str) -> None:
        self.routed.append((frontend, backend))
        self.public = backend


def first_event(trigger: Any, router: FakeRouter) -> dict[str, Any]:
    from kit.deploy import first_event as run_first

    trigger.open = lambda: (router, None)
    return run_first(trigger)


def test_the_trigger_routes_back_to_a_on_a_breach_and_reports_it() -> None:
    from docker_delivery.triggers.ab import ABBakeTrigger

    settings = SETTINGS.model_copy(update={"poll": 0.01})
    trigger = ABBakeTrigger("web", "prod", settings.model_dump(mode="json"), bake().as_dict())
    name, kwargs = trigger.serialize()
    assert name == "docker_delivery.triggers.ab.ABBakeTrigger"
    again = ABBakeTrigger(**json.loads(json.dumps(kwargs)))
    assert again.bake == trigger.bake and again.settings == settings
    good = stats(s1=(150, 0, 5), s2=(150, 1, 5), s3=(10, 0, 9))
    bad = stats(s1=(170, 0, 5), s2=(170, 1, 5), s3=(30, 3, 9))
    router = FakeRouter([good, good, bad])
    event = first_event(again, router)
    assert event["verdict"] == "failed" and "error ratio 10.0%" in event["message"]
    assert router.routed == [("public", "live")]  # A's home group, before the task resumes
    assert BakeReport.from_dict(event).figures["b_5xx"] == 3


def test_the_trigger_passes_a_good_step_and_stops_when_the_test_was_ended() -> None:
    from docker_delivery.triggers.ab import ABBakeTrigger

    settings = SETTINGS.model_copy(update={"poll": 0.01, "bake_time": 0.05})
    good = stats(s1=(150, 0, 5), s2=(150, 1, 5), s3=(25, 0, 9))
    passed = first_event(ABBakeTrigger("web", "prod", settings, bake()), FakeRouter([good]))
    assert passed["verdict"] == "passed" and passed["figures"]["b_requests"] == 25
    ended = FakeRouter([good])
    ended.public = "live"  # someone aborted the test meanwhile
    event = first_event(ABBakeTrigger("web", "prod", settings, bake()), ended)
    assert event["verdict"] == "ended" and "'live', not ab" in event["message"]
    assert ended.routed == []


def test_the_operator_defers_each_bake_and_tells_every_step_at_the_end() -> None:
    """A bake of 30 s or more: the task sets the step's weights, defers to ABBakeTrigger with
    what it did so far, and resumed with the trigger's report carries on from it."""
    from airflow.sdk.exceptions import TaskDeferred

    import docker_delivery.operators.deploy as deploy
    from docker_delivery.operators.deploy import ABDeployOperator
    from docker_delivery.strategies.ab import ABResult
    from docker_delivery.triggers.ab import ABBakeTrigger

    op = ABDeployOperator(
        task_id="ab", service="web", environment="prod", image="sha256:" + "a" * 64,
        router_port=18080, steps=[50, 100], bake_time=30, deferrable=True,
    )  # fmt: skip
    seen: list[Any] = []
    step = bake()

    def deliver(client: Any, spec: Any, context: Any) -> ABResult:  # the domain's answers
        seen.append(op._report)
        result = ABResult("web", "prod", "sha256:" + "a" * 64, home="live")
        if op._report is None:
            result.steps, result.bake = ["step 1/2: 50% to B"], step.as_dict()
        else:
            result.steps, result.promoted = ["step 2/2: 100% to B"], True
            result.figures = [dict(op._report["figures"])]
        return result

    op.deliver = deliver  # type: ignore[method-assign]
    engine = deploy.engine_client
    deploy.engine_client = lambda *a, **k: type("C", (), {"close": lambda self: None})()  # type: ignore[assignment]
    try:
        with pytest.raises(TaskDeferred) as deferred:
            op.execute({"ti": None})  # type: ignore[arg-type]
        trigger = deferred.value.trigger
        assert isinstance(trigger, ABBakeTrigger) and trigger.bake == step
        assert (trigger.engine_conn_id, trigger.haproxy_conn_id) == (None, None)  # its router
        assert deferred.value.method_name == "execute_resumed"
        so_far = deferred.value.kwargs["so_far"]
        assert so_far["steps"] == ["step 1/2: 50% to B"]
        figures = judge(SETTINGS, step, stats(s1=(150, 0, 5), s2=(150, 1, 5), s3=(25, 0, 9)))
        report = BakeReport("passed", step, figures)
        out = op.execute_resumed({"ti": None}, report.as_dict(), so_far=so_far)  # type: ignore[arg-type]
    finally:
        deploy.engine_client = engine
    assert seen[0] is None and BakeReport.from_dict(seen[1]) == report
    assert out["steps"] == ["step 1/2: 50% to B", "step 2/2: 100% to B"] and out["promoted"]
    assert out["figures"][0]["b_requests"] == 25 and "bake" not in out


@pytest.mark.parametrize(
    ("bake_time", "deferrable", "elsewhere"),
    [(30, True, True), (29, True, False), (30, False, False)],
)
def test_only_a_bake_of_30s_or_more_goes_to_the_triggerer(
    bake_time: float, deferrable: bool, elsewhere: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import docker_delivery.strategies.ab as ab
    from docker_delivery.operators.deploy import ABDeployOperator

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ab, "ab_deploy", lambda *a, **k: calls.append(k))
    op = ABDeployOperator(
        task_id="s", service="web", environment="prod", image="reg.example/web@sha256:" + "a" * 64,
        router_port=18080, bake_time=bake_time, deferrable=deferrable,
    )  # fmt: skip
    ti = type("TI", (), {"dag_id": "d", "run_id": "r", "task_id": "s"})()
    op.deliver(None, None, {"ti": ti})  # type: ignore[arg-type]
    assert calls[0]["bake_elsewhere"] is elsewhere and calls[0]["baked"] is None
