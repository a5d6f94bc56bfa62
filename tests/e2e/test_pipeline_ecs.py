"""The example pipeline dags/pipelines/ecs.yaml run in Airflow (``dag.test()``) against moto's
server: a release built before (param ``image``) promoted on ECR through its API, deployed to
ECS staging by the service's rolling deployment, then to production by blue/green behind an
ALB (the idle colour checked on the test listener, one listener change), recorded in the ledger.
A second release goes to the other colour and the first colour is scaled to 0.

The spec is the example's, given this moto's resources through its ${NAME} variables, with what
moto cannot do taken out: its smoke test (nothing answers HTTP behind moto's load balancer),
the approval (``dag.test()`` answers no human), and the waits shortened. moto's ECS registers no
targets in the target groups: the test registers them, as ECS would.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest
import yaml
from kit.moto import ACCOUNT, REGION, clients, environment
from kit.pipeline import register, states

from docker_delivery.ledger import Ledger

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "dags" / "pipelines" / "ecs.yaml"
REPOSITORY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/shop/api"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def pushed(ecr: Any, text: str) -> str:
    """An image as a build pushes it to ECR; its digest-pinned reference."""
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(f"c{text}".encode()).hexdigest(),
                "size": 100,
            },
            "layers": [],
        }
    )
    digest = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    ecr.put_image(
        repositoryName="shop/api",
        imageManifest=manifest,
        imageManifestMediaType=OCI_MANIFEST,
        imageTag=text,
        imageDigest=digest,
    )
    return f"{REPOSITORY}@{digest}"


@pytest.fixture(scope="module")
def aws(moto: str) -> Iterator[dict[str, Any]]:
    """moto's resources the example names, and the variables that name them."""
    c = clients(moto, "ec2", "elbv2", "ecs", "ecr", "cloudwatch")
    c["ecr"].create_repository(repositoryName="shop/api")
    c["ecs"].create_cluster(clusterName="shop")
    vpc = c["ec2"].create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        c["ec2"].create_subnet(VpcId=vpc, CidrBlock=f"10.60.{i}.0/24", AvailabilityZone=az)[
            "Subnet"
        ]["SubnetId"]
        for i, az in ((1, f"{REGION}a"), (2, f"{REGION}b"))
    ]
    group = c["ec2"].create_security_group(GroupName="shop", Description="shop", VpcId=vpc)
    lb = c["elbv2"].create_load_balancer(Name="shop-e2e", Subnets=subnets)["LoadBalancers"][0]
    groups = {}
    for colour in ("blue", "green"):
        groups[colour] = c["elbv2"].create_target_group(
            Name=f"shop-e2e-{colour}", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip"
        )["TargetGroups"][0]["TargetGroupArn"]
        c["elbv2"].register_targets(  # as ECS does for the colour's tasks
            TargetGroupArn=groups[colour], Targets=[{"Id": f"10.60.1.{len(groups)}", "Port": 8080}]
        )
    listeners = [
        c["elbv2"].create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTP",
            Port=port,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": groups["blue"]}],
        )["Listeners"][0]["ListenerArn"]
        for port in (80, 8080)
    ]
    for env in ("staging", "production"):
        c["cloudwatch"].put_metric_alarm(
            AlarmName=f"shop-api-{env}-5xx", MetricName="HTTPCode_Target_5XX_Count",
            Namespace="AWS/ApplicationELB", Statistic="Sum", Period=60, EvaluationPeriods=1,
            Threshold=5, ComparisonOperator="GreaterThanThreshold",
        )  # fmt: skip
    names = {
        "DOCKER_DELIVERY_ECR_REPOSITORY": REPOSITORY,
        "DOCKER_DELIVERY_AWS_REGION": REGION,
        "DOCKER_DELIVERY_ECS_CLUSTER": "shop",
        "DOCKER_DELIVERY_ECS_SUBNET": subnets[0],
        "DOCKER_DELIVERY_ECS_SECURITY_GROUP": group["GroupId"],
        "DOCKER_DELIVERY_ALB_LISTENER": listeners[0],
        "DOCKER_DELIVERY_ALB_TEST_LISTENER": listeners[1],
        "DOCKER_DELIVERY_ALB_BLUE": groups["blue"],
        "DOCKER_DELIVERY_ALB_GREEN": groups["green"],
    }
    with environment(**names):
        yield {**c, "listener": listeners[0], "groups": groups}


START = pendulum.datetime(2025, 1, 1, tz="UTC")


