"""The environment tag names what passed there, in a pipeline run in Airflow against the bed.

``<repository>:<env>`` moved at the start of each stage, before the deployment and outside its
lock, and never moved back: a release that failed its health gate (minimum in-service or
blue/green), or a delivery that lost the lock to another one, left the tag on a digest that never
served, and emitted the promotion's Asset event for it. The stage now moves the tag last, once its
deployment and checks have passed, under the lock, to what serves. The ledger says the same: a
failed gate is a failed deployment, a lost lock is ``not_deployed`` (nothing changed).
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kit.images import demo_variant
from kit.pipeline import one_stage_pipeline, register, states

from docker_delivery.images.ref import ImageRef
from docker_delivery.images.registry import RegistryClient
from docker_delivery.ledger import Ledger

pytestmark = pytest.mark.timeout(900)

SERVICE_PREFIX = "ddtag"


@pytest.fixture(scope="module")
def unhealthy_image(bed: Any, docker_client: Any, demo_images: dict[str, str]) -> str:
    """A release of the demo app that never passes its health check (FAIL_HEALTH baked in)."""
    return demo_variant(bed, docker_client, demo_images["v2"], "unhealthy", "ENV FAIL_HEALTH=1")


def pipeline(bed: Any, service: str, env: str, ledger: Path) -> dict[str, Any]:
    data = one_stage_pipeline(bed, service, env, ledger, dag_id=f"dd_test_tag_{service}")
    data["defaults"]["router"]["address"] = "127.0.0.1"  # this machine's loopback only
    return data


def asset_events(name: str) -> int:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return int(
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == name)
            .count()
        )


@pytest.fixture
def stage(
    bed: Any, airflow_db: None, docker_client: Any, service: str, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    from docker_delivery.templates import delivery_pipeline

    env = f"t{uuid.uuid4().hex[:6]}"  # the tag's name: this test's own in the shared repository
    data = pipeline(bed, service, env, tmp_path / "ledger.db")
    dag = delivery_pipeline(data)
    register(dag)
    yield {
        "dag": dag,
        "env": env,
        "ledger": Ledger(tmp_path / "ledger.db"),
        "port": data["environments"][env]["router"]["port"],
        "asset": f"{data['image']}:{env}",
    }
    for container in docker_client.containers.list(
        ignore_removed=True, all=True, filters={"name": f"-{service}-{env}"}
    ):
        container.remove(force=True)


def test_the_environment_tag_moves_only_for_a_release_that_passed(
    bed: Any,
    docker_client: Any,
    demo_images: dict[str, str],
    unhealthy_image: str,
    service: str,
    stage: dict[str, Any],
) -> None:
    dag, env, ledger = stage["dag"], stage["env"], stage["ledger"]
    v1, v2 = ImageRef.parse(demo_images["v1"]), ImageRef.parse(demo_images["v2"])
    tag = v1.without_tag().with_tag(env)

    def deliver(
        image: str, choice: str = "min_in_service"
    ) -> tuple[str, dict[str, tuple[str, int]]]:
        # every param given: dag.test() keeps a run's conf in the DAG's params for the next
        run = dag.test(run_conf={"image": image, f"deploy_{env}": choice})
        return str(run.state), states(dag.dag_id, run.run_id)

    def tagged() -> str:
        with RegistryClient(bed.registry) as registry:
            return registry.resolve(tag)

    def serving() -> str:
        url = f"http://127.0.0.1:{stage['port']}/version"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return str(json.loads(answer.read())["digest"])

    state, got = deliver(demo_images["v1"])
    assert state == "success", got
    assert tagged() == v1.digest and serving() == v1.digest
    assert asset_events(stage["asset"]) == 1

    # A release that fails its health gate, by minimum in-service and by blue/green.
    for choice in ("min_in_service", "blue_green"):
        state, got = deliver(unhealthy_image, choice)
        deploy_task = f"{env}.deploy" + ("" if choice == "min_in_service" else "_blue_green")
        assert state == "failed" and got[deploy_task][0] == "failed", got
        assert got[f"{env}.promote"][0] == "upstream_failed", got
        assert tagged() == v1.digest and serving() == v1.digest  # the tag names what serves
    assert asset_events(stage["asset"]) == 1  # no promotion event for a release that never served

    # A delivery that loses the lock to another one (held here as another delivery would).
    lock = docker_client.containers.create(
        demo_images["v1"],
        name=f"dd-lock-{service}-{env}",
        command=["true"],
        labels={
            "io.docker-delivery.managed": "true",
            "io.docker-delivery.role": "lock",
            "io.docker-delivery.lock-owner": "another_dag/run/deploy",
            "io.docker-delivery.lock-since": "2026-12-07T00:00:00.000+00:00",
        },
    )
    try:
        state, got = deliver(demo_images["v2"])
    finally:
        lock.remove(force=True)
    assert state == "failed" and got[f"{env}.apply_infra"][0] == "failed", sorted(got.items())
    assert tagged() == v1.digest and serving() == v1.digest
    assert asset_events(stage["asset"]) == 1

    state, got = deliver(demo_images["v2"])  # the same release, once nothing is in its way
    assert state == "success", got
    assert tagged() == v2.digest and serving() == v2.digest
    assert asset_events(stage["asset"]) == 2

    outcomes = [(r.digest, r.outcome, r.previous_digest) for r in ledger.records()]
    bad = str(ImageRef.parse(unhealthy_image).digest)
    assert outcomes == [
        (v1.digest, "success", None),
        (bad, "failed", None),  # a deploy that failed returned nothing to read it from
        (bad, "failed", None),
        (v2.digest, "not_deployed", None),
        (v2.digest, "success", v1.digest),
    ], outcomes
    not_deployed = ledger.records()[3]
    assert "another delivery (another_dag/run/deploy" in not_deployed.detail
