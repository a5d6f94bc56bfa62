"""A pipeline whose environment runs on a remote engine (``engine: <conn_id>``), run in Airflow
against the bed's second machine: every task of the environment reaches that engine through the
``docker_engine`` connection, and the health check and the smoke test call the router on the
engine's host, read from the connection when the task runs (the ``engine_host`` macro)."""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kit.pipeline import one_stage_pipeline, register, states
from kit.remote import REMOTE_CONN_ID

from docker_delivery.images.ref import ImageRef
from docker_delivery.ledger import Ledger
from docker_delivery.targets import EngineTarget

pytestmark = pytest.mark.timeout(900)

SERVICE_PREFIX = "ddrm"


def pipeline(bed: Any, service: str, env: str, ledger: Path) -> dict[str, Any]:
    dag_id = f"dd_test_remote_{service}"
    return one_stage_pipeline(bed, service, env, ledger, dag_id=dag_id, engine=REMOTE_CONN_ID)


def test_a_stage_on_a_remote_engine_deploys_checks_and_records_there(
    bed: Any,
    airflow_db: None,
    docker_client: Any,
    remote_engine: Any,
    demo_images: dict[str, str],
    remote_service: str,
    tmp_path: Path,
) -> None:
    from docker_delivery.templates import delivery_pipeline

    env = f"r{uuid.uuid4().hex[:6]}"  # the tag's name: this test's own in the shared repository
    data = pipeline(bed, remote_service, env, tmp_path / "ledger.db")
    port = data["environments"][env]["router"]["port"]
    dag = delivery_pipeline(data)
    register(dag)

    def deliver(image: str, choice: str) -> tuple[str, dict[str, tuple[str, int]]]:
        run = dag.test(run_conf={"image": image, f"deploy_{env}": choice})
        return str(run.state), states(dag.dag_id, run.run_id)

    def serving() -> str:
        url = f"http://{bed.remote_host}:{port}/version"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return str(json.loads(answer.read())["digest"])

    v1, v2 = ImageRef.parse(demo_images["v1"]), ImageRef.parse(demo_images["v2"])
    try:
        state, got = deliver(demo_images["v1"], "min_in_service")
        assert state == "success", got
        assert serving() == v1.digest
        state, got = deliver(demo_images["v2"], "blue_green")
        assert state == "success", got
        for task in ("deploy_blue_green", "verify_preview", "switch", "verify_health"):
            assert got[f"{env}.{task}"][0] == "success", (task, got)
        assert got[f"{env}.smoke_version"][0] == "success", got
        assert serving() == v2.digest
        running = EngineTarget(remote_engine).instances(remote_service, env)
        assert {i.digest for i in running} == {v2.digest} and len(running) == 2
        assert EngineTarget(docker_client).instances(remote_service, env) == []  # none here
        outcomes = [(r.digest, r.outcome) for r in Ledger(tmp_path / "ledger.db").records()]
        assert outcomes == [(v1.digest, "success"), (v2.digest, "success")], outcomes
    finally:
        from kit.cleanup import remove_service

        remove_service(remote_engine, remote_service, env)