def the_example(ledger: Path) -> dict[str, Any]:
    """The example spec, less what moto cannot do (see the module)."""
    data = yaml.safe_load(EXAMPLE.read_text())
    p = data["pipeline"]
    p["dag_id"] = "dd_test_deliver_ecs"
    p["mode"] = "continuous_deployment"
    p["ledger"] = str(ledger)
    p["build"]["context"] = str(ROOT / "dags" / "demo_app")
    production = p["stages"][1]
    del production["approval"], production["verify"]
    production["deploy"].update(scale_down_delay=0, post_switch_check=0)
    data["environments"]["staging"]["aws"]["bake"] = 0
    return data


def test_the_ecs_example_delivers_to_staging_then_by_blue_green_to_production(
    airflow_db: None, aws: dict[str, Any], tmp_path: Path
) -> None:
    from docker_delivery.templates import delivery_pipeline

    data = the_example(tmp_path / "ledger.db")
    dag = delivery_pipeline(data)
    register(dag)
    v1, v2 = pushed(aws["ecr"], "v1"), pushed(aws["ecr"], "v2")

    run = dag.test(run_conf={"image": v1})
    got = states(dag.dag_id, run.run_id)
    assert str(run.state) == "success", got
    assert got["build"][0] == "skipped" and got["production.deploy"][0] == "success", got

    def tags() -> dict[str, str]:
        found = aws["ecr"].describe_images(repositoryName="shop/api")["imageDetails"]
        return {t: d["imageDigest"] for d in found for t in d.get("imageTags", [])}

    def weights() -> list[tuple[str, int]]:
        listener = aws["elbv2"].describe_listeners(ListenerArns=[aws["listener"]])["Listeners"][0]
        names = {arn: name for name, arn in aws["groups"].items()}
        forward = listener["DefaultActions"][0]["ForwardConfig"]["TargetGroups"]
        return sorted((names[g["TargetGroupArn"]], g["Weight"]) for g in forward)

    def service(name: str) -> dict[str, Any]:
        found = aws["ecs"].describe_services(cluster="shop", services=[name], include=["TAGS"])
        return dict(found["services"][0])

    digest1, digest2 = v1.split("@")[1], v2.split("@")[1]
    assert tags()["staging"] == digest1 and tags()["production"] == digest1
    staging = service("shop-api-staging")
    assert staging["desiredCount"] == 2
    assert staging["deploymentController"] == {"type": "EXTERNAL"}  # rolling: task sets
    definition = aws["ecs"].describe_task_definition(taskDefinition=staging["taskDefinition"])
    container = definition["taskDefinition"]["containerDefinitions"][0]
    assert container["image"] == v1
    assert container["environment"] == [{"name": "LOG_LEVEL", "value": "info"}]
    assert container["secrets"][0]["name"] == "DATABASE_URL"
    assert service("shop-api-production-blue")["desiredCount"] == 4
    assert weights() == [("blue", 999), ("green", 0)]

    run = dag.test(run_conf={"image": v2})
    got = states(dag.dag_id, run.run_id)
    assert str(run.state) == "success", got
    assert tags()["production"] == digest2 and tags()["staging"] == digest2
    sets = aws["ecs"].describe_task_sets(cluster="shop", service="shop-api-staging")["taskSets"]
    assert [(s["externalId"], s["scale"]["value"], s["status"]) for s in sets] == [
        (digest2, 100.0, "PRIMARY")
    ]  # the stages [1, 100%] done, the old release's task set gone
    assert weights() == [("blue", 0), ("green", 999)]
    assert service("shop-api-production-green")["desiredCount"] == 4
    assert service("shop-api-production-blue")["desiredCount"] == 0  # the old colour retired

    records = Ledger(tmp_path / "ledger.db").records()
    assert [(r.environment, r.outcome, r.digest) for r in records] == [
        ("staging", "success", digest1),
        ("production", "success", digest1),
        ("staging", "success", digest2),
        ("production", "success", digest2),
    ]
    assert records[-1].previous_digest == digest1
    # RollbackOperator on ECS: staging's previous revision serves again, and its tag follows.
    from airflow.sdk import DAG

    from docker_delivery.operators.deploy import RollbackOperator
    from docker_delivery.templates.pipeline_spec import load_pipeline

    spec = load_pipeline(data)
    with DAG("dd_test_ecs_rollback", schedule=None, start_date=START) as undo:
        RollbackOperator(
            task_id="rollback",
            service=spec.service,
            environment="staging",
            spec=spec.service_dict(),
            repository=spec.repository,
            docker_conn_id=spec.pipeline.docker_conn_id,
        )
    register(undo)
    run = undo.test()
    assert str(run.state) == "success", states(undo.dag_id, run.run_id)
    assert tags()["staging"] == digest1 and tags()["production"] == digest2
    sets = aws["ecs"].describe_task_sets(cluster="shop", service="shop-api-staging")["taskSets"]
    assert [(s["externalId"], s["status"]) for s in sets] == [(digest1, "PRIMARY")]
