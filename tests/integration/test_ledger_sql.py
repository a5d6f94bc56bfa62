"""The ledger in a real database: the bed's PostgreSQL (through an Airflow connection, as the
compose stack's workers use it) and a SQLite file, each written by four processes at once."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from kit.postgres import psql
from sqlalchemy import URL

from docker_delivery.ledger import DeploymentRecord, Incident, Ledger, delivery_metrics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

UTC = timezone.utc
DIGEST = "sha256:" + "c" * 64


def record(**changes: Any) -> DeploymentRecord:
    finished = changes.pop("finished_at", datetime(2026, 1, 5, 12, tzinfo=UTC))
    fields: dict[str, Any] = {
        "service": "web", "environment": "production", "digest": DIGEST,
        "previous_digest": None, "image": f"registry.example/web@{DIGEST}",
        "deployment_type": "rolling", "outcome": "success",
        "started_at": finished - timedelta(minutes=5), "finished_at": finished,
        "revision": "abc1234", "committed_at": finished - timedelta(hours=2),
        "dag_id": "deliver_web", "run_id": "manual__1", "approved_by": None, "approval": None,
    }  # fmt: skip
    fields.update(changes)
    return DeploymentRecord(**fields)


@pytest.fixture
def pg_url(bed: Any) -> Iterator[URL]:
    """A database of its own on the bed's PostgreSQL, dropped afterwards."""
    name = f"ledger_{uuid.uuid4().hex[:10]}"
    psql(bed, bed.postgres_db, f"CREATE DATABASE {name}")
    yield URL.create(
        "postgresql+psycopg2",
        username=bed.postgres_user,
        password=bed.postgres_password(),
        host=bed.postgres_host,
        port=bed.postgres_port,
        database=name,
    )
    psql(bed, bed.postgres_db, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_ledger_in_postgresql_through_an_airflow_connection(
    pg_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    from docker_delivery.hooks.ledger import open_ledger

    uri = pg_url.set(drivername="postgres").render_as_string(hide_password=False)
    monkeypatch.setenv("AIRFLOW_CONN_TEST_LEDGER_DB", uri)
    ledger = open_ledger(conn_id="test_ledger_db")
    assert ledger.url.get_backend_name() == "postgresql"
    assert pg_url.password not in ledger.where and pg_url.password not in repr(ledger)
    failed = record(outcome="failed", finished_at=datetime(2026, 1, 5, 12, tzinfo=UTC))
    ledger.record(failed)
    retried = record(outcome="success", finished_at=datetime(2026, 1, 5, 12, 30, tzinfo=UTC))
    ledger.record(retried)  # the same key: replaces, counts the attempt
    fix = record(run_id="hotfix__1", incident="INC-9",
                 finished_at=datetime(2026, 1, 6, 9, tzinfo=UTC))  # fmt: skip
    ledger.record(fix)
    ledger.record_incident(Incident(id="INC-9", service="web", environment="production",
                                    started_at=datetime(2026, 1, 6, 8, tzinfo=UTC),
                                    ended_at=datetime(2026, 1, 6, 9, 15, tzinfo=UTC),
                                    caused_by="deliver_web/manual__1"))  # fmt: skip
    assert ledger.records() == [retried, fix]
    assert ledger.attempts(*retried.key) == 2
    assert ledger.current() == [fix]
    metrics = delivery_metrics(ledger, now=datetime(2026, 1, 7, tzinfo=UTC), window_days=7)
    assert (metrics.success, metrics.unplanned, metrics.caused_incidents) == (2, 1, 1)
    assert metrics.change_fail_rate == pytest.approx(0.5)
    assert metrics.recovery_time == pytest.approx(75 * 60)
    assert metrics.levels["recovery_time"] == "high"
    # The tables, their indexes and the schema version, as PostgreSQL has them.
    tables = psql_in(pg_url, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'docker%'")
    assert sorted(tables.split()) == [
        "docker_delivery_deployments", "docker_delivery_incidents", "docker_delivery_schema",
    ]  # fmt: skip
    indexes = psql_in(pg_url, "SELECT indexname FROM pg_indexes WHERE tablename = "
                      "'docker_delivery_deployments'")  # fmt: skip
    assert {"dd_deployments_key", "dd_deployments_where_when", "dd_deployments_when"} <= set(
        indexes.split()
    )
    assert psql_in(pg_url, "SELECT version FROM docker_delivery_schema") == "2"


def psql_in(url: URL, sql: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return "\n".join(str(row[0]) for row in connection.execute(text(sql)))
    finally:
        engine.dispose()


WRITER = """
import json, sys
from docker_delivery.ledger import DeploymentRecord, Ledger
location, writer, count, template = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ledger = Ledger(location)
for n in range(count):
    ledger.record(DeploymentRecord.from_dict({**json.loads(template), "run_id": f"w{writer}-{n}"}))
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_four_processes_writing_a_thousand_records_each_lose_none(
    backend: str, pg_url: URL, tmp_path: Any
) -> None:
    """Four plain interpreters (nothing of this module imported in them) write 1,000 records
    each at once into a new ledger: they also race to create its tables."""
    location = (
        str(tmp_path / "ledger.db")
        if backend == "sqlite"
        else pg_url.render_as_string(hide_password=False)
    )
    template = json.dumps(record(detail="x" * 500).to_dict())
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, location, str(w), "1000", template],
                         stderr=subprocess.PIPE, text=True)
        for w in range(4)
    ]  # fmt: skip
    for writer in writers:
        _, err = writer.communicate(timeout=240)
        assert writer.returncode == 0, err
    ledger = Ledger(location)
    assert ledger.count() == 4000
    runs = {r.run_id for r in ledger.records()}
    assert runs == {f"w{w}-{n}" for w in range(4) for n in range(1000)}
    assert ledger.schema_version() == 2
