"""The two-environment example pipeline (dags/deliver_two_envs.py) runs in Airflow against the
bed: built once, tested in parallel in the image, delivered to staging by a rolling deployment
on Swarm, approved by a human (this test, answering the approval as Airflow's REST API does),
delivered to production by blue/green (on Swarm too); both environments then serve the new
digest.

``airflow dags test`` runs the DAG in a subprocess. Airflow 3.3 parks an approval task in the
``awaiting_input`` state and ``dag.test()`` waits for an answer recorded from outside; the test
records it with the code of the REST endpoint behind the UI's Approve button
(``PATCH .../taskInstances/{task_id}/{map_index}/hitlDetails``): the response on the
``hitl_detail`` row, then ``handle_event_submit`` to resume the task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kit.approval import APPROVER, answer_approval
from kit.cleanup import remove_containers
from kit.remote import SWARM_CONN_ID, bed_connections

pytestmark = pytest.mark.timeout(1200)

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "deliver_two_envs"
SERVICE = "demo-two-envs"
GATE = "approve_production"
URLS = {"staging": "http://127.0.0.1:18181/", "production": "http://127.0.0.1:18182/"}


def remove_service(docker_client: Any) -> None:
    """Everything of the example's service, in both environments: a clean start and end."""
    label = f"io.docker-delivery.service={SERVICE}"
    for svc in docker_client.services.list(filters={"label": label}):
        svc.remove()
    remove_containers(docker_client, label=label)  # Swarm may remove its tasks meanwhile
    remove_containers(docker_client, name=f"-{SERVICE}-")
    deadline = time.monotonic() + 60
    for env in ("staging", "production"):
        while True:
            try:
                for network in docker_client.networks.list(names=[f"dd-{SERVICE}-{env}"]):
                    network.remove()
                break
            except Exception:  # Swarm tasks still detaching from the network
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def deliver(bed: Any, revision: str, choice: str = "Approve") -> dict[str, Any]:
    """One ``airflow dags test`` run of the example, its approval answered by APPROVER."""
    env = {
        **os.environ,
        "DOCKER_DELIVERY_BED_REGISTRY": bed.registry,
        "DOCKER_DELIVERY_BED_PYTHON_IMAGE": bed.python_image,
        "DOCKER_DELIVERY_BED_HAPROXY_IMAGE": bed.haproxy_image,
        # The bed's Swarm has two nodes: its manager's connection names the second one's engine.
        **bed_connections(bed),
        "DOCKER_DELIVERY_SWARM_ENGINE": SWARM_CONN_ID,
    }
    airflow = str(Path(sys.executable).parent / "airflow")
    stop, answered = threading.Event(), []
    started = time.time()
    approver = threading.Thread(
        target=answer_approval,
        args=(revision, stop, answered),
        kwargs={"choice": choice, "dag_id": DAG_ID, "gate": GATE},
    )
    approver.start()
    with tempfile.TemporaryFile("w+") as log:
        try:
            done = subprocess.run(
                [airflow, "dags", "test", DAG_ID, "--conf", json.dumps({"revision": revision})],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=900,
                cwd=ROOT,
            )
        finally:
            stop.set()
            approver.join(30)
        log.seek(0)
        output = log.read()
    kept = ""
    if done.returncode != 0:  # the whole log, to read: the assertion shows only its end
        kept = str(Path(tempfile.gettempdir(), f"{DAG_ID}-{revision[:12]}.log"))
        Path(kept).write_text(output)
    return {
        "log_file": kept,
        "returncode": done.returncode,
        "output": output,
        "revision": revision,
        "answered": answered,
        "took": time.time() - started,
    }


@pytest.fixture(scope="module")
def deliveries(bed: Any, airflow_db: None, docker_client: Any) -> Iterator[list[dict[str, Any]]]:
    """Two deliveries of two revisions: the first starts each environment, the second replaces
    it the same way (production's other colour, staging's next Swarm service)."""
    remove_service(docker_client)
    try:
        runs = [deliver(bed, uuid.uuid4().hex + uuid.uuid4().hex[:8])]
        if runs[0]["returncode"] == 0:
            runs.append(deliver(bed, uuid.uuid4().hex + uuid.uuid4().hex[:8]))
        yield runs
    finally:
        remove_service(docker_client)


