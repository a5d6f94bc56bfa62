"""A stage of a pipeline run fails; it is cleared as "Clear" in the UI does; the same run then
completes, and nothing that was done is done again (the build keeps its one try).

The failure is on purpose: a smoke test that fails while the Airflow Variable
``dd_test_pipeline_retry_fail_<service>`` is set (a stand-in for a broken dependency that a
human then fixes). The run happens in Airflow (``dag.test()``, against the bed); the clear uses
the code of Airflow's REST endpoint behind the UI's "Clear"
(``POST /dags/{dag_id}/clearTaskInstances``: the task and its downstream, the run set back to
queued); then the run goes on as the scheduler would carry it on, with the loop ``dag.test()``
itself runs, on the existing run.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kit.loadgen import free_port
from kit.pipeline import carry_on, clear_like_the_ui, heartbeat_timeout, register, states

from docker_delivery.ledger import Ledger

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "dd_test_pipeline_retry"
FAILING = "staging.smoke_once"


def flag(service: str) -> str:
    return f"dd_test_pipeline_retry_fail_{service}"


def spec(bed: Any, service: str, port: int, ledger: Path) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "dags" / "pipelines" / "min_in_service.yaml").read_text())
    data["service"] = service
    data["image"] = f"{bed.registry}/dd-test/pipeline-retry"
    data["defaults"].update(replicas=2, stop_grace=5)
    data["defaults"]["router"] = {
        "image": bed.haproxy_image,
        "check_interval_ms": 500,
        "address": "127.0.0.1",
    }
    data["environments"] = {"staging": {"router": {"port": port}}}
    data["pipeline"]["ledger"] = str(ledger)
    data["pipeline"].update(
        dag_id=DAG_ID,
        trigger={"schedule": None},
        tests=[{"name": "quick", "command": ["python3", "-c", "print('quick test: ok')"]}],
    )
    data["pipeline"]["stages"][0]["deploy"] = {"type": "min_in_service", "min_in_service": 1}
    data["pipeline"]["build"].update(
        context=str(ROOT / "dags" / "demo_app"), build_args={"BASE_IMAGE": bed.python_image}
    )
    once = [
        "sh",
        "-c",
        'if [ -n "$FAIL_SMOKE" ]; then echo "failing on purpose: $FAIL_SMOKE"; exit 1; fi; '
        "echo smoke: ok",
    ]
    data["pipeline"]["stages"][0]["verify"]["smoke"] = [
        {
            "name": "once",
            "command": once,
            "environment": {"FAIL_SMOKE": f"{{{{ var.value.get('{flag(service)}', '') }}}}"},
        },
        {"name": "version", "http": {"path": "/version", "expect_digest": True}},
    ]
    return data


def remove_service(docker_client: Any, service: str) -> None:
    label = f"io.docker-delivery.service={service}"
    for container in docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": label}
    ):
        container.remove(force=True)
    for container in docker_client.containers.list(
        ignore_removed=True, all=True, filters={"name": f"-{service}-"}
    ):
        container.remove(force=True)
    for network in docker_client.networks.list(names=[f"dd-{service}-staging"]):
        network.remove()


@pytest.fixture
def service(docker_client: Any) -> Iterator[str]:
    name = f"ddretry{uuid.uuid4().hex[:6]}"
    yield name
    remove_service(docker_client, name)


def test_a_cleared_stage_completes_the_run_without_building_again(
    bed: Any, airflow_db: None, docker_client: Any, service: str, tmp_path: Path
) -> None:
    from airflow.models.variable import Variable
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from docker_delivery.templates import delivery_pipeline

    port = free_port()
    ledger = Ledger(tmp_path / "ledger.db")
    dag = delivery_pipeline(spec(bed, service, port, ledger.where))
    register(dag)
    revision = uuid.uuid4().hex + uuid.uuid4().hex[:8]

    Variable.set(flag(service), "the dependency is down")
    try:
        run = dag.test(run_conf={"revision": revision})
    finally:
        Variable.delete(flag(service))  # the human fixes what was broken
    first = states(DAG_ID, run.run_id)
    assert str(run.state) == "failed", first
    assert first[FAILING] == ("failed", 1)
    assert first["build"] == ("success", 1)
    assert first["test_quick"] == ("success", 1)
    assert first["staging.deploy"] == ("success", 1)

    assert first["staging.record"] == ("failed", 1)  # the run fails with its stage
    [failed] = ledger.records()
    assert (failed.outcome, failed.detail) == ("failed", f"failed at {FAILING}")
    assert failed.run_id == run.run_id and failed.revision == revision

    cleared = clear_like_the_ui(DAG_ID, run.run_id, FAILING)
    # and its downstream: the promotion (the tag moves once the checks pass) and the record
    assert cleared == sorted([FAILING, "staging.promote", "staging.record"])
    assert states(DAG_ID, run.run_id)[FAILING][0] == "None"

    assert carry_on(dag, run.run_id) == "success"

    after = states(DAG_ID, run.run_id)
    assert after[FAILING] == ("success", 2)
    redone = {task for task, (_, tries) in after.items() if tries > 1}
    assert redone == {FAILING, "staging.record"}, after  # build, tests, deploy: one try each
    assert after["staging.promote"] == ("success", 1)  # it did not run before: upstream failed
    assert after["build"] == ("success", 1)
    assert after["redeploy"][0] == "skipped"

    with create_session() as session:
        built = (
            session.query(XComModel)
            .filter_by(dag_id=DAG_ID, run_id=run.run_id, task_id="build", key="build")
            .one()
            .value
        )
    digest = built["digest"] if isinstance(built, dict) else json.loads(built)["digest"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=5) as answer:
        assert json.loads(answer.read())["digest"] == digest
    # The ledger: the retry's record replaced the failed one, and counts both attempts.
    [record] = ledger.records()
    assert (record.outcome, record.digest, record.run_id) == ("success", digest, run.run_id)
    assert record.deployment_type == "min_in_service" and record.approval is None
    assert ledger.attempts(*record.key) == 2


def test_a_run_that_fails_before_the_stage_records_no_deployment(
    bed: Any,
    airflow_db: None,
    docker_client: Any,
    service: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """An image test fails: nothing reaches staging, so the stage's record task writes nothing
    to the ledger (no digest was deployed) and fails saying why, instead of on the ``None``
    that the missing release renders to."""
    from docker_delivery.templates import delivery_pipeline

    ledger = Ledger(tmp_path / "ledger.db")
    data = spec(bed, service, free_port(), ledger.where)
    failing = ["python3", "-c", "raise SystemExit('an image test that fails')"]
    data["pipeline"]["tests"] = [{"name": "quick", "command": failing}]
    dag = delivery_pipeline(data)
    register(dag)
    run = dag.test(run_conf={"revision": uuid.uuid4().hex + uuid.uuid4().hex[:8]})
    got = states(DAG_ID, run.run_id)
    assert str(run.state) == "failed", got
    assert got["test_quick"] == ("failed", 1)
    assert got["staging.deploy"][0] == "upstream_failed"
    assert got["staging.record"] == ("failed", 1)
    assert ledger.records() == []
    log = capfd.readouterr().out
    assert "nothing was delivered, the run failed before a release reached this stage" in log
    assert "invalid image reference" not in log


KILLED_RUN = """
import json, sys
from docker_delivery.templates import delivery_pipeline
spec, revision = json.loads(open(sys.argv[1]).read()), sys.argv[2]
delivery_pipeline(spec).test(run_conf={"revision": revision})
"""


def test_a_deploy_killed_mid_way_is_cleared_and_completes_without_orphans(
    bed: Any, airflow_db: None, docker_client: Any, service: str, tmp_path: Path
) -> None:
    """The worker running ``staging.deploy`` is SIGKILLed mid-batch; the task is cleared as the
    UI's Clear does; the same run then ends with the new release on every replica and nothing
    left behind (no stopped container, no lock, no extra slot)."""
    import os
    import signal
    import subprocess
    import sys

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from docker_delivery.templates import delivery_pipeline

    port = free_port()
    ledger = Ledger(tmp_path / "ledger.db")
    data = spec(bed, service, port, ledger.where)
    data["defaults"].update(replicas=4, env={"START_DELAY_S": "2"})  # a wider window to kill in
    data["defaults"]["health_check"].update(start_period=10)
    data["pipeline"]["stages"][0]["deploy"] = {"type": "min_in_service", "min_in_service": 2}
    data["pipeline"]["stages"][0]["verify"]["smoke"] = data["pipeline"]["stages"][0]["verify"][
        "smoke"
    ][1:]
    dag = delivery_pipeline(data)
    register(dag)
    first = dag.test(run_conf={"revision": uuid.uuid4().hex + uuid.uuid4().hex[:8]})
    assert str(first.state) == "success", states(DAG_ID, first.run_id)
    label = f"io.docker-delivery.service={service}"

    def digests() -> list[str]:
        found = docker_client.containers.list(
            ignore_removed=True, filters={"label": [label, "io.docker-delivery.role=app"]}
        )
        return [c.labels["io.docker-delivery.digest"] for c in found]

    old = set(digests())
    assert len(old) == 1
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(data))
    output = (tmp_path / "killed-run.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(spec_file), uuid.uuid4().hex + uuid.uuid4().hex[:8]],
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not set(digests()) - old:  # a container of the new release started: mid-batch
            assert worker.poll() is None, (
                "the run ended before its deploy was under way: "
                + (tmp_path / "killed-run.log").read_text()[-3000:]
            )
            assert time.monotonic() < deadline, "the deploy never started"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        output.close()
    with create_session() as session:
        killed = (
            session.query(DagRun)
            .filter_by(dag_id=DAG_ID)
            .order_by(DagRun.start_date.desc())
            .first()
        )
        assert killed is not None and killed.run_id != first.run_id
        run_id = killed.run_id
    assert states(DAG_ID, run_id)["staging.deploy"][0] == "running"  # as a lost worker leaves it
    mixed = digests()
    assert len(set(mixed)) == 2, mixed  # old and new side by side: killed mid-way
    heartbeat_timeout(DAG_ID, run_id, "staging.deploy")

    cleared = clear_like_the_ui(DAG_ID, run_id, "staging.deploy")
    assert "staging.deploy" in cleared and "build" not in cleared
    assert carry_on(dag, run_id) == "success", states(DAG_ID, run_id)

    after = states(DAG_ID, run_id)
    assert after["staging.deploy"] == ("success", 2) and after["build"][1] == 1
    new = set(digests()) - old
    assert len(new) == 1 and digests() == [*new] * 4  # the new release on every replica
    everything = docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": label}
    )
    leftovers = [c.name for c in everything if c.status != "running"]
    assert leftovers == [], leftovers  # no stopped container
    assert not docker_client.containers.list(
        ignore_removed=True, all=True, filters={"name": f"dd-lock-{service}-"}
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=5) as answer:
        assert json.loads(answer.read())["digest"] == next(iter(new))
    records = {r.run_id: r for r in ledger.records()}
    assert [records[first.run_id].outcome, records[run_id].outcome] == ["success", "success"]
    assert records[run_id].previous_digest == next(iter(old))  # what the deploy replaced
