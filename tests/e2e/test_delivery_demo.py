"""delivery_demo runs in Airflow (`airflow dags test`) against the bed, twice: built only once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from kit.postgres import psql

ROOT = Path(__file__).resolve().parents[2]


PORT = 18080  # the staging router's port in dags/pipelines/delivery_demo.yaml


def run_demo(bed, database: str, revision: str, **params: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    password = urllib.parse.quote(bed.postgres_password(), safe="")
    host, port = bed.postgres_container_host, bed.postgres_port
    env = {
        **os.environ,
        "DOCKER_DELIVERY_BED_REGISTRY": bed.registry,
        "DOCKER_DELIVERY_BED_PYTHON_IMAGE": bed.python_image,
        "DOCKER_DELIVERY_BED_HAPROXY_IMAGE": bed.haproxy_image,
        "AIRFLOW_CONN_DEMO_DB": f"postgres://{bed.postgres_user}:{password}@{host}:{port}/{database}",
    }
    airflow = str(Path(sys.executable).parent / "airflow")
    conf = json.dumps({"revision": revision, **params})
    done = subprocess.run(
        [airflow, "dags", "test", "delivery_demo", "--conf", conf],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    if done.returncode != 0:  # the whole log, to read: an assertion shows only its end
        kept = Path(tempfile.gettempdir(), f"delivery_demo-{revision[:12]}-{len(params)}.log")
        kept.write_text(done.stdout + done.stderr)
        done.stderr += f"\n(whole log: {kept})"
    return done


def remove_demo_staging(docker_client) -> None:  # type: ignore[no-untyped-def]
    """The demo's staging service (from `make demo`, or an earlier run) goes: a clean start."""
    labels = ["io.docker-delivery.service=demo-app", "io.docker-delivery.environment=staging"]
    for container in docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": labels}
    ):
        container.remove(force=True)
    for network in docker_client.networks.list(names=["dd-demo-app-staging"]):
        network.remove()


@pytest.fixture(scope="module")
def two_runs(bed, airflow_db, docker_client):  # type: ignore[no-untyped-def]
    remove_demo_staging(docker_client)
    database = f"dd_demo_{os.urandom(5).hex()}"  # a new, empty database: every migration runs
    psql(bed, bed.postgres_db, f"CREATE DATABASE {database}")
    revision = os.urandom(20).hex()
    try:
        first = run_demo(bed, database, revision)
        second = run_demo(bed, database, revision)
        yield database, revision, first, second
    finally:
        remove_demo_staging(docker_client)
        psql(bed, bed.postgres_db, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_demo_delivers_the_revision_it_built(two_runs) -> None:  # type: ignore[no-untyped-def]
    _, revision, first, second = two_runs
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/version", timeout=5) as answer:
        assert answer.status == 200
        version = json.loads(answer.read())
    assert version["release"] == revision
    assert version["digest"].startswith("sha256:")
    assert re.search(r"tests: [1-9]\d* passed, 0 failed", first.stdout + first.stderr)


def test_second_run_builds_nothing_and_promotion_is_a_no_op(two_runs) -> None:  # type: ignore[no-untyped-def]
    _, revision, first, second = two_runs
    first_log, second_log = first.stdout + first.stderr, second.stdout + second.stderr
    assert f"building 127.0.0.1:5000/docker-delivery/demo-app:{revision}" in first_log
    assert "not building again" in second_log
    assert "building 127.0.0.1:5000" not in second_log
    assert "already points at" in second_log


def test_promotion_emitted_an_asset_event_with_digest_and_commit(two_runs) -> None:  # type: ignore[no-untyped-def]
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    _, revision, _, _ = two_runs
    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == "127.0.0.1:5000/docker-delivery/demo-app:staging")
            .order_by(AssetEvent.id.desc())
            .limit(2)
            .all()
        )
        extras = [dict(e.extra) for e in events]
    assert len(extras) == 2
    latest, first = extras
    assert first["revision"] == revision and first["digest"].startswith("sha256:")
    assert latest["digest"] == first["digest"]
    assert latest["previous_digest"] == first["previous_digest"]  # read back from the audit tags


