"""An A/B test whose step bakes run in Airflow's triggerer, in Airflow's own services.

Airflow's API server, scheduler (LocalExecutor), DAG processor and triggerer run as processes of
this machine (tests/kit/airflow_services.py) on a database of their own in the bed's PostgreSQL,
with ``[operators] default_deferrable`` on, as the compose stack runs. The pipeline's first run
deploys v1 (minimum in-service); the second, under load, chooses the A/B test for v2 (steps 50 and
100 %, 30 s bakes): each step's weights are set by the task, which defers; the bake runs in the
triggerer (ABBakeTrigger) while no task runs and no worker slot is taken; the task resumes with
the verdict, the last one promotes B. No request fails. The third run goes back to v1 by
blue/green with a 40 s post-switch check: 10 s watched by the switch task, the rest in the
triggerer (PostSwitchCheckTrigger).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from kit.airflow_services import airflow_services, fresh_database
from kit.deploy import LOOPBACK
from kit.loadgen import LoadGenerator
from kit.pipeline import one_stage_pipeline, pipeline_dag_file
from kit.remote import SWARM_CONN_ID, bed_connections

from docker_delivery.images.ref import ImageRef
from docker_delivery.ledger import Ledger
from docker_delivery.strategies.state import list_running

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

SERVICE_PREFIX = "ddbake"
ENV = "staging"
DEPLOY = f"{ENV}.deploy_ab"
SWITCH = f"{ENV}.switch"
MIX = {"get": 0.6, "get_new_conn": 0.2, "post": 0.2}


def test_an_ab_test_bakes_its_steps_in_the_triggerer_holding_no_worker_slot(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    data = one_stage_pipeline(
        bed, service, ENV, ledger, dag_id=f"dd_test_bake_{service}", engine=SWARM_CONN_ID
    )
    stage = data["pipeline"]["stages"][0]
    stage["alternatives"] = [
        {"type": "ab", "steps": [50, 100], "bake_time": 30, "min_requests": 5, "poll": 1},
        {"type": "blue_green", "scale_down_delay": 0, "post_switch_check": 40},
    ]
    port = data["environments"][ENV]["router"]["port"]
    dags = pipeline_dag_file(tmp_path / "dags", "bake", data).parent
    dag_id = data["pipeline"]["dag_id"]
    v1 = ImageRef.parse(demo_images["v1"])
    connections = bed_connections(bed)
    connections["AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"] = "True"
    pools: list[dict[str, int]] = []
    with (
        fresh_database(bed) as url,
        airflow_services(tmp_path / "home", dags=dags, database_url=url, env=connections) as af,
    ):
        af.wait_dag(dag_id, timeout=180)
        first = af.trigger(dag_id, conf={"image": demo_images["v1"]})
        assert af.wait_run(dag_id, first, {"success", "failed"}, timeout=300) == "success", af.tail(
            "scheduler"
        )
        with LoadGenerator(
            f"http://{LOOPBACK}:{port}/", rate=40, mix=MIX, cookies=False, max_duration=600
        ) as load:
            second = af.trigger(dag_id, conf={"image": demo_images["v2"], f"deploy_{ENV}": "ab"})
            # While the task is deferred (each bake): no task runs and no slot is taken. A look
            # counts when the task was deferred both before and after it (not resuming meanwhile).
            state, deferrals = None, 0
            while state not in ("success", "failed"):
                was, state = state, af.task_state(dag_id, second, DEPLOY)
                if state == "deferred":
                    if was != "deferred":
                        deferrals += 1
                        load.mark(f"baking {deferrals}")
                    running = af.call(
                        "GET",
                        f"/dags/{dag_id}/dagRuns/~/taskInstances",
                        params={"state": "running"},
                    )
                    look = {**af.running_slots(), "running_tasks": running["total_entries"]}
                    if af.task_state(dag_id, second, DEPLOY) == "deferred":
                        pools.append(look)
                time.sleep(0.5)
            assert af.wait_run(dag_id, second, {"success", "failed"}, timeout=300) == "success", (
                af.tail("triggerer")
            )
            load.mark("promoted")
            time.sleep(1.5)
        path = f"/dags/{dag_id}/dagRuns/{second}/taskInstances/{DEPLOY}"
        result = af.call("GET", f"{path}/xcomEntries/return_value")["value"]
        log = json.dumps(af.call("GET", f"{path}/logs/1", params={"full_content": True}))
        # Blue/green back to v1: the switch watches 10 s itself, the other 30 s in the triggerer.
        third = af.trigger(dag_id, conf={"image": demo_images["v1"], f"deploy_{ENV}": "blue_green"})
        af.wait_task(dag_id, third, SWITCH, {"deferred"}, timeout=300)
        switch_deferred = af.running_slots()
        assert af.wait_run(dag_id, third, {"success", "failed"}, timeout=300) == "success", af.tail(
            "triggerer"
        )
        path = f"/dags/{dag_id}/dagRuns/{third}/taskInstances/{SWITCH}"
        switched = af.call("GET", f"{path}/xcomEntries/return_value")["value"]
        switch_log = json.dumps(af.call("GET", f"{path}/logs/1", params={"full_content": True}))
    report = load.report
    print(report.summary())
    looks = {json.dumps(p, sort_keys=True) for p in pools}
    print(f"default pool while baking, {len(pools)} looks: {sorted(looks)}")
    print("steps:", result["steps"], "figures:", result["figures"])
    looks = re.findall(r"first look ([0-9.]+)s after it began", log + switch_log)
    print("the triggers' first looks, seconds after the weights were set or the switch:", looks)
    assert looks, (log + switch_log)[-3000:]  # the triggers' log lines reach the task's log
    assert len(pools) >= 20, pools  # two bakes of 30 s, looked at every 0.5 s or so
    for pool in pools:
        assert pool["running_tasks"] == 0 and pool["running_slots"] == 0, pool
        assert pool["occupied_slots"] == 0 and pool["deferred_slots"] == 1, pool
    assert report.failed == 0, report.failures
    assert {"v1", "v2"} <= set(report.by_phase["baking 1"])  # B took its share while baking
    assert set(report.by_phase["promoted"]) - {"total", "failed"} == {"v2"}
    assert result["promoted"] and [f["step"] for f in result["figures"]] == [1, 2]
    assert all(f["verdict"] == "passed" and f["b_requests"] >= 5 for f in result["figures"])
    assert [s for s in result["steps"] if s.startswith("step ") and "% to B" in s] == [
        "step 1/2: 50% to B",
        "step 2/2: 100% to B",
    ]
    assert log.count("Pausing task as DEFERRED") == 2, log[-3000:]
    assert "step 1 (50%) passed: B" in log and "promoted: public -> live" in log, log[-3000:]
    records = {r.run_id: r for r in Ledger(ledger).records()}
    assert (records[second].outcome, records[second].deployment_type) == ("success", "ab")
    assert records[second].previous_digest == v1.digest
    print("default pool while the switch was checked:", switch_deferred, switched["figures"])
    assert switch_deferred["running_slots"] == 0 and switch_deferred["deferred_slots"] == 1
    assert "10s of 40s passed here" in switch_log and "Pausing task as DEFERRED" in switch_log
    assert "post-switch check of blue passed" in switch_log, switch_log[-3000:]
    assert switched["figures"]["seconds"] >= 40 and switched["figures"]["5xx"] == 0
    running_now = list_running(docker_client, service, ENV, 8080)
    assert {r.digest for r in running_now} == {v1.digest} and len(running_now) == 2
    assert (records[third].outcome, records[third].deployment_type) == ("success", "blue_green")
