"""Delivery on AWS, against moto's server on loopback: EcsTarget, AlbRouter, Route53Router and the
deployment types on ECS (minimum in-service, rolling, blue/green by ALB and by DNS, A/B,
switch-back), with every step read back from the APIs.

What moto does not do, and what these tests do instead:
* ECS deployments do not progress, and a service's deployment is made once, at creation: moto
  reports the running and failed task counts its switches say (MOTO_ECS_SERVICE_RUNNING,
  MOTO_ECS_SERVICE_FAILED_TASKS, read when a service is created). The tests run a moto server
  that reports every task running (deployments COMPLETED), and one whose services report failed
  tasks (the circuit breaker's threshold). On AWS, ECS moves the rollout state itself (and says
  FAILED when its circuit breaker trips: handled the same way).
* moto neither stores nor returns a service's deploymentConfiguration: the tests check the
  percentages the settings map to, and the log of what was sent.
* ECS registers no targets in moto's target groups: the tests register the addresses, as ECS
  would; moto reports registered targets healthy.
* moto does not validate listener weights (0-999, at most 5 groups): the router refuses them.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kit.moto import ACCOUNT, REGION, clients, moto_server

from docker_delivery.errors import (
    ABTestAborted,
    DeployAborted,
    DeploymentLocked,
    RouterError,
    TargetError,
)
from docker_delivery.routing.alb import AlbRouter
from docker_delivery.routing.route53 import Route53Router
from docker_delivery.strategies.aws import (
    EcsContext,
    deploy_ab,
    deploy_blue_green,
    deploy_in_place,
    deploy_rolling,
    roll_back,
    run_on_ecs,
    switch_back,
    targets_healthy,
)
from docker_delivery.strategies.aws_bake import BakeHandedOver
from docker_delivery.strategies.aws_lock import AwsDeploymentLock
from docker_delivery.strategies.settings import ABTest, BlueGreen, MinimumInService, Rolling
from docker_delivery.targets.ecs import (
    EcsHealthCheck,
    EcsRelease,
    EcsTarget,
    breaker_threshold,
    deployment_configuration,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SERVICES = ("ec2", "elbv2", "ecs", "route53", "cloudwatch", "ssm")
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/shop/api"
SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:shop/db-AbCdEf"


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def aws_url() -> Iterator[str]:
    """A moto server whose ECS services report every task running: deployments COMPLETED."""
    with moto_server(MOTO_ECS_SERVICE_RUNNING="1000") as url:
        yield url


@pytest.fixture(scope="module")
def aws(aws_url: str) -> dict[str, Any]:
    """Clients of that server."""
    return clients(aws_url, *SERVICES)


@dataclass
class Alb:
    listener: str
    test_listener: str
    groups: dict[str, str]
    vpc: str


@pytest.fixture(scope="module")
def alb(aws: dict[str, Any]) -> Alb:
    ec2, elbv2 = aws["ec2"], aws["elbv2"]
    vpc = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.50.{i}.0/24", AvailabilityZone=f"{REGION}{z}")[
            "Subnet"
        ]["SubnetId"]
        for i, z in ((1, "a"), (2, "b"))
    ]
    lb = elbv2.create_load_balancer(Name="shop", Subnets=subnets)["LoadBalancers"][0]
    groups = {
        colour: elbv2.create_target_group(
            Name=f"shop-{colour}", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip"
        )["TargetGroups"][0]["TargetGroupArn"]
        for colour in ("blue", "green")
    }

    def listener(port: int, group: str) -> str:
        return str(
            elbv2.create_listener(
                LoadBalancerArn=lb["LoadBalancerArn"],
                Protocol="HTTP",
                Port=port,
                DefaultActions=[{"Type": "forward", "TargetGroupArn": groups[group]}],
            )["Listeners"][0]["ListenerArn"]
        )

    return Alb(listener(80, "blue"), listener(8080, "green"), groups, vpc)


def release(name: str, text: str, **kw: Any) -> EcsRelease:
    return EcsRelease(
        service=name,
        environment="prod",
        image=f"{IMAGE}@{digest(text)}",
        environment_vars={"LOG_LEVEL": "info"},
        secrets={"DATABASE_URL": SECRET_ARN},
        health_check=EcsHealthCheck("curl -fs http://127.0.0.1:8080/health"),
        **kw,
    )


class FakeTime:
    """Waits (bakes, delays, polls) pass at once: what they add up to is kept."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def network(aws: dict[str, Any]) -> dict[str, Any]:
    """The subnet and security group tasks run in (awsvpc), made once per moto server."""
    if "network" not in aws:
        ec2 = aws["ec2"]
        vpc = ec2.create_vpc(CidrBlock="10.70.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.70.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName="tasks", Description="tasks", VpcId=vpc)
        aws["network"] = {"subnets": [subnet], "securityGroups": [group["GroupId"]]}
    return dict(aws["network"])


def target(aws: dict[str, Any], logs: list[str], clock: FakeTime | None = None) -> EcsTarget:
    cluster = f"c{os.urandom(3).hex()}"
    aws["ecs"].create_cluster(clusterName=cluster)
    clock = clock or FakeTime()
    return EcsTarget(
        aws["ecs"], cluster, cloudwatch=aws["cloudwatch"], network=network(aws),
        log=logs.append, sleep=clock.sleep, clock=clock.monotonic,
    )  # fmt: skip


def register_targets(aws: dict[str, Any], group_arn: str, *addresses: str) -> None:
    """As ECS does for a service with a load balancer (moto's ECS does not)."""
    aws["elbv2"].register_targets(
        TargetGroupArn=group_arn, Targets=[{"Id": a, "Port": 8080} for a in addresses]
    )


def test_a_release_is_a_task_definition_revision_reused_on_a_retry(aws: dict[str, Any]) -> None:
    logs: list[str] = []
    ecs = target(aws, logs)
    one = release("api", "v1", cpu=512, memory=1024)
    arn = ecs.register(one)
    found = ecs.task_definition(arn)
    container = found["containerDefinitions"][0]
    assert container["image"] == one.image and "@sha256:" in container["image"]
    assert container["environment"] == [{"name": "LOG_LEVEL", "value": "info"}]
    assert container["secrets"] == [{"name": "DATABASE_URL", "valueFrom": SECRET_ARN}]
    assert container["healthCheck"]["command"][0] == "CMD-SHELL"
    assert (found["cpu"], found["memory"]) == ("512", "1024")
    assert ecs.register(one) == arn  # a retry: the same revision
    assert ecs.register(release("api", "v2", cpu=512, memory=1024)) != arn


def test_minimum_in_service_maps_to_the_deployment_configuration(aws: dict[str, Any]) -> None:
    assert (
        deployment_configuration("min_in_service", 4, keep=2).as_api()["minimumHealthyPercent"]
        == 50
    )
    assert deployment_configuration("min_in_service", 4, keep=2).maximum_percent == 100
    rolling = deployment_configuration("rolling", 4, batch=1, alarms=["api-5xx"]).as_api()
    assert (rolling["minimumHealthyPercent"], rolling["maximumPercent"]) == (100, 125)
    assert rolling["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert rolling["alarms"] == {"alarmNames": ["api-5xx"], "enable": True, "rollback": True}

    logs: list[str] = []
    ecs = target(aws, logs)
    ctx = EcsContext(ecs, release("mis", "v1"), replicas=4, log=logs.append)
    first = deploy_in_place(ctx, MinimumInService(min_in_service=2))
    assert first.previous_digest is None
    ctx.release = release("mis", "v2")
    second = deploy_in_place(ctx, MinimumInService(min_in_service=2))
    assert second.previous_digest == digest("v1") and second.digest == digest("v2")
    service = ecs.service("mis-prod")
    assert service is not None and service.digest == digest("v2")
    assert ecs.task_definition(service.task_definition)["containerDefinitions"][0]["image"] == (
        ctx.release.image
    )
    assert service.desired == 4
    assert any("minimum healthy 50 %, maximum 100 %" in line for line in logs), logs
    again = deploy_in_place(ctx, MinimumInService(min_in_service=2))  # a retry: nothing
    assert again.already_current == 4
    assert any("already runs" in line for line in logs)
    # Rolled back in place: the newest earlier revision with another image, tags following.
    back = roll_back(ctx)
    assert (back.from_digest, back.to_digest) == (digest("v2"), digest("v1"))
    service = ecs.service("mis-prod")
    assert service is not None and service.digest == digest("v1")
    definition = ecs.task_definition(service.task_definition)
    assert definition["containerDefinitions"][0]["image"] == release("mis", "v1").image
    with pytest.raises(TargetError, match="no earlier task definition revision"):
        roll_back(ctx)
    with pytest.raises(TargetError, match="deliver this environment by min_in_service"):
        deploy_rolling(ctx, Rolling(stages=(1, "100%")))  # a service of the other kind


def test_rolling_moves_task_sets_stage_by_stage(aws: dict[str, Any]) -> None:
    logs: list[str] = []
    ecs = target(aws, logs)
    shares: list[dict[str, float]] = []
    scale = ecs.scale_task_set

    def scaled(name: str, task_set: Any, percent: float) -> None:
        scale(name, task_set, percent)
        shares.append({t.external_id: t.scale for t in ecs.task_sets(name)})  # read back

    ecs.scale_task_set = scaled  # type: ignore[method-assign]
    ctx = EcsContext(ecs, release("roll", "v1"), replicas=4, log=logs.append)
    first = deploy_rolling(ctx, Rolling(stages=(1, "50%", "100%")))  # nothing runs: one step
    assert first.previous_digest is None and shares == [{digest("v1"): 100.0}]
    shares.clear()
    one = ecs.task_sets("roll-prod")
    assert [(t.external_id, t.scale, t.status) for t in one] == [(digest("v1"), 100.0, "PRIMARY")]
    ctx.release = release("roll", "v2")
    second = deploy_rolling(ctx, Rolling(stages=(1, "50%", "100%")))
    v1, v2 = digest("v1"), digest("v2")
    assert [(s[v2], s[v1]) for s in shares] == [
        (25.0, 100.0), (25.0, 75.0), (50.0, 75.0), (50.0, 50.0), (100.0, 50.0), (100.0, 0.0)
    ]  # fmt: skip
    assert second.previous_digest == v1 and len(second.steps) == 3
    now = ecs.task_sets("roll-prod")
    assert [(t.external_id, t.scale, t.status) for t in now] == [(v2, 100.0, "PRIMARY")]
    service = ecs.service("roll-prod")
    assert service is not None and service.digest == v2 and service.controller == "EXTERNAL"
    assert deploy_rolling(ctx, Rolling()).already_current == 4  # a retry: nothing
    # An alarm during a stage: the old release's task set back to 100 %, the new one removed.
    name = f"roll-{os.urandom(3).hex()}"
    aws["cloudwatch"].put_metric_alarm(
        AlarmName=name, MetricName="m", Namespace="n", Statistic="Sum", Period=60,
        EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold",
    )  # fmt: skip
    aws["cloudwatch"].set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="5xx")
    ctx.release, ctx.alarms = release("roll", "v3"), (name,)
    with pytest.raises(DeployAborted, match=f"alarm {name} in ALARM"):
        deploy_rolling(ctx, Rolling(stages=(1, "100%")))
    assert [(t.external_id, t.scale) for t in ecs.task_sets("roll-prod")] == [(v2, 100.0)]
    # Rolled back: the earlier revision's task set at 100 %, primary; the current one removed.
    ctx.alarms = ()
    back = roll_back(ctx)
    assert (back.from_digest, back.to_digest) == (v2, v1)
    now = ecs.task_sets("roll-prod")
    assert [(t.external_id, t.scale, t.status) for t in now] == [(v1, 100.0, "PRIMARY")]


def test_an_alarm_in_alarm_during_the_bake_aborts(aws: dict[str, Any]) -> None:
    cloudwatch = aws["cloudwatch"]
    name = f"api-5xx-{os.urandom(3).hex()}"
    cloudwatch.put_metric_alarm(
        AlarmName=name, MetricName="HTTPCode_Target_5XX_Count", Namespace="AWS/ApplicationELB",
        Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )  # fmt: skip
    logs: list[str] = []
    ecs = target(aws, logs)
    ctx = EcsContext(ecs, release("baked", "v1"), 2, alarms=(name,), bake_s=30, log=logs.append)
    deploy_in_place(ctx, MinimumInService(min_in_service=1))  # OK: the alarm is not firing
    cloudwatch.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="5xx")
    ctx.release = release("baked", "v2")
    with pytest.raises(DeployAborted, match=f"alarm {name} in ALARM"):
        deploy_in_place(ctx, MinimumInService(min_in_service=1))