@pytest.fixture(scope="module")
def delivery(deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    """The second delivery (the first when it failed)."""
    return deliveries[-1]


@pytest.fixture(scope="module")
def rejected(bed: Any, deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    """A third revision, delivered to staging; its delivery to production is rejected."""
    assert len(deliveries) == 2 and deliveries[-1]["returncode"] == 0, "no delivery to reject"
    return deliver(bed, uuid.uuid4().hex + uuid.uuid4().hex[:8], choice="Reject")


def run_id_of(delivery: dict[str, Any]) -> str:
    assert delivery["answered"], "the approval never asked"
    return str(delivery["answered"][0])


def version(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "version", timeout=5) as answer:
        assert answer.status == 200
        return json.loads(answer.read())  # type: ignore[no-any-return]


def test_both_runs_succeed_after_their_approval(deliveries: list[dict[str, Any]]) -> None:
    assert len(deliveries) == 2, deliveries[0]["output"][-6000:]
    for delivery in deliveries:
        tail = f"(whole log: {delivery['log_file']})\n" + delivery["output"][-6000:]
        assert delivery["returncode"] == 0, tail
        assert delivery["answered"], tail
        finished = delivery["output"].split("DagRun Finished: dag_id=deliver_two_envs")[-1]
        assert "state=success" in finished.split("\n")[0], tail


def test_both_environments_serve_the_digest_built_once(delivery: dict[str, Any]) -> None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    run_id = run_id_of(delivery)
    with create_session() as session:
        built = (
            session.query(XComModel)
            .filter_by(dag_id=DAG_ID, run_id=run_id, task_id="build", key="build")
            .one()
            .value
        )
        tis = {
            ti.task_id: ti
            for ti in session.query(TaskInstance).filter_by(dag_id=DAG_ID, run_id=run_id)
        }
    build = built if isinstance(built, dict) else json.loads(built)
    assert build["built"] is True  # built in this run, once
    assert build["image"].split("@")[0].endswith(f":{delivery['revision']}")
    for name, url in URLS.items():
        assert version(url)["digest"] == build["digest"], name
    assert all(str(ti.state) in ("success", "skipped") for ti in tis.values())
    assert str(tis["redeploy"].state) == "skipped"
    assert tis["build"].try_number == 1


def test_the_tests_ran_in_the_image_in_parallel_on_the_build(delivery: dict[str, Any]) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(str(ROOT / "dags" / "deliver_two_envs.py")).dags[DAG_ID]
    tests = [t for t in dag.tasks if t.task_id.startswith("test_")]
    assert {t.task_id for t in tests} == {"test_unit", "test_smoke"}
    assert all(t.upstream_task_ids == {"build"} for t in tests)  # siblings: run side by side
    assert "tests: " in delivery["output"] and " passed, 0 failed" in delivery["output"]


def test_staging_rolled_on_swarm_and_production_is_blue_green(
    delivery: dict[str, Any], docker_client: Any
) -> None:
    label = f"io.docker-delivery.service={SERVICE}"
    services = docker_client.services.list(filters={"label": label})
    by_env: dict[str, list[dict[str, str]]] = {}
    for svc in services:
        labels = svc.attrs["Spec"]["Labels"]
        by_env.setdefault(labels["io.docker-delivery.environment"], []).append(labels)
    assert set(by_env) == {"staging", "production"}, "both run as Swarm services"
    # staging: one Swarm service per release (rolling); production: one per colour, and one
    # colour serves (the one the last delivery switched to): the old one was retired
    assert [labels.get("io.docker-delivery.slot-group") for labels in by_env["staging"]] == [None]
    groups = [labels.get("io.docker-delivery.slot-group") for labels in by_env["production"]]
    assert len(groups) == 1 and set(groups) <= {"blue", "green"}, groups
    assert "retired " in delivery["output"]  # the old colour went, after scale_down_delay


def test_the_log_says_who_approved(delivery: dict[str, Any]) -> None:
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    run_id = run_id_of(delivery)
    assert f"approved by {APPROVER['name']} (id {APPROVER['id']})" in delivery["output"]
    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(dag_id=DAG_ID, run_id=run_id, task_id=GATE).one()
        detail = session.query(HITLDetail).filter_by(ti_id=ti.id).one()
        assert detail.responded_by_user == APPROVER
        assert detail.chosen_options == ["Approve"]
        assert str(ti.state) == "success"


def test_a_rejection_stops_production_and_the_ledger_says_who_decided(
    deliveries: list[dict[str, Any]], rejected: dict[str, Any]
) -> None:
    from docker_delivery.ledger import Ledger

    tail = rejected["output"][-6000:]
    assert rejected["returncode"] == 0 and rejected["answered"], tail
    assert f"rejected by {APPROVER['name']} (id {APPROVER['id']})" in rejected["output"]
    records = Ledger().records()
    by_revision = {
        (r.revision, r.environment): r for r in records if r.dag_id == DAG_ID and r.revision
    }
    for run in deliveries:
        approved = by_revision[(run["revision"], "production")]
        assert (approved.outcome, approved.approval) == ("success", "approved")
        assert approved.approved_by == APPROVER["name"]
        assert approved.deployment_type == "blue_green"
        assert by_revision[(run["revision"], "staging")].deployment_type == "rolling"
    staging = by_revision[(rejected["revision"], "staging")]
    stopped = by_revision[(rejected["revision"], "production")]
    assert staging.outcome == "success"
    assert (stopped.outcome, stopped.approval, stopped.approved_by) == (
        "rejected",
        "rejected",
        APPROVER["name"],
    )
    assert stopped.digest == staging.digest  # what was not delivered, by digest
    live = by_revision[(deliveries[-1]["revision"], "production")].digest
    assert version(URLS["staging"])["digest"] == staging.digest
    assert version(URLS["production"])["digest"] == live != staging.digest  # unchanged
