"""The ledger file: deployment records appended as JSON Lines, one record a line.

Append-only, so the file is the audit trail as it happened: a record is never rewritten. A task
that is retried (from the UI, after a killed worker) records again under the same key
``(dag_id, run_id, service, environment)``; reading keeps the last record of each key, so the
retry replaces the earlier attempt without editing the file.

Several processes (Airflow workers on one host, or on a shared POSIX filesystem with working
``flock``) may write at once: each append holds an exclusive ``fcntl.flock`` and each read a
shared one, so a reader never sees half a line that is still being written. A line left
half-written by a process killed mid-write is skipped when reading (and counted in
:attr:`Ledger.skipped`), never fatal; the next append starts on a fresh line so it is not glued
to the broken one.

This is pure domain code: it must never import airflow.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime
from pathlib import Path

from docker_delivery.ledger.errors import LedgerError
from docker_delivery.ledger.records import DeploymentRecord, RecordKey

__all__ = ["Ledger", "ledger_path"]


def ledger_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``path``, or the default ledger of this machine: ``$AIRFLOW_HOME/docker-delivery/
    ledger.jsonl`` (``~/airflow`` when AIRFLOW_HOME is not set, as Airflow does)."""
    if path:
        return Path(path)
    home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    return Path(home) / "docker-delivery" / "ledger.jsonl"


class Ledger:
    """Deployment records in a JSON Lines file at ``path``.

    The file and its parent directory are created on the first :meth:`record`; reading a ledger
    that does not exist yet gives no records. After each read, :attr:`skipped` is the number of
    lines that could not be read as a record (corrupt or invalid) and :attr:`skipped_lines` their
    line numbers (1-based), for a caller to report.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.skipped = 0
        self.skipped_lines: tuple[int, ...] = ()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    def record(self, record: DeploymentRecord) -> None:
        """Append ``record``; safe to call again for the same key (the last one wins on reading)."""
        if not isinstance(record, DeploymentRecord):
            raise LedgerError(f"a ledger records DeploymentRecord objects, got {record!r}")
        line = json.dumps(record.to_dict(), sort_keys=True, ensure_ascii=True) + "\n"
        data = line.encode("ascii")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    size = os.fstat(fd).st_size
                    if size and os.pread(fd, 1, size - 1) != b"\n":
                        data = b"\n" + data  # the last write was cut short: start a fresh line
                    _write_all(fd, data)
                    os.fsync(fd)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        except OSError as exc:
            raise LedgerError(
                f"cannot append to the ledger {self.path}: {exc.strerror or exc}; "
                "check that its directory is writable by the worker's user"
            ) from exc

    def records(
        self,
        service: str | None = None,
        environment: str | None = None,
        since: datetime | None = None,
    ) -> list[DeploymentRecord]:
        """The current records (the last one of each key), ordered by ``finished_at``.

        ``service`` and ``environment`` keep only those; ``since`` (timezone-aware) keeps the
        records that finished at or after it.
        """
        if since is not None and (since.tzinfo is None or since.utcoffset() is None):
            raise LedgerError(
                f"since={since.isoformat()} is a naive datetime: pass a timezone-aware one"
            )
        kept = [
            record
            for record in self._current()
            if (service is None or record.service == service)
            and (environment is None or record.environment == environment)
            and (since is None or record.finished_at >= since)
        ]
        return sorted(kept, key=lambda record: record.finished_at)

    def _current(self) -> list[DeploymentRecord]:
        """Every record, the last of each key, in the order keys were first seen."""
        content = self._read()
        latest: dict[RecordKey, DeploymentRecord] = {}
        skipped: list[int] = []
        for number, raw in enumerate(content.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                record = DeploymentRecord.from_dict(json.loads(raw))
            except (ValueError, TypeError):  # not JSON, not UTF-8, or not a valid record
                skipped.append(number)
                continue
            latest[record.key] = record  # a known key keeps its first-seen position
        self.skipped = len(skipped)
        self.skipped_lines = tuple(skipped)
        return list(latest.values())

    def _read(self) -> bytes:
        try:
            with open(self.path, "rb") as file:
                fcntl.flock(file.fileno(), fcntl.LOCK_SH)
                try:
                    return file.read()
                finally:
                    fcntl.flock(file.fileno(), fcntl.LOCK_UN)
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise LedgerError(
                f"cannot read the ledger {self.path}: {exc.strerror or exc}; "
                "check that the file is readable by the worker's user"
            ) from exc


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: ``os.write`` may write less than asked."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