def test_the_circuit_breaker_threshold_of_failed_tasks_aborts() -> None:
    assert [breaker_threshold(n) for n in (1, 4, 10, 1000)] == [3, 3, 5, 200]
    with moto_server(MOTO_ECS_SERVICE_RUNNING="0", MOTO_ECS_SERVICE_FAILED_TASKS="3") as url:
        failing = clients(url, *SERVICES)
        logs: list[str] = []
        ecs = target(failing, logs)
        ctx = EcsContext(ecs, release("broken", "v1"), 4, log=logs.append)
        with pytest.raises(DeployAborted, match="3 tasks failed to start, the circuit breaker"):
            deploy_in_place(ctx, MinimumInService(min_in_service=2))


def test_blue_green_by_alb_weights_then_switch_back(aws: dict[str, Any], alb: Alb) -> None:
    logs: list[str] = []
    ecs = target(aws, logs)
    router = AlbRouter(
        aws["elbv2"], alb.listener, alb.groups, test_listener_arn=alb.test_listener,
        log=logs.append,
    )  # fmt: skip
    checked: list[str] = []

    def gate(colour: str) -> None:  # the idle colour through the test listener, its targets
        router.preview(colour)
        register_targets(aws, alb.groups[colour], f"10.50.1.{len(checked) + 10}")
        health = router.target_health(colour)
        assert health and set(health.values()) == {"healthy"}, health
        checked.append(colour)

    ctx = EcsContext(
        ecs, release("bg", "v1"), 2, router=router, target_groups=alb.groups,
        health_gate=gate, log=logs.append,
    )  # fmt: skip
    settings = BlueGreen(scale_down_delay=0, post_switch_check=0)
    first = deploy_blue_green(ctx, settings)
    assert router.weights() == {"blue": 999, "green": 0} and checked == ["blue"]
    assert first.previous_digest is None
    ctx.release = release("bg", "v2")
    second = deploy_blue_green(ctx, settings)
    assert router.weights() == {"blue": 0, "green": 999}
    assert router.previewed() == "green" and checked == ["blue", "green"]
    assert second.previous_digest == digest("v1")
    blue = ecs.service("bg-prod-blue")
    assert blue is not None and blue.desired == 0  # retired after the delay
    with pytest.raises(TargetError, match="no warm colour"):
        switch_back(ctx)  # blue was scaled to 0
    # A release kept warm (a longer delay, cut short here by the sleep stub) switches back.
    ctx.release = release("bg", "v3")
    ecs.scale("bg-prod-green", 2)
    deploy_blue_green(ctx, BlueGreen(scale_down_delay=0, post_switch_check=0))
    ecs.scale("bg-prod-green", 2)  # as if still within its scale-down delay
    assert switch_back(ctx).colour == "green"
    assert router.weights() == {"blue": 0, "green": 999}
    again = deploy_blue_green(ctx, settings)  # v3 in blue is not live: it goes to blue again
    assert router.weights() == {"blue": 999, "green": 0} and again.previous_digest == digest("v2")


