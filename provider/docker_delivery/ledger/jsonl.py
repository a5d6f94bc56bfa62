"""The JSON Lines ledger of earlier versions: deployment records appended one a line.

The ledger is now a database (:mod:`docker_delivery.ledger.store`); a JSON Lines file is read
to import it (``docker-delivery ledger import PATH``). A task that was retried recorded again
under the same key ``(dag_id, run_id, service, environment)``: reading keeps the last record of
each key. A line left half-written by a process killed mid-write is skipped (and its number
given), never fatal. Reads hold a shared ``fcntl.flock``, as the writers held an exclusive one.

This is pure domain code: it must never import airflow.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import NamedTuple

from docker_delivery.ledger.errors import LedgerError
from docker_delivery.ledger.records import DeploymentRecord, RecordKey

__all__ = ["JsonLines", "read_jsonl"]


class JsonLines(NamedTuple):
    """What a JSON Lines ledger holds: its current records, and the lines that were skipped."""

    records: list[DeploymentRecord]
    skipped_lines: tuple[int, ...]


def read_jsonl(path: str | os.PathLike[str]) -> JsonLines:
    """The current records of the JSON Lines ledger at ``path`` (the last one of each key, in
    the order keys were first seen), and the numbers (1-based) of the lines that could not be
    read as a record (corrupt or invalid): skipped, never fatal. A missing file has none."""
    content = _read(Path(path))
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
    return JsonLines(list(latest.values()), tuple(skipped))


def _read(path: Path) -> bytes:
    try:
        with open(path, "rb") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_SH)
            try:
                return file.read()
            finally:
                fcntl.flock(file.fileno(), fcntl.LOCK_UN)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise LedgerError(
            f"cannot read the ledger {path}: {exc.strerror or exc}; "
            "check that the file is readable by this user"
        ) from exc
