"""A bake on ECS: slept against the alarms where the runner runs, handed over when long enough,
or passed or failed by the report of one run elsewhere; its trigger's round trip."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from docker_delivery.errors import DeployAborted
from docker_delivery.strategies.aws import EcsContext
from docker_delivery.strategies.aws_bake import AlarmBake, BakeHandedOver, judge
from docker_delivery.triggers.ecs_bake import EcsAlarmBakeTrigger


class Target:
    """What EcsContext.bake needs of an EcsTarget: its own bake (recorded)."""

    def __init__(self) -> None:
        self.baked: list[tuple[str, float, tuple[str, ...]]] = []

    def bake(self, name: str, seconds: float, alarms: Any) -> None:
        self.baked.append((name, seconds, tuple(alarms)))


def context(**kw: Any) -> EcsContext:
    kw.setdefault("log", lambda _: None)
    return EcsContext(Target(), None, 2, alarms=("api-5xx",), **kw)  # type: ignore[arg-type]


def test_a_short_bake_runs_here_a_long_one_is_handed_over() -> None:
    ctx = context(hand_over_after=30.0)
    ctx.bake("api-prod-blue", 29, step="switched")
    assert ctx.target.baked == [("api-prod-blue", 29, ("api-5xx",))]  # type: ignore[attr-defined]
    with pytest.raises(BakeHandedOver) as handed:
        ctx.bake("api-prod-blue", 30, step="switched")
    bake = handed.value.bake
    assert (bake.key, bake.seconds, bake.alarms) == ("api-prod-blue:switched", 30, ("api-5xx",))
    assert abs(bake.started_at - time.time()) < 5
    assert not isinstance(handed.value, DeployAborted)  # no failure path runs for it
    never = context()  # nothing hands over: every bake runs here
    never.bake("api-prod-blue", 600, step="switched")
    assert len(never.target.baked) == 1  # type: ignore[attr-defined]


def test_a_bake_run_elsewhere_passes_or_fails_by_its_report() -> None:
    passed = {"verdict": "passed", "key": "api-prod:50%", "message": ""}
    failed = {"verdict": "failed", "key": "api-prod:100%", "message": "alarm api-5xx in ALARM"}
    ctx = context(hand_over_after=30.0, baked={"api-prod:50%": passed, "api-prod:100%": failed})
    ctx.bake("api-prod", 60, step="50%")  # passed: not again, not handed over
    with pytest.raises(DeployAborted, match="alarm api-5xx in ALARM"):
        ctx.bake("api-prod", 60, step="100%")
    assert ctx.target.baked == []  # type: ignore[attr-defined]


def test_the_judgement_and_the_trigger_travel_as_data() -> None:
    bake = AlarmBake("api-prod:50%", "api-prod", 30.0, ("api-5xx",), time.time() - 10)
    assert AlarmBake.from_dict(json.loads(json.dumps(bake.as_dict()))) == bake
    assert judge(bake, [])[0] is None
    verdict, figures, why = judge(bake, ["api-5xx"])
    assert verdict == "failed" and figures["firing"] == ["api-5xx"] and "api-5xx in ALARM" in why
    done = AlarmBake("k", "api-prod", 5.0, (), time.time() - 6)
    assert judge(done, [])[0] == "passed"
    trigger = EcsAlarmBakeTrigger(bake, aws_conn_id="aws_prod", region="eu-west-1")
    name, kwargs = trigger.serialize()
    assert name == "docker_delivery.triggers.ecs_bake.EcsAlarmBakeTrigger"
    assert EcsAlarmBakeTrigger(**json.loads(json.dumps(kwargs))).serialize() == (name, kwargs)


ECS_SPEC = {
    "service": "shop-api",
    "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/api",
    "environments": {
        "staging": {
            "target": "ecs",
            "aws": {
                "conn_id": "aws_shop", "region": "eu-west-1", "cluster": "shop",
                "subnets": ["subnet-0a1b2c3d"], "security_groups": ["sg-0a1b2c3d"],
                "alarms": ["api-5xx"], "bake": 60,
            },
        }
    },
}  # fmt: skip


def test_a_deploy_task_on_ecs_defers_its_bake_and_resumes_with_the_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The task hands the bake to EcsAlarmBakeTrigger (the environment's AWS connection and
    region); resumed with its report, it runs the step again, which reads that report."""
    from airflow.sdk.exceptions import TaskDeferred

    import docker_delivery.strategies.aws as aws
    from docker_delivery.operators.deploy import MinimumInServiceDeployOperator
    from docker_delivery.strategies.base import DeployResult

    contexts: list[EcsContext] = []

    def context_for(spec: Any, environment: str, image: str, client: Any, **kw: Any) -> Any:
        contexts.append(context(log=kw.get("log", print)))
        return contexts[-1]

    monkeypatch.setattr(aws, "context_for", context_for)
    image = ECS_SPEC["image"] + "@sha256:" + "c" * 64  # type: ignore[operator]
    op = MinimumInServiceDeployOperator(
        task_id="staging.deploy", service="shop-api", environment="staging", image=image,
        spec=ECS_SPEC, deferrable=True,
    )  # fmt: skip

    def on_ecs(ctx: EcsContext, spec: Any) -> DeployResult:  # the runner: one bake of 60 s
        ctx.bake("shop-api-staging", 60, step="deployed")
        return DeployResult("shop-api", "staging", "sha256:" + "c" * 64)

    op.on_ecs = on_ecs  # type: ignore[method-assign]
    ti = type("TI", (), {"dag_id": "d", "run_id": "r", "task_id": "staging.deploy"})()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": ti})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert isinstance(trigger, EcsAlarmBakeTrigger) and deferred.value.method_name == (
        "execute_ecs_baked"
    )
    assert (trigger.bake.key, trigger.bake.seconds) == ("shop-api-staging:deployed", 60)
    assert (trigger.aws_conn_id, trigger.region, trigger.bake.alarms) == (
        "aws_shop", "eu-west-1", ("api-5xx",),
    )  # fmt: skip
    passed = {"verdict": "passed", "key": trigger.bake.key, "figures": {}, "message": ""}
    out = op.execute_ecs_baked({"ti": ti}, passed, **deferred.value.kwargs)  # type: ignore[arg-type]
    assert out["digest"] == "sha256:" + "c" * 64 and contexts[-1].baked == {
        trigger.bake.key: passed
    }
    failed = {**passed, "verdict": "failed", "message": "alarm api-5xx in ALARM"}
    with pytest.raises(DeployAborted, match="alarm api-5xx in ALARM"):
        op.execute_ecs_baked({"ti": ti}, failed, baked={})  # type: ignore[arg-type]