def test_the_alb_router_refuses_impossible_weights(aws: dict[str, Any], alb: Alb) -> None:
    router = AlbRouter(aws["elbv2"], alb.listener, alb.groups, log=lambda m: None)
    with pytest.raises(RouterError, match="from 0 to 999"):
        router.set_weights({"blue": 1000, "green": 0})
    with pytest.raises(RouterError, match="no group would serve"):
        router.set_weights({"blue": 0, "green": 0})
    with pytest.raises(RouterError, match="1 to 5 target groups"):
        AlbRouter(aws["elbv2"], alb.listener, {str(i): "arn" for i in range(6)})


def test_ab_steps_as_weights_with_stickiness_and_an_abort(aws: dict[str, Any], alb: Alb) -> None:
    logs: list[str] = []
    ecs = target(aws, logs)
    router = AlbRouter(aws["elbv2"], alb.listener, alb.groups, stickiness_s=300, log=logs.append)
    ctx = EcsContext(
        ecs, release("ab", "v1"), 2, router=router, target_groups=alb.groups, log=logs.append
    )
    deploy_blue_green(ctx, BlueGreen(scale_down_delay=0, post_switch_check=0))
    live = "blue" if router.weights()["blue"] else "green"
    ctx.release = release("ab", "v2")
    seen: list[dict[str, int]] = []
    real_bake = ecs.bake
    fire: list[str] = []  # an alarm to set in ALARM when a step's bake starts

    def bake(name: str, seconds: float, alarms: Any, poll: float = 5.0) -> None:
        seen.append(router.weights())
        for alarm in fire:
            aws["cloudwatch"].set_alarm_state(
                AlarmName=alarm, StateValue="ALARM", StateReason="5xx"
            )
        real_bake(name, seconds, alarms, poll)

    ecs.bake = bake  # type: ignore[method-assign]
    result = deploy_ab(ctx, ABTest(steps=(10, 50, 100), bake_time=0, stop_grace=0))
    other = "green" if live == "blue" else "blue"
    assert [w[other] for w in seen[:3]] == [100, 500, 999], seen
    assert router.weights()[other] == 999 and result.previous_digest == digest("v1")
    listener = aws["elbv2"].describe_listeners(ListenerArns=[alb.listener])["Listeners"][0]
    sticky = listener["DefaultActions"][0]["ForwardConfig"]["TargetGroupStickinessConfig"]
    assert sticky == {"Enabled": True, "DurationSeconds": 300}
    # An alarm during a step's bake: every request back to A, aborted.
    name = f"ab-{os.urandom(3).hex()}"
    aws["cloudwatch"].put_metric_alarm(
        AlarmName=name, MetricName="m", Namespace="n", Statistic="Sum", Period=60,
        EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold",
    )  # fmt: skip
    fire.append(name)
    ctx.release, ctx.alarms = release("ab", "v3"), (name,)
    with pytest.raises(ABTestAborted, match="aborted at 10 %"):
        deploy_ab(ctx, ABTest(steps=(10, 100), bake_time=5, stop_grace=0))
    assert router.weights() == {other: 999, live: 0}


