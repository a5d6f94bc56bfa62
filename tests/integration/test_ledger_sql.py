"""The ledger in real databases: the bed's PostgreSQL and MariaDB (MySQL), each through an
Airflow connection as workers on several machines use them, and a SQLite file; each written by
four processes at once."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from kit.mysql import mysql_database
from kit.postgres import psql
from sqlalchemy import URL, create_engine

from docker_delivery.ledger import DeploymentRecord, Incident, Ledger, delivery_metrics
from docker_delivery.ledger.schema import SCHEMA_VERSION

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


@pytest.fixture(params=["postgresql", "mysql"])
def db_url(request: pytest.FixtureRequest, bed: Any) -> Iterator[URL]:
    """A database of its own on the bed's PostgreSQL or MariaDB, dropped afterwards."""
    if request.param == "mysql":
        with mysql_database(bed) as url:
            yield url
        return
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


def test_a_ledger_in_a_database_server_through_an_airflow_connection(
    db_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    from docker_delivery.hooks.ledger import open_ledger

    conn_type = "postgres" if db_url.get_backend_name() == "postgresql" else "mysql"
    uri = db_url.set(drivername=conn_type).render_as_string(hide_password=False)
    monkeypatch.setenv("AIRFLOW_CONN_TEST_LEDGER_DB", uri)
    ledger = open_ledger(conn_id="test_ledger_db")
    assert ledger.url.get_backend_name() == db_url.get_backend_name()
    assert db_url.password not in ledger.where and db_url.password not in repr(ledger)
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
    # Times keep their microseconds (a double, not MySQL's 4-byte FLOAT).
    assert ledger.records()[0].finished_at == retried.finished_at
    late = record(run_id="late", finished_at=datetime(2026, 1, 6, 9, 0, 0, 123456, tzinfo=UTC))
    ledger.record(late)
    assert ledger.records(run_id="late")[0].finished_at == late.finished_at
    # The tables, their indexes and the schema version, as the server has them.
    from sqlalchemy import inspect

    engine = create_engine(db_url)
    try:
        names = inspect(engine).get_table_names()
        indexes = {i["name"] for i in inspect(engine).get_indexes("docker_delivery_deployments")}
    finally:
        engine.dispose()
    assert sorted(n for n in names if n.startswith("docker")) == [
        "docker_delivery_deployments", "docker_delivery_incidents", "docker_delivery_schema",
    ]  # fmt: skip
    assert {"dd_deployments_where_when", "dd_deployments_when", "dd_deployments_release"} <= indexes
    assert sql_in(db_url, "SELECT version FROM docker_delivery_schema") == str(SCHEMA_VERSION)


def test_a_version_2_ledger_on_a_server_gains_release_ids(db_url: URL) -> None:
    """Tables made by the version before release ids (no release_id column) are upgraded in
    place by an ALTER TABLE on the server; the records they held stay."""
    from sqlalchemy import MetaData, Table, UniqueConstraint, insert

    from docker_delivery.ledger import schema

    old = MetaData()
    Table(schema.schema.name, old, *(c.copy() for c in schema.schema.columns))
    deployments = Table(
        schema.deployments.name, old,
        *(c.copy() for c in schema.deployments.columns if c.name != "release_id"),
        UniqueConstraint("dag_id", "run_id", "service", "environment"),
    )  # fmt: skip
    Table(schema.incidents.name, old, *(c.copy() for c in schema.incidents.columns))
    engine = create_engine(db_url)
    try:
        with engine.begin() as connection:
            old.create_all(connection)
            connection.execute(insert(old.tables[schema.schema.name]).values(id=1, version=2))
            kept = record(run_id="before")
            row = {k: v for k, v in kept.to_dict().items() if k in deployments.c}
            at = kept.finished_at.timestamp()
            row.update(started_at=at, finished_at=at, committed_at=None, recorded_at=at)
            connection.execute(insert(deployments).values(row))
    finally:
        engine.dispose()
    ledger = Ledger(db_url)
    assert ledger.upgrade() == (2, SCHEMA_VERSION)
    ledger.record(record(run_id="r1", release_id="shop-production-1"))
    assert [r.run_id for r in ledger.release("shop-production-1")] == ["r1"]
    assert [r.release_id for r in ledger.records(run_id="before")] == [None]
    assert Ledger(db_url).upgrade() == (SCHEMA_VERSION, SCHEMA_VERSION)


def sql_in(url: URL, sql: str) -> str:
    from sqlalchemy import text

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


def test_four_processes_writing_a_thousand_records_each_lose_none_in_sqlite(
    tmp_path: Any,
) -> None:
    four_writers(str(tmp_path / "ledger.db"))


def test_four_processes_writing_a_thousand_records_each_lose_none_in_a_server(
    db_url: URL,
) -> None:
    four_writers(db_url.render_as_string(hide_password=False))


def four_writers(location: str) -> None:
    """Four plain interpreters (nothing of this module imported in them) write 1,000 records
    each at once into a new ledger: they also race to create its tables."""
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
    assert ledger.schema_version() == SCHEMA_VERSION
