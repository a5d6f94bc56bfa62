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
    InvalidRecord,
    Ledger,
    LedgerError,
    delivery_metrics,
)

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


# --- the ledger file -------------------------------------------------------------------------


def test_the_first_record_creates_the_file_and_its_directory(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "a" / "b" / "ledger.jsonl")
    assert ledger.records() == []
    assert not (tmp_path / "a").exists(), "reading creates nothing"
    record = make()
    ledger.record(record)
    lines = ledger.path.read_text().splitlines()
    assert len(lines) == 1
    assert set(json.loads(lines[0])) == set(record.to_dict()), "only the record's fields"
    assert ledger.records() == [record]
    assert ledger.skipped == 0


def test_a_retried_record_replaces_the_earlier_one(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    first = make(outcome="failed", detail="worker killed")
    other = make(run_id="manual__2")
    retry = make(outcome="success")
    for record in (first, other, retry):
        ledger.record(record)
    assert len(ledger.path.read_text().splitlines()) == 3, "append-only: nothing rewritten"
    # Same finished_at for all three: the order is the keys' first-seen order.
    assert ledger.records() == [retry, other]


def test_records_are_ordered_by_finished_at_and_filtered(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    late = make(run_id="r1", finished_at=T0 + timedelta(hours=3))
    early = make(run_id="r2", finished_at=T0 + timedelta(hours=1))
    staging = make(run_id="r3", environment="staging", finished_at=T0 + timedelta(hours=2))
    api = make(run_id="r4", service="api", finished_at=T0 + timedelta(hours=4))
    for record in (late, early, staging, api):
        ledger.record(record)
    assert ledger.records() == [early, staging, late, api]
    assert ledger.records(service="web") == [early, staging, late]
    assert ledger.records(environment="production") == [early, late, api]
    assert ledger.records(service="web", environment="production") == [early, late]
    assert ledger.records(since=T0 + timedelta(hours=2)) == [staging, late, api]
    with pytest.raises(LedgerError, match="naive datetime"):
        ledger.records(since=datetime(2025, 3, 1))


def test_a_corrupt_line_is_skipped_and_counted(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    one = make(run_id="r1")
    ledger.record(one)
    with ledger.path.open("ab") as file:
        file.write(b'{"not": "a record"}\n')  # JSON, but not a record
        file.write(b"\xff\xfe garbage\n")  # not even UTF-8
        file.write(b'{"service": "web", "envir')  # a writer killed mid-line: no newline
    two = make(run_id="r2")
    ledger.record(two)
    lines = ledger.path.read_bytes().split(b"\n")
    assert lines[3] == b'{"service": "web", "envir', "the next record starts on a fresh line"
    assert ledger.records() == [one, two]
    assert ledger.skipped == 3
    assert ledger.skipped_lines == (2, 3, 4)


def test_recording_anything_but_a_record_is_refused(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    with pytest.raises(LedgerError, match="records DeploymentRecord objects"):
        ledger.record(make().to_dict())  # type: ignore[arg-type]


def test_an_unwritable_ledger_says_what_to_check(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    ledger = Ledger(tmp_path / "file" / "ledger.jsonl")  # its "directory" is a file
    with pytest.raises(LedgerError, match=r"cannot append to the ledger .* check that"):
        ledger.record(make())


WRITER = """
import json, sys
from docker_delivery.ledger import DeploymentRecord, Ledger
path, writer, count, template = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ledger = Ledger(path)
for n in range(count):
    data = {**json.loads(template), "run_id": f"writer{writer}-{n}"}
    ledger.record(DeploymentRecord.from_dict(data))
"""


def test_two_processes_writing_at_once_lose_and_break_nothing(tmp_path: Path) -> None:
    """Two writer processes (plain interpreters: nothing of the test module is imported in
    them), 200 records of 5 kB each, at once."""
    path = str(tmp_path / "ledger.jsonl")
    template = json.dumps(make(detail="x" * 5000).to_dict())
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, path, str(w), "200", template])
        for w in (1, 2)
    ]
    for writer in writers:
        assert writer.wait(90) == 0
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 400
    for line in lines:
        json.loads(line)  # every line whole
    ledger = Ledger(path)
    records = ledger.records()
    assert len(records) == 400
    assert ledger.skipped == 0
    assert {r.run_id for r in records} == {f"writer{w}-{n}" for w in (1, 2) for n in range(200)}


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
    assert metrics.lead_time == pytest.approx(9000)
    assert metrics.change_failure_rate == pytest.approx(2 / 9), "rejected is not attempted"
    assert metrics.time_to_restore == pytest.approx((1800 + 7200) / 2)
    assert metrics.unrestored == 0
    assert metrics.window_start == T0
    assert metrics.window_end == NOW


def test_metrics_of_every_service_count_the_unrestored_failure() -> None:
    metrics = delivery_metrics(WEB + OTHERS, now=NOW, window_days=5)
    assert (metrics.total, metrics.failed) == (11, 2)
    assert metrics.change_failure_rate == pytest.approx(3 / 10)
    assert metrics.time_to_restore == pytest.approx(4500), "api's failure is not restored"
    assert metrics.unrestored == 1


def test_the_window_keeps_only_what_finished_in_it() -> None:
    last_day = delivery_metrics(WEB + OTHERS, now=NOW, window_days=1)
    assert (last_day.total, last_day.success, last_day.rejected) == (2, 1, 1)
    assert last_day.deployment_frequency == pytest.approx(1.0)
    assert last_day.lead_time == pytest.approx(3600)
    assert last_day.change_failure_rate == pytest.approx(0.0)
    assert last_day.time_to_restore is None
    # The window ends at now: the same history seen from the 3rd at 13:00 stops before the
    # rollback is restored.
    earlier = delivery_metrics(WEB, now=at(3, 13), window_days=30)
    assert (earlier.total, earlier.success) == (6, 4)
    assert earlier.time_to_restore == pytest.approx(1800)
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
    assert metrics.time_to_restore == pytest.approx((10800 + 3600) / 2)
    assert metrics.unrestored == 0


def test_metrics_with_nothing_to_measure_are_none() -> None:
    empty = delivery_metrics([], now=NOW)
    assert (empty.total, empty.deployment_frequency) == (0, 0.0)
    assert empty.lead_time is None
    assert empty.change_failure_rate is None
    assert empty.time_to_restore is None
    only_rejected = delivery_metrics([deployment(at(2, 10), "rejected")], now=NOW)
    assert only_rejected.change_failure_rate is None
    no_commit = delivery_metrics([deployment(at(2, 10), "success")], now=NOW)
    assert no_commit.lead_time is None
    assert no_commit.change_failure_rate == 0.0
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
        "  deployments: 10 (7 succeeded, 1 failed, 1 rolled back, 1 rejected)",
        "  deployment frequency: 1.40 a day",
        "  lead time for changes: median 2h 30m",
        "  change failure rate: 22.2%",
        "  time to restore: median 1h 15m",
    ]
    data = json.loads(json.dumps(metrics.as_dict()))
    assert data["window_start"] == "2025-03-01T00:00:00+00:00"
    assert data["time_to_restore"] == 4500
    assert data["environment"] == "production" and data["service"] is None
    empty = delivery_metrics([deployment(at(2, 10), "failed")], now=NOW).describe()
    assert "lead time for changes: n/a (no successful deployment with a commit time)" in empty
    assert "time to restore: n/a (no failure restored); 1 not restored yet" in empty


def test_metrics_read_from_the_ledger(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    for record in WEB:
        ledger.record(record)
    ledger.record(replace(WEB[1], outcome="success", detail="retried"))  # the failure, retried
    metrics = delivery_metrics(ledger.records(service="web"), now=NOW, window_days=5)
    assert (metrics.total, metrics.success, metrics.failed) == (10, 8, 0)
    assert metrics.change_failure_rate == pytest.approx(1 / 9)


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
    assert metrics.change_failure_rate == 0.0
    assert metrics.time_to_restore is None and metrics.unrestored == 0
    assert "2 succeeded, 0 failed, 0 rolled back, 0 rejected, 1 not deployed" in metrics.describe()