def test_blue_green_by_dns_upserts_weights_and_keeps_the_old_colour_for_the_ttl(
    aws: dict[str, Any],
) -> None:
    route53 = aws["route53"]
    zone = route53.create_hosted_zone(Name="shop.example.test", CallerReference=os.urandom(6).hex())
    zone_id = zone["HostedZone"]["Id"]
    logs: list[str] = []
    clock = FakeTime()
    ecs = target(aws, logs, clock)
    router = Route53Router(
        route53, zone_id, "api.shop.example.test",
        {"blue": {"values": ["10.50.1.10"]}, "green": {"values": ["10.50.2.10"]}},
        ttl=60, connection_lifetime_s=30, log=logs.append,
    )  # fmt: skip
    ctx = EcsContext(ecs, release("dns", "v1"), 2, router=router, log=logs.append)
    deploy_blue_green(ctx, BlueGreen(scale_down_delay=5, post_switch_check=0))
    assert router.weights() == {"blue": 255, "green": 0}
    ctx.release = release("dns", "v2")
    deploy_blue_green(ctx, BlueGreen(scale_down_delay=5, post_switch_check=0))
    assert router.weights() == {"blue": 0, "green": 255}
    records = route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    weighted = {r["SetIdentifier"]: r["Weight"] for r in records if "SetIdentifier" in r}
    assert weighted == {"blue": 0, "green": 255}  # both kept: UPSERTs, never a DELETE
    assert sum(clock.waits) >= 90, clock.waits  # the old colour served TTL + connection lifetime
    assert any("resolvers may answer with the old records for their TTL (60s)" in m for m in logs)
    blue = ecs.service("dns-prod-blue")
    assert blue is not None and blue.desired == 0
    ctx.release = release("dns", "v1")
    ecs.scale("dns-prod-blue", 2)  # warm again: a switch back is one UPSERT batch
    started = time.monotonic()
    assert switch_back(ctx).colour == "blue" and router.weights() == {"blue": 255, "green": 0}
    print(f"switch-back by DNS (UPSERT, INSYNC, read back): {time.monotonic() - started:.3f}s")


