"""A rolling deployment held after its first stage, answered by humans, in Airflow's own services.

Airflow's API server, scheduler (LocalExecutor), DAG processor and triggerer run as processes of
this machine (tests/kit/airflow_services.py) on a database of their own in the bed's PostgreSQL.
The pipeline rolls the demo app out on the bed's Swarm in three stages, held after the first
(``hold_after: [1]``), pausing 30 s between the others in the triggerer. The first run (v1) is
held, then continued through the HITL API as the UI's button does, and completes. The second run
(v2) is held with v1 and v2 both serving; while it waits no task runs and the pool's slots are
all free; ``docker-delivery abort`` answers it (through the same API, as a user); v1 serves at
full size again, v2 is gone, the run fails, and the ledger records the rollout as rolled back,
saying who aborted it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kit.airflow_services import airflow_services, fresh_database
from kit.pipeline import one_stage_pipeline, pipeline_dag_file
from kit.remote import SWARM_CONN_ID, bed_connections

from docker_delivery.images.ref import ImageRef
from docker_delivery.ledger import Ledger
from docker_delivery.targets import SwarmTarget

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

SERVICE_PREFIX = "ddhold"
ENV = "staging"
HOLD = f"{ENV}.hold_stage_1"
CLI = str(Path(sys.executable).parent / "docker-delivery")


def held_pipeline(bed: Any, service: str, ledger: Path) -> dict[str, Any]:
    data = one_stage_pipeline(
        bed, service, ENV, ledger, dag_id=f"dd_test_hold_{service}", engine=SWARM_CONN_ID
    )
    data["environments"][ENV].update(target="swarm", replicas=3)
    data["defaults"]["router"]["slots"] = 6  # old and new side by side, an infra change too
    stage = data["pipeline"]["stages"][0]
    stage["deploy"] = {"type": "rolling", "stages": [1, 2, 3], "hold_after": [1], "pause": 30}
    del stage["alternatives"]
    return data


def serving(port: int, n: int = 30) -> set[str]:
    seen = set()
    for _ in range(n):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=5) as answer:
            seen.add(str(json.loads(answer.read())["digest"]))
    return seen


def test_a_rolling_deployment_held_after_its_first_stage_is_continued_then_aborted(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    data = held_pipeline(bed, service, ledger)
    port = data["environments"][ENV]["router"]["port"]
    dags = pipeline_dag_file(tmp_path / "dags", "held", data).parent
    dag_id = data["pipeline"]["dag_id"]
    v1, v2 = ImageRef.parse(demo_images["v1"]), ImageRef.parse(demo_images["v2"])
    home, connections = tmp_path / "home", bed_connections(bed)  # the Swarm manager's, node 2's
    connections["AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"] = "True"  # waits in the triggerer
    with (
        fresh_database(bed) as url,
        airflow_services(home, dags=dags, database_url=url, env=connections) as af,
    ):
        af.wait_dag(dag_id, timeout=180)
        # v1: held after stage 1 of 2, continued through the HITL API.
        first = af.trigger(dag_id, conf={"image": demo_images["v1"]})
        af.wait_parked(dag_id, first, HOLD, timeout=300)
        assert serving(port) == {v1.digest}
        answered = af.answer(dag_id, first, HOLD, "Continue")
        assert answered["responded_by"]["name"] == af.user, answered
        # Stage 2, then the pause in the triggerer: the deployment lock stays the task's.
        af.wait_task(dag_id, first, f"{ENV}.deploy", {"deferred"}, timeout=300)
        lock = docker_client.containers.get(f"dd-lock-{service}-{ENV}")
        assert lock.labels["io.docker-delivery.lock-owner"] == f"{dag_id}/{first}/{ENV}.deploy"
        assert af.wait_run(dag_id, first, {"success", "failed"}, timeout=300) == "success", af.tail(
            "scheduler"
        )
        assert af.task_state(dag_id, first, f"{ENV}.abort") == "skipped"
        assert af.task_state(dag_id, first, f"{ENV}.deploy") == "success"
        log = json.dumps(
            af.call(
                "GET",
                f"/dags/{dag_id}/dagRuns/{first}/taskInstances/{ENV}.deploy/logs/1",
                params={"full_content": True},
            )
        )  # stage 2, the pause between stages 2 and 3 in the triggerer, then stage 3
        assert "pausing 30s before stage 3, in the triggerer" in log, log[-3000:]
        assert "Pausing task as DEFERRED" in log and "stage 3/3" in log, log[-3000:]
        # v2: held with both releases serving; nothing runs, no slot is taken while it waits.
        second = af.trigger(dag_id, conf={"image": demo_images["v2"]})
        af.wait_parked(dag_id, second, HOLD, timeout=300)
        assert serving(port, 60) == {v1.digest, v2.digest}
        time.sleep(3)  # held a while: still nothing runs
        slots = af.running_slots()
        print("default pool while held:", slots)
        assert slots["running_slots"] == 0 and slots["queued_slots"] == 0, slots
        running = af.call(
            "GET", f"/dags/{dag_id}/dagRuns/~/taskInstances", params={"state": "running"}
        )
        assert running["total_entries"] == 0, running
        # Aborted from the command line: the CLI answers the hold through the same API.
        env = {
            **os.environ,
            "DOCKER_DELIVERY_AIRFLOW_URL": af.url,
            "DOCKER_DELIVERY_AIRFLOW_USER": af.user,
            "DOCKER_DELIVERY_AIRFLOW_PASSWORD": af.password,
        }
        cli = subprocess.run(
            [CLI, "abort", service, ENV], env=env, capture_output=True, text=True, timeout=60
        )
        assert cli.returncode == 0, cli.stderr
        assert f"Abort: Continue the rollout of {service} in {ENV}?" in cli.stdout
        assert f"as {af.user}" in cli.stdout
        assert af.wait_run(dag_id, second, {"success", "failed"}, timeout=300) == "failed"
        states = {
            task: af.task_state(dag_id, second, f"{ENV}.{task}")
            for task in ("abort", "deploy", "verify_health", "promote", "record")
        }
        assert states == {
            "abort": "success",
            "deploy": "skipped",
            "verify_health": "skipped",
            "promote": "skipped",
            "record": "failed",
        }, states
        again = subprocess.run(
            [CLI, "continue", service, ENV], env=env, capture_output=True, text=True, timeout=60
        )
        assert again.returncode == 2 and "no held rollout" in again.stderr, again.stderr
    # v1 at full size, alone; v2's service gone.
    assert serving(port) == {v1.digest}
    services = SwarmTarget(docker_client).services(service, ENV)
    assert [s.digest for s in services] == [v1.digest]
    assert not docker_client.containers.list(all=True, filters={"name": f"dd-lock-{service}-"})
    assert len(SwarmTarget(docker_client).tasks(services[0].name)) == 3
    records = {r.run_id: r for r in Ledger(ledger).records()}
    assert records[first].outcome == "success"
    assert f"Continue after stage 1 of 3 by {af.user}" in records[first].detail
    aborted = records[second]
    assert (aborted.outcome, aborted.digest, aborted.previous_digest) == (
        "rolled_back",
        v2.digest,
        v1.digest,
    )
    assert f"Abort after stage 1 of 3 by {af.user}" in aborted.detail, aborted.detail