def test_expand_then_infrastructure_then_deploy_then_contract(bed, two_runs) -> None:  # type: ignore[no-untyped-def]
    database, revision, first, second = two_runs
    first_log, second_log = first.stdout + first.stderr, second.stdout + second.stderr
    order = ["staging.migrate_expand", "staging.apply_infra", "staging.deploy",
             "staging.smoke_greetings", "staging.migrate_contract"]  # fmt: skip
    ends = [first_log.index(f"[DAG TEST] end task task_id={task}") for task in order]
    assert ends == sorted(ends), dict(zip(order, ends, strict=True))
    assert (
        "schema at version 2 (was 0); applied 0001_create_greetings, 0002_greetings_body"
        in first_log
    )
    assert "schema at version 3 (was 2); applied 0003_drop_greetings_message" in first_log
    assert "applied nothing: it was up to date" in second_log  # a second run migrates nothing
    rows = psql(bed, database, "SELECT version, phase FROM schema_migrations ORDER BY version")
    assert rows.splitlines() == ["1|expand", "2|expand", "3|contract"]
    # The app reads the migrated table through the secret file it was given.
    body = json.dumps({"message": "hello from the e2e test"}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}/greetings", data=body)
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 201 and json.loads(answer.read())["release"] == revision
    password = bed.postgres_password()
    assert password not in first_log and password not in second_log


def test_each_run_is_in_the_ledger(two_runs) -> None:  # type: ignore[no-untyped-def]
    from docker_delivery.ledger import Ledger

    revision = two_runs[1]
    mine = [r for r in Ledger().records() if r.revision == revision]
    assert [(r.dag_id, r.service, r.environment, r.outcome) for r in mine] == [
        ("delivery_demo", "demo-app", "staging", "success")
    ] * 2
    assert mine[0].run_id != mine[1].run_id and mine[0].digest == mine[1].digest
    assert mine[0].deployment_type == "min_in_service"
    assert mine[1].previous_digest == mine[1].digest  # the second run released it again


@pytest.fixture(scope="module")
def by_type(bed, two_runs):  # type: ignore[no-untyped-def]
    """The deployment type is a run param: a third run by blue/green, a fourth by minimum
    in-service again (in place, in the colour that serves)."""
    database = two_runs[0]
    kinds = ("blue_green", "min_in_service")  # each a new revision: a new release to deploy
    return [run_demo(bed, database, os.urandom(20).hex(), deploy_staging=k) for k in kinds]


def test_the_run_param_chooses_blue_green_or_minimum_in_service(by_type) -> None:  # type: ignore[no-untyped-def]
    from docker_delivery.ledger import Ledger

    blue_green, in_place = by_type
    for run in (blue_green, in_place):
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    bg_log, mis_log = blue_green.stdout + blue_green.stderr, in_place.stdout + in_place.stderr
    assert "deploying by blue_green (param deploy_staging)" in bg_log
    assert "[DAG TEST] end task task_id=staging.switch" in bg_log
    assert (
        "public routes to blue; minimum in-service replaces its 4 instance(s) in place" in mis_log
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/greetings", timeout=5) as answer:
        assert answer.status == 200
    kinds = [r.deployment_type for r in Ledger().records() if r.run_id in (
        run_id(blue_green), run_id(in_place))]  # fmt: skip
    assert kinds == ["blue_green", "min_in_service"]


def run_id(run: subprocess.CompletedProcess[str]) -> str:
    found = re.search(
        r"DagRun Finished: dag_id=delivery_demo, logical_date=[^,]+, run_id=([^,]+),",
        run.stdout + run.stderr,
    )
    assert found, "no run id in the log"
    return found.group(1)