def test_one_delivery_of_a_service_at_a_time_by_a_lock_in_ssm(aws: dict[str, Any]) -> None:
    ssm, logs = aws["ssm"], []  # type: list[str]
    cluster = f"c{os.urandom(3).hex()}"

    def lock(owner: str, wait: float = 0) -> AwsDeploymentLock:
        return AwsDeploymentLock(
            ssm, cluster, "api", "prod", owner=owner, wait=wait, log=logs.append
        )

    dead = lock("dag/run1/deploy")
    dead.__enter__()  # its worker dies holding it
    with pytest.raises(DeploymentLocked, match="owner dag/run1/deploy"), lock("dag/run2/deploy"):
        pass
    with lock("dag/run1/deploy"):  # the retry of the same task takes over its own lock
        assert any("a retry" in line for line in logs)
    assert lock("x").holder() is None  # freed when the retry ended
    # A deployment while another delivery holds the lock changes nothing.
    ecs = target(aws, logs)
    ctx = EcsContext(ecs, release("locked", "v1"), 2, log=logs.append)
    ctx.lock = AwsDeploymentLock(ssm, ecs.cluster, "locked", "prod", owner="me", log=logs.append)
    other = AwsDeploymentLock(ssm, ecs.cluster, "locked", "prod", owner="other")
    with other, pytest.raises(DeploymentLocked, match="nothing changed"):
        run_on_ecs(ctx, MinimumInService(min_in_service=1))
    assert ecs.service("locked-prod") is None
    run_on_ecs(ctx, MinimumInService(min_in_service=1))
    assert ecs.service("locked-prod") is not None and ctx.lock.holder() is None


