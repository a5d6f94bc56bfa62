"""delivery_demo runs in Airflow (`airflow dags test`) against the bed, twice: built only once."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_demo(bed, port: int, revision: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "DOCKER_DELIVERY_BED_REGISTRY": bed.registry,
        "DOCKER_DELIVERY_BED_PYTHON_IMAGE": bed.python_image,
        "DOCKER_DELIVERY_BED_HAPROXY_IMAGE": bed.haproxy_image,
    }
    airflow = str(Path(sys.executable).parent / "airflow")
    conf = json.dumps({"port": port, "revision": revision})
    return subprocess.run(
        [airflow, "dags", "test", "delivery_demo", "--conf", conf],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


def remove_demo_staging(docker_client) -> None:  # type: ignore[no-untyped-def]
    """The demo's staging service (from `make demo`, or an earlier run) goes: a clean start."""
    labels = ["io.docker-delivery.service=demo-app", "io.docker-delivery.environment=staging"]
    for container in docker_client.containers.list(all=True, filters={"label": labels}):
        container.remove(force=True)
    for network in docker_client.networks.list(names=["dd-demo-app-staging"]):
        network.remove()


@pytest.fixture(scope="module")
def two_runs(bed, airflow_db, docker_client):  # type: ignore[no-untyped-def]
    remove_demo_staging(docker_client)
    port = free_port()
    revision = os.urandom(20).hex()
    first = run_demo(bed, port, revision)
    second = run_demo(bed, port, revision)
    yield port, revision, first, second
    remove_demo_staging(docker_client)


def test_demo_delivers_the_revision_it_built(two_runs) -> None:  # type: ignore[no-untyped-def]
    port, revision, first, second = two_runs
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=5) as answer:
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
