"""Apply the demo app's versioned SQL migrations to PostgreSQL, in expand and contract phases.

Usage:
  python3 migrate.py up --phase expand|contract [--lock-timeout SECONDS]
  python3 migrate.py status     # JSON: versions applied, pending, unknown to this image
  python3 migrate.py list       # JSON: the migrations in this image (no database needed)

Migrations are files in migrations/ named ``NNNN_name.sql``, ``NNNN_name.expand.sql`` or
``NNNN_name.contract.sql``: NNNN is the version (unique, never reused), the suffix the phase
(none means expand). Expand migrations only add (tables, nullable columns, triggers that keep
old and new in step), so the running release tolerates them: they run before a deploy.
Contract migrations remove what the previous release needed: they run after the deploy, and
code older than them cannot run any more (the delivery tool refuses such a rollback).

``up --phase P`` applies the pending migrations of phase P in version order, each in its own
transaction, recorded in the table ``schema_migrations`` (version, name, phase, checksum,
applied_at, applied_by, duration_ms) in the same transaction: a failing migration is rolled back
whole, the database's error is printed, and the schema stays at the last good version. Only
missing versions run, so running ``up`` again does nothing. A contract migration runs only when
every expand migration numbered before it is applied. A migration that was edited after it was
applied (its checksum differs) stops ``up``: write a new migration instead.

One run at a time per database: ``up`` holds a PostgreSQL advisory lock for its whole run. A
second ``up`` waits for it, saying who holds it, for up to ``--lock-timeout`` seconds
(MIGRATE_LOCK_TIMEOUT_S, default 300), then fails with exit code 3.

The database URL comes from DATABASE_URL_FILE or DATABASE_URL (see db.py) and is never printed.
MIGRATION_IMAGE (the image reference, by digest, set by the delivery tool) is recorded as
``applied_by``. Exit codes: 0 done, 1 a migration failed, 2 bad usage or configuration (no URL,
no driver, database unreachable), 3 the lock was not obtained in time, 4 inconsistent history
(an applied migration was edited, or a contract would run before its expand).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import db

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
PHASES = ("expand", "contract")
FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(expand|contract))?\.sql$")
# pg_advisory_lock(int4, int4): 0x6464 ("dd") and a constant of this app's migrations.
LOCK_KEY = (0x6464, 0x6D696772)
APPLICATION_NAME = "demo-app-migrate"

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    phase       text NOT NULL CHECK (phase IN ('expand', 'contract')),
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    applied_by  text,
    duration_ms integer
)
"""


class MigrationError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    phase: str
    checksum: str
    path: Path

    @property
    def id(self) -> str:
        return f"{self.version:04d}_{self.name}"

    def brief(self) -> dict[str, Any]:
        return {"version": self.version, "name": self.name, "phase": self.phase}


def load(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in ``directory``, by version; refuses bad names and repeated versions."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(
                f"{path.name}: a migration file is named NNNN_name.sql, NNNN_name.expand.sql "
                "or NNNN_name.contract.sql (lower-case letters, digits and '_')",
                4,
            )
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"version {version:04d} is used twice: {found[version].path.name}, {path.name}", 4
            )
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        phase = match.group(3) or "expand"
        found[version] = Migration(version, match.group(2), phase, checksum, path)
    return [found[version] for version in sorted(found)]


@dataclass(frozen=True)
class Plan:
    """What ``up --phase`` would do, given the migrations and the applied rows."""

    to_apply: list[Migration]
    blocked: list[Migration]  # contract migrations waiting for an expand numbered before them
    other_phase: list[Migration]  # pending, of the other phase
    edited: list[Migration]  # applied, with a different checksum now


def plan(migrations: list[Migration], applied: dict[int, dict[str, Any]], phase: str) -> Plan:
    if phase not in PHASES:
        raise MigrationError(f"phase must be expand or contract, not {phase!r}", 2)
    pending = [m for m in migrations if m.version not in applied]
    edited = [
        m
        for m in migrations
        if m.version in applied and applied[m.version]["checksum"] != m.checksum
    ]
    to_apply, blocked = [], []
    for migration in pending:
        if migration.phase != phase:
            continue
        if phase == "contract" and any(
            m.phase == "expand" and m.version < migration.version for m in pending
        ):
            blocked.append(migration)
        else:
            to_apply.append(migration)
    other = [m for m in pending if m.phase != phase]
    return Plan(to_apply, blocked, other, edited)