def test_the_service_target_group_gates_minimum_in_service_and_rolling(
    aws: dict[str, Any], alb: Alb
) -> None:
    """Our own health gate on top of ECS's: every target of the service's target group healthy
    (ALB's checks) after each step; none registered (no task answers) stops the deployment."""
    for name, kind in (("gated", MinimumInService(min_in_service=1)), ("gatedr", Rolling())):
        group = aws["elbv2"].create_target_group(
            Name=f"{name}-{os.urandom(3).hex()}", Protocol="HTTP", Port=8080, VpcId=alb.vpc,
            TargetType="ip",
        )["TargetGroups"][0]["TargetGroupArn"]  # fmt: skip
        clock, logs = FakeTime(), []  # type: FakeTime, list[str]
        ecs = target(aws, logs, clock)
        gate = targets_healthy(
            aws["elbv2"], {"live": group}, 30, logs.append, sleep=clock.sleep, clock=clock.monotonic
        )
        ctx = EcsContext(
            ecs, release(name, "v1"), 2, target_groups={"live": group}, health_gate=gate,
            log=logs.append,
        )  # fmt: skip
        with pytest.raises(DeployAborted, match="live's targets not healthy after 30s: none"):
            run_on_ecs(ctx, kind)
        register_targets(aws, group, "10.50.1.30")  # as ECS does once the tasks answer
        run_on_ecs(ctx, kind)  # the retry goes on from where the first attempt stopped
        assert any("live: 1 targets healthy" in line for line in logs), logs


def quiet_alarm(aws: dict[str, Any]) -> str:
    """A CloudWatch alarm, not in ALARM: its name."""
    alarm = f"bake-{os.urandom(3).hex()}"
    aws["cloudwatch"].put_metric_alarm(
        AlarmName=alarm, MetricName="m", Namespace="n", Statistic="Sum", Period=60,
        EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold",
    )  # fmt: skip
    return alarm


def v1_live_behind_the_alb(
    aws: dict[str, Any], alb: Alb, name: str, logs: list[str]
) -> tuple[EcsContext, EcsTarget, AlbRouter, tuple[str, str]]:
    """Release v1 of ``name`` live by blue/green behind the ALB: the context, its target and
    router, and (the live colour, the other one)."""
    ecs = target(aws, logs)
    router = AlbRouter(aws["elbv2"], alb.listener, alb.groups, log=logs.append)
    ctx = EcsContext(
        ecs, release(name, "v1"), 2, router=router, target_groups=alb.groups, log=logs.append
    )
    run_on_ecs(ctx, BlueGreen(scale_down_delay=0, post_switch_check=0))
    live = "blue" if router.weights()["blue"] else "green"
    return ctx, ecs, router, (live, "green" if live == "blue" else "blue")


def bake_in_trigger(aws_url: str, handed: BakeHandedOver) -> dict[str, Any]:
    """The bake handed over, run by EcsAlarmBakeTrigger as the triggerer runs it, through an
    Airflow connection to moto; shortened to 1 s for the test."""
    from dataclasses import replace

    from kit.deploy import first_event
    from kit.moto import CREDENTIALS, aws_connection, environment

    from docker_delivery.triggers.ecs_bake import EcsAlarmBakeTrigger

    bake = replace(handed.bake, seconds=1.0)
    with environment(AIRFLOW_CONN_MOTO_BAKE=aws_connection(aws_url), **CREDENTIALS):
        return first_event(
            EcsAlarmBakeTrigger(bake, aws_conn_id="moto_bake", region=REGION, poll_s=0.2)
        )


