"""The ledger: record validation, the JSON Lines file (retries, corrupt lines, concurrent
writers) and the delivery metrics on a hand-made history with known figures."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from docker_delivery.errors import DeliveryError
from docker_delivery.ledger import (
    DeploymentRecord,
    Incident,
    InvalidRecord,
    Ledger,
    LedgerError,
    delivery_metrics,
    metrics_report,
)
from docker_delivery.ledger.metrics import level_of, metrics_by
from docker_delivery.ledger.schema import SCHEMA_VERSION

pytestmark = pytest.mark.timeout(120)

UTC = timezone.utc
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
T0 = datetime(2025, 3, 1, tzinfo=UTC)


def make(**changes: Any) -> DeploymentRecord:
    """A valid record; ``changes`` override fields (``finished_at`` moves ``started_at`` along)."""
    finished = changes.pop("finished_at", T0 + timedelta(minutes=10))
    digest = changes.pop("digest", DIGEST_B)
    fields: dict[str, Any] = {
        "service": "web",
        "environment": "production",
        "digest": digest,
        "previous_digest": DIGEST_A,
        "image": f"127.0.0.1:5000/web@{digest}",
        "deployment_type": "rolling",
        "outcome": "success",
        "started_at": finished - timedelta(minutes=10),
        "finished_at": finished,
        "revision": "0123abc",
        "committed_at": None,
        "dag_id": "deliver_web",
        "run_id": "manual__1",
        "approved_by": None,
        "approval": None,
    }
    fields.update(changes)
    return DeploymentRecord(**fields)


# --- records ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"digest": "sha256:" + "A" * 64}, "digest", "64 lower-case hex"),
        ({"digest": "sha256:abc"}, "digest", "is not a digest"),
        ({"digest": "md5:" + "a" * 32}, "digest", "expected 'sha256:'"),
        ({"previous_digest": "latest"}, "previous_digest", "is not a digest"),
        ({"image": "127.0.0.1:5000/web:latest"}, "image", "not pinned to the released digest"),
        ({"image": f"web@{DIGEST_A}"}, "image", f"ending with '@{DIGEST_B}'"),
        ({"deployment_type": "canary"}, "deployment_type", "unknown deployment type 'canary'"),
        ({"outcome": "ok"}, "outcome", "unknown outcome 'ok': use one of success, failed"),
        ({"approval": "maybe"}, "approval", "unknown approval 'maybe'"),
        ({"approval": "rejected"}, "outcome", "a rejected delivery is recorded with outcome"),
        ({"started_at": datetime(2025, 3, 1)}, "started_at", "naive datetime"),
        (
            {"finished_at": datetime(2025, 3, 1, 1), "started_at": T0},
            "finished_at",
            "naive datetime",
        ),
        ({"committed_at": datetime(2025, 2, 1)}, "committed_at", "naive datetime"),
        ({"started_at": "2025-03-01T00:00:00+00:00"}, "started_at", "must be a datetime"),
        (
            {"started_at": T0 + timedelta(hours=1), "finished_at": T0},
            "finished_at",
            "is before started_at",
        ),
        ({"service": ""}, "service", "non-empty string"),
        ({"run_id": None}, "run_id", "non-empty string"),
        ({"revision": ""}, "revision", "non-empty string or None"),
        ({"detail": None}, "detail", "must be a string"),
    ],
)
def test_an_invalid_record_is_refused_naming_the_field(
    changes: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidRecord, match=message) as caught:
        make(**changes)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"invalid deployment record: {field}: ")


def test_invalid_record_is_a_delivery_error_and_a_value_error() -> None:
    with pytest.raises(DeliveryError):
        make(outcome="nope")
    with pytest.raises(ValueError):
        make(outcome="nope")
    assert issubclass(InvalidRecord, LedgerError)


def test_times_are_normalised_to_utc() -> None:
    paris = timezone(timedelta(hours=2))
    record = make(
        started_at=datetime(2025, 3, 1, 12, 0, tzinfo=paris),
        finished_at=datetime(2025, 3, 1, 12, 5, tzinfo=paris),
        committed_at=datetime(2025, 3, 1, 9, 0, tzinfo=paris),
    )
    assert record.started_at == datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
    assert record.started_at.tzinfo is UTC
    assert record.finished_at.tzinfo is UTC
    assert record.committed_at is not None and record.committed_at.tzinfo is UTC
    assert record.to_dict()["started_at"] == "2025-03-01T10:00:00+00:00"


def test_finished_equal_to_started_is_allowed() -> None:
    record = make(started_at=T0, finished_at=T0)
    assert record.finished_at == record.started_at


def test_a_record_is_keyword_only_and_frozen() -> None:
    record = make()
    with pytest.raises(AttributeError):
        record.outcome = "failed"  # type: ignore[misc]
    assert record.key == ("deliver_web", "manual__1", "web", "production")


def test_to_dict_and_from_dict_round_trip() -> None:
    record = make(
        committed_at=T0 - timedelta(hours=2),
        approval="approved",
        approved_by="alice",
        deployment_type="blue_green",
        detail="switched at 100%",
    )
    data = record.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["finished_at"] == "2025-03-01T00:10:00+00:00"
    assert data["committed_at"] == "2025-02-28T22:00:00+00:00"
    assert DeploymentRecord.from_dict(data) == record
    first = make(previous_digest=None, revision=None)
    assert DeploymentRecord.from_dict(first.to_dict()) == first


def test_from_dict_accepts_z_times_and_a_missing_detail() -> None:
    data = make().to_dict()
    data["finished_at"] = "2025-03-01T00:10:00Z"
    del data["detail"]
    record = DeploymentRecord.from_dict(data)
    assert record.finished_at == T0 + timedelta(minutes=10)
    assert record.detail == ""


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (lambda d: d.pop("digest"), "digest", "missing"),
        (lambda d: d.update(env_vars={"PASSWORD": "x"}), "env_vars", "unknown field"),
        (lambda d: d.update(started_at="yesterday"), "started_at", "not an ISO-8601 time"),
        (lambda d: d.update(finished_at=1740787200), "finished_at", "must be an ISO-8601 string"),
        (lambda d: d.update(started_at="2025-03-01T00:00:00"), "started_at", "naive datetime"),
        (lambda d: d.update(outcome="done"), "outcome", "unknown outcome 'done'"),
    ],
)
def test_from_dict_refuses_bad_data_naming_the_field(mutate: Any, field: str, message: str) -> None:
    data = make().to_dict()
    mutate(data)
    with pytest.raises(InvalidRecord, match=message) as caught:
        DeploymentRecord.from_dict(data)
    assert caught.value.field == field


def test_from_dict_refuses_what_is_not_an_object() -> None:
    with pytest.raises(InvalidRecord, match="must be a JSON object, got list"):
        DeploymentRecord.from_dict([1, 2])  # type: ignore[arg-type]


# --- the ledger's database (SQLite here; PostgreSQL in tests/integration/test_ledger_sql.py) ---


def test_an_empty_ledger_has_no_records_and_the_first_use_makes_the_tables(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "a" / "b" / "ledger.db")
    assert ledger.records() == [] and ledger.count() == 0
    assert (tmp_path / "a" / "b" / "ledger.db").is_file()
    assert ledger.schema_version() == SCHEMA_VERSION
    record = make()
    ledger.record(record)
    assert ledger.records() == [record]
    assert ledger.attempts(*record.key) == 1


def test_a_retried_record_replaces_the_earlier_one_and_counts_the_attempts(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    first = make(outcome="failed", detail="worker killed")
    other = make(run_id="manual__2")
    retry = make(outcome="success")
    for record in (first, other, retry):
        ledger.record(record)
    assert ledger.count() == 2
    assert ledger.records() == [retry, other]
    assert ledger.attempts(*retry.key) == 2 and ledger.attempts(*other.key) == 1


def test_records_are_ordered_by_finished_at_and_filtered(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    late = make(run_id="r1", finished_at=T0 + timedelta(hours=3))
    early = make(run_id="r2", finished_at=T0 + timedelta(hours=1))
    staging = make(run_id="r3", environment="staging", finished_at=T0 + timedelta(hours=2))
    api = make(
        run_id="r4", service="api", finished_at=T0 + timedelta(hours=4), dag_id="deliver_api"
    )
    for record in (late, early, staging, api):
        ledger.record(record)
    assert ledger.records() == [early, staging, late, api]
    assert ledger.records(service="web") == [early, staging, late]
    assert ledger.records(environment="production") == [early, late, api]
    assert ledger.records(service="web", environment="production") == [early, late]
    assert ledger.records(since=T0 + timedelta(hours=2)) == [staging, late, api]
    assert ledger.records(limit=2, newest_first=True) == [api, late]
    assert ledger.records(dag_ids={"deliver_api"}) == [api]
    assert ledger.records(run_id="r3") == [staging]
    assert sorted(ledger.dag_ids()) == ["deliver_api", "deliver_web"]
    # What runs now: the newest success of each service and environment.
    assert ledger.current() == [api, late, staging]
    assert ledger.current(dag_ids={"deliver_web"}) == [late, staging]
    with pytest.raises(LedgerError, match="naive datetime"):
        ledger.records(since=datetime(2025, 3, 1))


def test_a_json_lines_ledger_is_imported_once(tmp_path: Path) -> None:
    old = tmp_path / "ledger.jsonl"
    one, two = make(run_id="r1"), make(run_id="r2", outcome="failed")
    retried = replace(two, outcome="success", detail="retried")
    lines = [json.dumps(r.to_dict()) for r in (one, two, retried)]
    lines[1:1] = ['{"not": "a record"}', "\udcff garbage", ""]
    old.write_text("\n".join(lines) + '\n{"service": "web", "envir', errors="surrogateescape")
    ledger = Ledger(tmp_path / "ledger.db")
    newer = make(run_id="r1", outcome="rolled_back")  # recorded since, by a retry
    ledger.record(newer)
    result = ledger.import_jsonl(old)
    assert (result.read, result.imported, result.present) == (2, 1, 1)
    assert result.skipped_lines == (2, 3, 7)
    assert ledger.records() == [newer, retried], "the newer record is kept"
    again = ledger.import_jsonl(old)
    assert (again.imported, again.present) == (0, 2)
    assert ledger.count() == 2
    with pytest.raises(LedgerError, match="no JSON Lines ledger at"):
        ledger.import_jsonl(tmp_path / "missing.jsonl")


def test_a_json_lines_path_is_refused_saying_how_to_import_it(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="docker-delivery ledger import"):
        Ledger(tmp_path / "ledger.jsonl")


def test_the_password_of_a_url_is_never_shown() -> None:
    ledger = Ledger("postgresql+psycopg2://ledger:s3cret-pw@db.example:5432/ledger")
    assert "s3cret-pw" not in repr(ledger) and "s3cret-pw" not in ledger.where
    assert "***" in ledger.where


def test_recording_anything_but_a_record_is_refused(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    with pytest.raises(LedgerError, match="records DeploymentRecord objects"):
        ledger.record(make().to_dict())  # type: ignore[arg-type]


def test_an_unwritable_ledger_says_what_to_check(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    ledger = Ledger(tmp_path / "file" / "ledger.db")  # its "directory" is a file
    with pytest.raises(LedgerError, match=r"the ledger .* cannot be written: .* check"):
        ledger.record(make())


def test_tables_of_an_older_version_are_upgraded_and_a_newer_version_refused(
    tmp_path: Path,
) -> None:
    from sqlalchemy import create_engine, text

    from docker_delivery.ledger import schema

    path = tmp_path / "ledger.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        assert schema.upgrade(connection, target=1) == (0, 1)  # as version 1 made them
        assert not engine.dialect.has_table(connection, "docker_delivery_incidents")
    ledger = Ledger(path)
    assert ledger.upgrade() == (1, SCHEMA_VERSION)
    ledger.record_incident(Incident(id="i1", service="web", environment="production",
                                    started_at=T0))  # fmt: skip
    assert [i.id for i in ledger.incidents()] == ["i1"]
    with engine.begin() as connection:
        connection.execute(text("UPDATE docker_delivery_schema SET version = 99"))
    with pytest.raises(LedgerError, match="schema version 99, newer than this provider"):
        Ledger(path).records()
    engine.dispose()


def test_a_version_2_ledger_gains_release_ids_and_keeps_its_records(tmp_path: Path) -> None:
    from sqlalchemy import MetaData, Table, UniqueConstraint, create_engine, insert

    from docker_delivery.ledger import schema

    path = tmp_path / "ledger.db"
    engine = create_engine(f"sqlite:///{path}")
    old = MetaData()  # the tables as version 2 made them: no release_id
    Table(schema.schema.name, old, *(c.copy() for c in schema.schema.columns))
    deployments = Table(
        schema.deployments.name,
        old,
        *(c.copy() for c in schema.deployments.columns if c.name != "release_id"),
        UniqueConstraint("dag_id", "run_id", "service", "environment"),
    )
    Table(schema.incidents.name, old, *(c.copy() for c in schema.incidents.columns))
    before = make(run_id="before")
    with engine.begin() as connection:
        old.create_all(connection)
        connection.execute(insert(old.tables[schema.schema.name]).values(id=1, version=2))
        row = {k: v for k, v in before.to_dict().items() if k in deployments.c}
        row.update(started_at=T0.timestamp(), finished_at=T0.timestamp(), committed_at=None,
                   recorded_at=T0.timestamp())  # fmt: skip
        connection.execute(insert(deployments).values(row))
    engine.dispose()
    ledger = Ledger(path)
    assert ledger.upgrade() == (2, SCHEMA_VERSION) and SCHEMA_VERSION == 3
    ledger.record(make(run_id="r1", service="api", release_id="shop-staging-1"))
    ledger.record(make(run_id="r1", service="web", release_id="shop-staging-1"))
    assert [r.service for r in ledger.release("shop-staging-1")] == ["api", "web"]
    assert [r.release_id for r in ledger.records(run_id="before")] == [None]
    with pytest.raises(LedgerError, match="no release 'shop-staging-2'"):
        ledger.release("shop-staging-2")
    with pytest.raises(InvalidRecord, match="release_id"):
        make(release_id=" ")


def test_incidents_are_recorded_ended_and_listed(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.record_incident(Incident(id="INC-1", service="web", environment="production",
                                    started_at=at(2, 9), title="errors"))  # fmt: skip
    ledger.record_incident(Incident(id="INC-2", service="api", environment="production",
                                    started_at=at(1, 9), ended_at=at(1, 10)))  # fmt: skip
    assert [i.id for i in ledger.incidents()] == ["INC-2", "INC-1"]
    ended = ledger.end_incident("INC-1", at(2, 10))
    assert ended.ended_at == at(2, 10) and ended.title == "errors"
    assert [i.id for i in ledger.incidents(start=at(2, 0))] == ["INC-1"]
    assert [i.id for i in ledger.incidents(service="api")] == ["INC-2"]
    with pytest.raises(LedgerError, match="no incident 'INC-3'"):
        ledger.end_incident("INC-3", at(2, 10))
    with pytest.raises(InvalidRecord, match="ended_at"):
        ledger.end_incident("INC-2", at(1, 8))


def test_the_ledger_imports_no_airflow_nor_clients() -> None:
    probe = (
        "import sys, docker_delivery.ledger; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'airflow', 'docker', 'httpx', 'boto3', 'botocore', 'pydantic', 'pendulum'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


# --- metrics ---------------------------------------------------------------------------------

NOW = datetime(2025, 3, 6, tzinfo=UTC)  # the window of 5 days starts at T0, 2025-03-01 00:00


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, minute, tzinfo=UTC)


def deployment(
    finished: datetime, outcome: str, lead_hours: float | None = None, **changes: Any
) -> DeploymentRecord:
    committed = None if lead_hours is None else finished - timedelta(hours=lead_hours)
    if outcome == "rejected":
        changes.setdefault("approval", "rejected")
        changes.setdefault("approved_by", "bob")
    return make(
        run_id=f"run-{finished:%d%H%M}-{changes.get('service', 'web')}",
        finished_at=finished,
        outcome=outcome,
        committed_at=committed,
        **changes,
    )


# 10 deployments of web to production over 5 days: 7 succeeded, 1 failed (restored 30 min
# later), 1 rolled back (restored 2 h later), 1 rejected at the gate. Lead times (hours) of
# the successes that know their commit: 2, 1, 3, 5, 6, 1 -> median (3 + 2) / 2 h = 9000 s.
WEB = [
    deployment(at(1, 10), "success", 2),
    deployment(at(1, 16), "failed"),
    deployment(at(1, 16, 30), "success", 1),
    deployment(at(2, 10), "success", 3),
    deployment(at(3, 10), "success"),  # no commit time: no lead time
    deployment(at(3, 12), "rolled_back", deployment_type="rollback"),
    deployment(at(3, 14), "success", 5),
    deployment(at(4, 10), "success", 6),
    deployment(at(5, 10), "rejected"),
    deployment(at(5, 12), "success", 1),
]
# Outside the web/production history: another service's failure never restored, a web failure
# before the window, a web success after "now".
OTHERS = [
    deployment(at(2, 0), "failed", service="api"),
    deployment(datetime(2025, 2, 28, 23, tzinfo=UTC), "failed"),
    deployment(datetime(2025, 3, 6, 1, tzinfo=UTC), "success", 1),
]


def test_metrics_of_a_known_history() -> None:
    metrics = delivery_metrics(
        WEB + OTHERS, now=NOW, window_days=5, service="web", environment="production"
    )
    assert (metrics.total, metrics.success, metrics.failed) == (10, 7, 1)
    assert (metrics.rolled_back, metrics.rejected) == (1, 1)
    assert metrics.deployment_frequency == pytest.approx(7 / 5)
    assert metrics.change_lead_time == pytest.approx(9000)
    assert metrics.change_fail_rate == pytest.approx(2 / 9), "rejected is not attempted"
    assert metrics.recovery_time == pytest.approx((1800 + 7200) / 2)
    assert metrics.unrestored == 0
    assert metrics.window_start == T0
    assert metrics.window_end == NOW


def test_metrics_of_every_service_count_the_unrestored_failure() -> None:
    metrics = delivery_metrics(WEB + OTHERS, now=NOW, window_days=5)
    assert (metrics.total, metrics.failed) == (11, 2)
    assert metrics.change_fail_rate == pytest.approx(3 / 10)
    assert metrics.recovery_time == pytest.approx(4500), "api's failure is not restored"
    assert metrics.unrestored == 1


def test_the_window_keeps_only_what_finished_in_it() -> None:
    last_day = delivery_metrics(WEB + OTHERS, now=NOW, window_days=1)
    assert (last_day.total, last_day.success, last_day.rejected) == (2, 1, 1)
    assert last_day.deployment_frequency == pytest.approx(1.0)
    assert last_day.change_lead_time == pytest.approx(3600)
    assert last_day.change_fail_rate == pytest.approx(0.0)
    assert last_day.recovery_time is None
    # The window ends at now: the same history seen from the 3rd at 13:00 stops before the
    # rollback is restored.
    earlier = delivery_metrics(WEB, now=at(3, 13), window_days=30)
    assert (earlier.total, earlier.success) == (6, 4)
    assert earlier.recovery_time == pytest.approx(1800)
    assert earlier.unrestored == 1
    # Both ends are inside the window.
    edges = delivery_metrics(
        [deployment(T0, "success"), deployment(NOW, "success")], now=NOW, window_days=5
    )
    assert edges.success == 2


def test_failures_in_a_row_are_one_incident_from_the_first() -> None:
    history = [
        deployment(at(2, 10), "failed"),
        deployment(at(2, 11), "rolled_back"),
        deployment(at(2, 12), "rejected"),
        deployment(at(2, 13), "success"),
        deployment(at(2, 13), "failed", environment="staging"),
        deployment(at(2, 14), "success", environment="staging"),
    ]
    metrics = delivery_metrics(history, now=NOW, window_days=5)
    # production: 10:00 -> 13:00 (3 h, not also 2 h); staging: 13:00 -> 14:00 (1 h).
    assert metrics.recovery_time == pytest.approx((10800 + 3600) / 2)
    assert metrics.unrestored == 0


def test_metrics_with_nothing_to_measure_are_none() -> None:
    empty = delivery_metrics([], now=NOW)
    assert (empty.total, empty.deployment_frequency) == (0, 0.0)
    assert empty.change_lead_time is None
    assert empty.change_fail_rate is None
    assert empty.recovery_time is None
    only_rejected = delivery_metrics([deployment(at(2, 10), "rejected")], now=NOW)
    assert only_rejected.change_fail_rate is None
    no_commit = delivery_metrics([deployment(at(2, 10), "success")], now=NOW)
    assert no_commit.change_lead_time is None
    assert no_commit.change_fail_rate == 0.0
    assert no_commit.deployment_frequency == pytest.approx(1 / 30)


def test_metrics_refuse_a_naive_now_and_an_empty_window() -> None:
    with pytest.raises(LedgerError, match="naive datetime"):
        delivery_metrics([], now=datetime(2025, 3, 6))
    with pytest.raises(LedgerError, match="window_days must be more than 0"):
        delivery_metrics([], now=NOW, window_days=0)


def test_describe_and_as_dict() -> None:
    metrics = delivery_metrics(WEB, now=NOW, window_days=5, environment="production")
    text = metrics.describe()
    assert text.splitlines() == [
        "Delivery metrics for all services in production, 5 days to 2025-03-06 00:00 UTC",
        "  deployments: 10 (7 succeeded, 1 failed, 1 rolled back, 1 rejected; 1 unplanned)",
        "  deployment frequency: 1.40 a day  [elite]",
        "  change lead time: median 2h 30m  [elite]",
        "  change fail rate: 22.2%  [low]",
        "  failed deployment recovery time: median 1h 15m over 2 incident(s)  [high]",
        "  deployment rework rate: 11.1% (no DORA 2024 level)",
    ]
    data = json.loads(json.dumps(metrics.as_dict()))
    assert data["window_start"] == "2025-03-01T00:00:00+00:00"
    assert data["recovery_time"] == 4500
    assert data["levels"]["change_fail_rate"] == "low" and data["levels"]["rework_rate"] is None
    assert data["environment"] == "production" and data["service"] is None
    row = metrics.csv_row()
    assert row["recovery_time_level"] == "high" and row["service"] == ""
    empty = delivery_metrics([deployment(at(2, 10), "failed")], now=NOW).describe()
    assert "change lead time: n/a (no successful deployment with a commit time)" in empty
    assert "recovery time: n/a (no incident ended); 1 not restored yet" in empty


def test_metrics_read_from_the_ledger_equal_those_of_its_records(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    for record in WEB + OTHERS:
        ledger.record(record)
    ledger.record(replace(WEB[1], outcome="success", detail="retried"))  # the failure, retried
    metrics = delivery_metrics(ledger, now=NOW, window_days=5, service="web")
    assert (metrics.total, metrics.success, metrics.failed) == (10, 8, 0)
    assert metrics.change_fail_rate == pytest.approx(1 / 9)
    for scope in ({}, {"service": "web"}, {"environment": "production"}):
        assert delivery_metrics(ledger, now=NOW, window_days=5, **scope) == delivery_metrics(
            ledger.records(), now=NOW, window_days=5, **scope
        )


def test_a_delivery_that_lost_the_lock_is_not_a_failed_deployment() -> None:
    """``not_deployed`` (another delivery held the lock: nothing changed) counts neither as a
    deployment nor as a failure, nor does it open an incident."""
    records = [
        deployment(at(2, 10), "success", 1),
        deployment(at(2, 11), "not_deployed"),
        deployment(at(2, 12), "success", 1),
    ]
    metrics = delivery_metrics(records, now=NOW, window_days=5)
    assert (metrics.total, metrics.success, metrics.failed, metrics.not_deployed) == (3, 2, 0, 1)
    assert metrics.change_fail_rate == 0.0
    assert metrics.recovery_time is None and metrics.unrestored == 0
    assert "2 succeeded, 0 failed, 0 rolled back, 0 rejected, 1 not deployed" in metrics.describe()


# --- DORA's five: incidents, rework, levels, scopes and periods -------------------------------


def test_a_rollback_or_a_deployment_for_an_incident_is_unplanned() -> None:
    assert make().planned is True
    assert make(deployment_type="rollback").planned is False
    assert make(incident="INC-7").planned is False
    assert make(planned=False).planned is False
    assert DeploymentRecord.from_dict(make(incident="INC-7").to_dict()).incident == "INC-7"
    old = make().to_dict()
    del old["planned"], old["incident"]  # written before the fields existed
    assert DeploymentRecord.from_dict(old).planned is True
    with pytest.raises(InvalidRecord, match="planned"):
        make(planned="no")
    with pytest.raises(InvalidRecord, match="incident"):
        make(incident=" ")


def test_incidents_recorded_by_hand_count_in_recovery_and_fail_rate() -> None:
    history = [
        deployment(at(2, 10), "success", 1),
        deployment(at(2, 12), "success", 1),
        deployment(at(3, 10), "success", 1, incident="INC-1"),  # the hotfix
    ]
    caused = f"{history[1].dag_id}/{history[1].run_id}"
    incidents = [
        # caused by the second deployment, found at 13:00, ended by the hotfix's 10:00 + 30 min
        Incident(id="INC-1", service="web", environment="production", started_at=at(2, 13),
                 ended_at=at(3, 10, 30), caused_by=caused),
        # still open: unrestored
        Incident(id="INC-2", service="web", environment="production", started_at=at(4, 9)),
        # another service's: out of scope
        Incident(id="INC-3", service="api", environment="production", started_at=at(4, 9),
                 ended_at=at(4, 10), caused_by="deliver_api/r9"),
    ]  # fmt: skip
    metrics = delivery_metrics(history, now=NOW, window_days=5, service="web", incidents=incidents)
    assert (metrics.success, metrics.caused_incidents, metrics.unplanned) == (3, 1, 1)
    assert metrics.change_fail_rate == pytest.approx(1 / 3)
    assert metrics.recovery_time == pytest.approx(21.5 * 3600)
    assert (metrics.incidents, metrics.unrestored) == (1, 1)
    assert metrics.rework_rate == pytest.approx(1 / 3)
    every = delivery_metrics(history, now=NOW, window_days=5, incidents=incidents)
    assert every.recovery_time == pytest.approx((21.5 * 3600 + 3600) / 2)


@pytest.mark.parametrize(
    ("metric", "value", "level"),
    [
        ("deployment_frequency", 3.0, "elite"),
        ("deployment_frequency", 1.0, "elite"),
        ("deployment_frequency", 0.5, "high"),
        ("deployment_frequency", 1 / 10, "medium"),
        ("deployment_frequency", 1 / 90, "low"),
        ("change_lead_time", 3600, "elite"),
        ("change_lead_time", 3 * 86400, "high"),
        ("change_lead_time", 20 * 86400, "medium"),
        ("change_lead_time", 60 * 86400, "low"),
        ("change_fail_rate", 0.05, "elite"),
        ("change_fail_rate", 0.08, "high"),
        ("change_fail_rate", 0.25, "low"),
        ("recovery_time", 1800, "elite"),
        ("recovery_time", 7200, "high"),
        ("recovery_time", 3 * 86400, "low"),
        ("rework_rate", 0.1, None),
        ("change_lead_time", None, None),
    ],
)
def test_levels_are_dora_2024s(metric: str, value: float | None, level: str | None) -> None:
    assert level_of(metric, value) == level


def test_metrics_by_scope_and_by_period() -> None:
    by = metrics_by(WEB + OTHERS, now=NOW, window_days=5, by=["service", "environment"])
    assert [(m.service, m.environment, m.total) for m in by] == [
        ("api", "production", 1),
        ("web", "production", 10),
    ]
    assert metrics_by(WEB + OTHERS, now=NOW, window_days=5, by=["environment"])[0].total == 11
    with pytest.raises(LedgerError, match="grouped by service"):
        metrics_by(WEB, now=NOW, by=["team"])
    days = metrics_report(WEB + OTHERS, now=NOW, window_days=5, period_days=1,
                          service="web").series  # fmt: skip
    assert [m.window_end for m in days] == [at(d, 0) for d in (2, 3, 4, 5, 6)]
    assert [m.total for m in days] == [3, 1, 3, 1, 2]
    assert sum(m.success for m in days) == 7
    # The rollback's incident (the 3rd 12:00 -> 14:00) ended in its period, the failure of the
    # 1st 16:00 in the first.
    assert [m.recovery_time for m in days] == [1800, None, 7200, None, None]
    with pytest.raises(LedgerError, match="period_days"):
        metrics_report(WEB, now=NOW, window_days=5, period_days=6)