def status_of(migrations: list[Migration], applied: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The JSON ``status`` prints (the delivery tool reads it)."""
    known = {m.version: m for m in migrations}

    def highest(phase: str | None) -> int:
        versions = [v for v, row in applied.items() if phase is None or row["phase"] == phase]
        return max(versions, default=0)

    return {
        "current_version": highest(None),
        "expand_version": highest("expand"),
        "contract_version": highest("contract"),
        "image_version": max(known, default=0),
        "applied": [applied[v] for v in sorted(applied)],
        "pending": [m.brief() for m in migrations if m.version not in applied],
        "unknown": [applied[v] for v in sorted(applied) if v not in known],
        "edited": [m.version for m in plan(migrations, applied, "expand").edited],
    }


# -- the database ------------------------------------------------------------------------------


def out(message: str) -> None:
    print(f"[migrate] {message}", flush=True)


def read_applied(cur: Any) -> dict[int, dict[str, Any]]:
    cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not cur.fetchone()[0]:
        return {}
    cur.execute(
        "SELECT version, name, phase, checksum, applied_at, applied_by, duration_ms "
        "FROM schema_migrations ORDER BY version"
    )
    rows = {}
    for version, name, phase, checksum, applied_at, applied_by, duration_ms in cur.fetchall():
        rows[version] = {
            "version": version,
            "name": name,
            "phase": phase,
            "checksum": checksum,
            "applied_at": applied_at.isoformat(),
            "applied_by": applied_by,
            "duration_ms": duration_ms,
        }
    return rows


def take_lock(cur: Any, timeout: float) -> None:
    """The advisory lock of this database's migrations; waits up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    said = False
    while True:
        cur.execute(f"SELECT pg_try_advisory_lock({LOCK_KEY[0]}, {LOCK_KEY[1]})")
        if cur.fetchone()[0]:
            if said:
                out("got the migration lock")
            return
        holder = lock_holder(cur)
        if time.monotonic() >= deadline:
            raise MigrationError(
                f"another migration holds this database's migration lock ({holder}); "
                f"gave up after waiting {timeout:g}s. Run again once it has finished.",
                3,
            )
        if not said:
            out(f"waiting for the migration lock, held by another migration ({holder})")
            said = True
        time.sleep(0.2)


def lock_holder(cur: Any) -> str:
    cur.execute(
        "SELECT a.pid, a.application_name, a.client_addr, a.backend_start "
        "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted "
        f"AND l.classid = {LOCK_KEY[0]} AND l.objid = {LOCK_KEY[1]} AND l.objsubid = 2 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    row = cur.fetchone()
    if row is None:
        return "holder just left"
    pid, application, address, since = row
    return f"pid {pid}, {application or 'unnamed'} from {address or 'local'}, since {since}"


def apply(cur: Any, migration: Migration, image: str | None) -> int:
    """Run one migration and record it, in one transaction; return its duration in ms."""
    sql = migration.path.read_text(encoding="utf-8")
    started = time.monotonic()
    cur.execute("BEGIN")
    try:
        cur.execute(sql)
        duration_ms = int((time.monotonic() - started) * 1000)
        cur.execute(
            "INSERT INTO schema_migrations (version, name, phase, checksum, applied_by, "
            "duration_ms) VALUES (%s, %s, %s, %s, %s, %s)",
            (
                migration.version,
                migration.name,
                migration.phase,
                migration.checksum,
                image,
                duration_ms,
            ),
        )
        cur.execute("COMMIT")
    except BaseException:
        # If the connection is gone, the server rolls the transaction back by itself.
        with contextlib.suppress(Exception):
            cur.execute("ROLLBACK")
        raise
    return duration_ms


def up(url: str, phase: str, lock_timeout: float, image: str | None) -> int:
    migrations = load()
    conn = db.connect(url, application_name=APPLICATION_NAME)
    try:
        cur = conn.cursor()
        take_lock(cur, lock_timeout)  # released when the session ends, whatever happens
        cur.execute(CREATE_TABLE)
        applied = read_applied(cur)
        before = max(applied, default=0)
        todo = plan(migrations, applied, phase)
        if todo.edited:
            names = ", ".join(m.id for m in todo.edited)
            raise MigrationError(
                f"applied migration(s) {names} were edited since (their checksum differs): "
                "never edit a released migration, add a new one",
                4,
            )
        if todo.blocked:
            names = ", ".join(m.id for m in todo.blocked)
            raise MigrationError(
                f"contract migration(s) {names} wait for expand migrations numbered before "
                "them: run `up --phase expand` first",
                4,
            )
        out(f"database at version {before}; {len(todo.to_apply)} {phase} migration(s) to apply")
        for migration in todo.other_phase:
            out(f"left for the other phase: {migration.id} ({migration.phase})")
        current = before
        for migration in todo.to_apply:
            out(f"applying {migration.id} ({migration.phase})")
            try:
                took = apply(cur, migration, image)
            except Exception as error:
                if not db.is_database_error(error):
                    raise
                raise MigrationError(
                    f"migration {migration.id} failed and was rolled back; the schema stays at "
                    f"version {current}. PostgreSQL said: {db.error_text(error, url)}",
                    1,
                ) from None
            current = max(current, migration.version)
            out(f"applied {migration.id} in {took} ms")
        out(f"database at version {current}")
        return 0
    finally:
        conn.close()


def status(url: str) -> dict[str, Any]:
    conn = db.connect(url, application_name=APPLICATION_NAME)
    try:
        return status_of(load(), read_applied(conn.cursor()))
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_up = commands.add_parser("up", help="apply the pending migrations of one phase")
    run_up.add_argument("--phase", choices=PHASES, required=True)
    run_up.add_argument(
        "--lock-timeout",
        type=float,
        default=float(os.environ.get("MIGRATE_LOCK_TIMEOUT_S", "300")),
        help="seconds to wait for another migration's lock (default 300)",
    )
    commands.add_parser("status", help="print the database's migration state as JSON")
    commands.add_parser("list", help="print this image's migrations as JSON (no database)")
    args = parser.parse_args(argv)
    url = None
    try:
        if args.command == "list":
            migrations = load()
            listing = {
                "image_version": max((m.version for m in migrations), default=0),
                "migrations": [{**m.brief(), "checksum": m.checksum} for m in migrations],
            }
            print(json.dumps(listing))
            return 0
        url = db.require_url()
        if args.command == "status":
            print(json.dumps(status(url)))
            return 0
        return up(url, args.phase, args.lock_timeout, os.environ.get("MIGRATION_IMAGE") or None)
    except MigrationError as error:
        out(f"error: {db.mask(str(error), url)}")
        return error.code
    except (db.DatabaseNotConfigured, db.DriverMissing) as error:
        out(f"error: {error}")
        return 2
    except Exception as error:
        if not db.is_database_error(error):
            raise
        where = db.describe_url(url) if url else "the database"
        out(f"error: cannot work with {where}: {db.error_text(error, url)}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