def test_bakes_handed_over_to_the_triggerer_carry_on_or_abort_on_an_alarm(
    aws: dict[str, Any], aws_url: str, alb: Alb
) -> None:
    """A/B on ECS with its bakes handed over: the runner stops at each step's bake (the
    service's lock kept), EcsAlarmBakeTrigger watches the alarms through an Airflow connection,
    and the runner, run again with the reports, goes on to the next step, or, once an alarm
    fired, sends every request back to A."""
    alarm = quiet_alarm(aws)
    logs: list[str] = []
    ctx, ecs, router, (a, b) = v1_live_behind_the_alb(aws, alb, "abh", logs)
    ctx.release, ctx.alarms, ctx.hand_over_after = release("abh", "v2"), (alarm,), 30.0
    ctx.lock = AwsDeploymentLock(
        aws["ssm"], ecs.cluster, "abh", "prod", owner="dag/run/deploy", log=logs.append
    )
    settings = ABTest(steps=(50, 100), bake_time=30, stop_grace=0)

    with pytest.raises(BakeHandedOver) as first:
        run_on_ecs(ctx, settings)
    assert first.value.bake.key.endswith(":50%") and first.value.bake.seconds == 30
    assert router.weights()[b] == 500  # the step's weights set before the hand-over
    assert ctx.lock.holder() is not None  # kept while the bake runs elsewhere
    passed = bake_in_trigger(aws_url, first.value)
    assert passed["verdict"] == "passed" and passed["figures"]["alarms"] == [alarm]
    ctx.baked = {passed["key"]: passed}
    with pytest.raises(BakeHandedOver) as second:  # the lock is this owner's: taken over
        run_on_ecs(ctx, settings)
    assert second.value.bake.key.endswith(":100%") and router.weights()[b] == 999
    aws["cloudwatch"].set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="5xx")
    failed = bake_in_trigger(aws_url, second.value)
    assert failed["verdict"] == "failed" and failed["figures"]["firing"] == [alarm]
    ctx.baked[failed["key"]] = failed
    with pytest.raises(ABTestAborted, match=f"aborted at 100 %: alarm {alarm} in ALARM"):
        run_on_ecs(ctx, settings)
    assert router.weights() == {a: 999, b: 0}
    assert ctx.lock.holder() is None  # the delivery ended: the lock is free


def test_blue_green_bakes_handed_over_resume_after_the_switch_or_switch_back(
    aws: dict[str, Any], aws_url: str, alb: Alb
) -> None:
    """Blue/green on ECS: the post-switch check and the old colour's delay before it is scaled
    to 0 are handed over in turn; run again with their reports, the runner carries on after the
    switch it made (the old colour warm), or switches back when an alarm fired."""
    alarm = quiet_alarm(aws)
    logs: list[str] = []
    ctx, ecs, router, (old, new) = v1_live_behind_the_alb(aws, alb, "bgh", logs)
    settings = BlueGreen(scale_down_delay=30, post_switch_check=30)
    ctx.release, ctx.alarms, ctx.hand_over_after = release("bgh", "v2"), (alarm,), 30.0
    reports = []
    while True:
        try:
            result = run_on_ecs(ctx, settings)
            break
        except BakeHandedOver as handed:
            reports.append(bake_in_trigger(aws_url, handed))
            ctx.baked[reports[-1]["key"]] = reports[-1]
    assert [r["key"].rsplit(":", 1)[1] for r in reports] == ["switched", "retire"]
    assert {r["verdict"] for r in reports} == {"passed"}
    assert router.weights() == {new: 999, old: 0} and result.previous_digest == digest("v1")
    assert ecs.service(f"bgh-prod-{old}").desired == 0  # scaled to 0 after its delay
    assert "switched to " + new + " before; carrying on from its bake" in "\n".join(logs)
    # The next release: an alarm fires during its post-switch check: back to the warm colour.
    ctx.release, ctx.baked = release("bgh", "v3"), {}
    with pytest.raises(BakeHandedOver) as handed:
        run_on_ecs(ctx, settings)
    assert router.weights() == {old: 999, new: 0}  # switched to v3 before the check
    aws["cloudwatch"].set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="5xx")
    failed = bake_in_trigger(aws_url, handed.value)
    ctx.baked = {failed["key"]: failed}
    with pytest.raises(DeployAborted, match=f"alarm {alarm} in ALARM"):
        run_on_ecs(ctx, settings)
    assert router.weights() == {new: 999, old: 0}  # v2 serves again
