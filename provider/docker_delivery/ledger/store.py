"""The ledger: deployment records and incidents in a SQL database, through SQLAlchemy.

``Ledger(location)``: a SQLAlchemy URL (``postgresql+psycopg2://...``, ``mysql+mysqldb://...``,
``sqlite:////path/ledger.db``) when workers run on several machines, or the path of a SQLite
file (the single-machine default, :func:`default_location`). The tables
(:mod:`docker_delivery.ledger.schema`) are created or upgraded on first use.

Writing is one statement per record, an upsert on the record's key ``(dag_id, run_id, service,
environment)``: a retried task replaces its attempt's row, and any number of processes may
write at once (SQLite: WAL journal, writers wait for each other up to 60 s; PostgreSQL and
MySQL: row locks). Reading for a report fetches only the columns the report needs, by index.

Nothing secret is stored: a record holds digests, names, times and a short detail; the URL's
password is never shown (``repr`` and errors hide it).

This is pure domain code: it must never import airflow.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    URL,
    Connection,
    Engine,
    Row,
    and_,
    create_engine,
    event,
    func,
    make_url,
    select,
)
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from docker_delivery.ledger import schema
from docker_delivery.ledger.errors import LedgerError
from docker_delivery.ledger.jsonl import read_jsonl
from docker_delivery.ledger.records import DeploymentRecord, Incident

__all__ = ["ImportResult", "Ledger", "default_location", "ledger_url"]

_KEY = ("dag_id", "run_id", "service", "environment")
_TIMES = ("started_at", "finished_at", "committed_at")
_RECORD_COLUMNS = tuple(
    c.name for c in schema.deployments.columns if c.name not in ("id", "recorded_at", "attempts")
)


def default_location() -> Path:
    """The ledger of one machine: ``$AIRFLOW_HOME/docker-delivery/ledger.db`` (``~/airflow``
    when AIRFLOW_HOME is not set, as Airflow does)."""
    home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    return Path(home) / "docker-delivery" / "ledger.db"


def ledger_url(location: str | os.PathLike[str] | URL | None) -> URL:
    """The SQLAlchemy URL of ``location``: a URL as given, a path as a SQLite file, None as
    :func:`default_location`. A ``.jsonl`` path is the file format of earlier versions: refused,
    saying how to import it."""
    if isinstance(location, URL):
        return location
    text = os.fspath(location) if location is not None else str(default_location())
    if "://" in text:
        try:
            return make_url(text)
        except ArgumentError as exc:
            raise LedgerError(f"the ledger's URL is not a SQLAlchemy URL: {exc}") from None
    if text.endswith(".jsonl"):
        raise LedgerError(
            f"{text} is a JSON Lines ledger, the format of earlier versions: the ledger is a "
            "database now; import the file with `docker-delivery ledger import "
            f"{text}` and give a database (a .db path, a URL or a connection)"
        )
    return URL.create("sqlite", database=str(Path(text).expanduser().absolute()))


@dataclass(frozen=True)
class ImportResult:
    """What an import of a JSON Lines ledger did."""

    read: int
    """Current records in the file (the last one of each key)."""
    imported: int
    """Records added to the database."""
    present: int
    """Records whose key the database had already (an earlier import, a newer retry): kept."""
    skipped_lines: tuple[int, ...]
    """Lines of the file that are not a record (corrupt, invalid)."""


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _engine(url: URL) -> Engine:
    """One engine (and connection pool) per URL in this process."""
    key = url.render_as_string(hide_password=False)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _create_engine(url)
            _engines[key] = engine
        return engine


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Transactions are begun below, so that a writer can take the write lock at BEGIN:
        # a reader turned writer would otherwise fail at once (no busy wait) when another
        # process writes.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 60000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get("ledger_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class Ledger:
    """Deployment records and incidents in the database at ``location`` (see
    :func:`ledger_url`). The tables are created, or upgraded, on first use."""

    def __init__(self, location: str | os.PathLike[str] | URL | None = None) -> None:
        self.url = ledger_url(location)
        self._ready = False
        self._upgraded: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"Ledger({self.where!r})"

    @property
    def where(self) -> str:
        """The database, for a log or a message: its URL without the password."""
        if self.url.get_backend_name() == "sqlite" and self.url.database:
            return self.url.database
        return self.url.render_as_string(hide_password=True)

    # -- connections -----------------------------------------------------------------------

    @contextmanager
    def _connect(self, *, write: bool = False) -> Iterator[Connection]:
        """A connection in a transaction, committed at the end (rolled back on an error)."""
        try:
            engine = _engine(self.url)
            if not self._ready:
                self._upgrade(engine)
            with engine.connect() as connection:
                connection.execution_options(ledger_write=write)
                with connection.begin():
                    yield connection
        except LedgerError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise LedgerError(
                f"the ledger {self.where} cannot be {'written' if write else 'read'}: "
                f"{_reason(exc)}; check the database is reachable and the worker may "
                "write there"
            ) from None

    def _upgrade(self, engine: Engine) -> None:
        # Processes creating the tables at once: one wins, the others find them on a next try
        # (MySQL commits each CREATE TABLE by itself, so its transaction cannot hold them off).
        for attempt in range(1, 6):
            try:
                with engine.connect() as connection:
                    connection.execution_options(ledger_write=True)
                    with connection.begin():
                        self._upgraded = schema.upgrade(connection)
                break
            except DBAPIError:
                if attempt == 5:
                    raise
                time.sleep(0.1 * attempt)
        self._ready = True

    def upgrade(self) -> tuple[int, int]:
        """Bring the tables to this provider's schema version; returns the versions (before,
        after) of this ledger object's first use."""
        with self._connect(write=True) as connection:
            after = schema.version(connection)
        return self._upgraded or (after, after)

    def schema_version(self) -> int:
        """The schema version the tables are at."""
        with self._connect() as connection:
            return schema.version(connection)

    # -- deployments -----------------------------------------------------------------------

    def record(self, record: DeploymentRecord) -> None:
        """Write ``record``; a record of the same key (a retry) is replaced."""
        if not isinstance(record, DeploymentRecord):
            raise LedgerError(f"a ledger records DeploymentRecord objects, got {record!r}")
        with self._connect(write=True) as connection:
            connection.execute(_upsert(connection, [_row(record)], replace=True))

    def record_many(self, records: Iterable[DeploymentRecord], *, replace: bool = True) -> int:
        """Write ``records`` in one transaction (500 a statement); a record whose key the ledger
        has replaces it (``replace``) or is left out. Returns how many rows were added."""
        latest: dict[tuple[str, ...], dict[str, Any]] = {}  # one row a key, the last given
        for record in records:
            if not isinstance(record, DeploymentRecord):
                raise LedgerError(f"a ledger records DeploymentRecord objects, got {record!r}")
            latest[record.key] = _row(record)
        rows = list(latest.values())
        with self._connect(write=True) as connection:
            before = _count(connection)
            for start in range(0, len(rows), 500):
                batch = rows[start : start + 500]
                connection.execute(_upsert(connection, batch, replace=replace))
            return _count(connection) - before

    def import_jsonl(self, path: str | os.PathLike[str]) -> ImportResult:
        """Import the JSON Lines ledger at ``path``. Idempotent: a record whose key the database
        already has is left as it is (imported before, or recorded since by a retry)."""
        if not Path(path).is_file():
            raise LedgerError(f"no JSON Lines ledger at {path}")
        found = read_jsonl(path)
        imported = self.record_many(found.records, replace=False)
        read = len(found.records)
        return ImportResult(read, imported, read - imported, found.skipped_lines)

    def records(
        self,
        service: str | None = None,
        environment: str | None = None,
        since: datetime | None = None,
        *,
        until: datetime | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        dag_ids: Collection[str] | None = None,
        run_id: str | None = None,
        release_id: str | None = None,
    ) -> list[DeploymentRecord]:
        """The records, ordered by ``finished_at`` (the newest first if asked); ``service``,
        ``environment``, ``since`` and ``until`` (timezone-aware, inclusive), ``dag_ids`` (the
        DAGs whose records may be shown), ``run_id`` and ``release_id`` keep only those."""
        table = schema.deployments
        query = select(*(table.c[name] for name in _RECORD_COLUMNS)).where(
            *_where(table, service, environment, since, until, dag_ids, run_id),
            *([table.c.release_id == release_id] if release_id is not None else []),
        )
        order = table.c.finished_at.desc() if newest_first else table.c.finished_at
        query = query.order_by(order, table.c.id.desc() if newest_first else table.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self._connect() as connection:
            return [_record(row) for row in connection.execute(query)]

    def release(self, release_id: str) -> list[DeploymentRecord]:
        """The records of the release ``release_id``, in the order they were written (the
        release's order of services); LedgerError when the ledger has none."""
        found = self.records(release_id=release_id)
        if not found:
            raise LedgerError(f"no release {release_id!r} in the ledger {self.where}")
        return found

    def attempts(self, dag_id: str, run_id: str, service: str, environment: str) -> int:
        """How many times the delivery of this key was recorded (0: never)."""
        table = schema.deployments
        key = (dag_id, run_id, service, environment)
        query = select(table.c.attempts).where(
            *(table.c[n] == v for n, v in zip(_KEY, key, strict=True))
        )
        with self._connect() as connection:
            return int(connection.execute(query).scalar() or 0)

    def count(self) -> int:
        """How many records the ledger holds."""
        with self._connect() as connection:
            return _count(connection)

    def dag_ids(self) -> list[str]:
        """The DAGs that wrote records (to check which of them a person may see)."""
        table = schema.deployments
        with self._connect() as connection:
            return list(connection.execute(select(table.c.dag_id).distinct()).scalars())

    def current(self, dag_ids: Collection[str] | None = None) -> list[DeploymentRecord]:
        """What runs now in each service and environment: its latest successful deployment
        (``finished_at`` is since when), ordered by service and environment."""
        table = schema.deployments
        latest = (
            select(table.c.service, table.c.environment, func.max(table.c.finished_at).label("at"))
            .where(table.c.outcome == "success", *_where(table, None, None, None, None, dag_ids))
            .group_by(table.c.service, table.c.environment)
            .subquery()
        )
        query = (
            select(*(table.c[name] for name in _RECORD_COLUMNS))
            .join(
                latest,
                and_(
                    table.c.service == latest.c.service,
                    table.c.environment == latest.c.environment,
                    table.c.finished_at == latest.c.at,
                ),
            )
            .where(table.c.outcome == "success", *_where(table, None, None, None, None, dag_ids))
            .order_by(table.c.service, table.c.environment)
        )
        with self._connect() as connection:
            seen: dict[tuple[str, str], DeploymentRecord] = {}
            for row in connection.execute(query):
                record = _record(row)
                seen.setdefault((record.service, record.environment), record)
            return list(seen.values())

    def outcome_rows(
        self,
        start: datetime,
        end: datetime,
        service: str | None = None,
        environment: str | None = None,
        dag_ids: Collection[str] | None = None,
        *,
        runs: bool = True,
    ) -> list[tuple[Any, ...]]:
        """What the metrics read of the deployments that finished from ``start`` to ``end``,
        ordered by ``finished_at``: rows of (finished_at, committed_at, service, environment,
        outcome, planned, dag_id, run_id), times in epoch seconds; without ``runs``, dag_id
        and run_id are left out (a quarter of the reading)."""
        table = schema.deployments
        columns = [
            table.c.finished_at,
            table.c.committed_at,
            table.c.service,
            table.c.environment,
            table.c.outcome,
            table.c.planned,
        ]
        query = (
            select(*columns, *((table.c.dag_id, table.c.run_id) if runs else ()))
            .where(*_where(table, service, environment, start, end, dag_ids))
            .order_by(table.c.finished_at, table.c.id)
        )
        with self._connect() as connection:
            return _fetch_plain(connection, query)

    # -- incidents -------------------------------------------------------------------------

    def record_incident(self, incident: Incident) -> None:
        """Write ``incident`` (recorded by hand); one of the same id is replaced."""
        if not isinstance(incident, Incident):
            raise LedgerError(f"record_incident takes an Incident, got {incident!r}")
        row = incident.to_dict() | {
            "started_at": incident.started_at.timestamp(),
            "ended_at": incident.ended_at.timestamp() if incident.ended_at else None,
        }
        with self._connect(write=True) as connection:
            connection.execute(_upsert(connection, [row], replace=True, table=schema.incidents))

    def end_incident(self, incident_id: str, ended_at: datetime) -> Incident:
        """Mark the recorded incident ``incident_id`` ended at ``ended_at``; returns it."""
        table = schema.incidents
        with self._connect(write=True) as connection:
            row = connection.execute(select(table).where(table.c.id == incident_id)).first()
            if row is None:
                raise LedgerError(f"no incident {incident_id!r} in the ledger {self.where}")
            incident = _incident(row)
            ended = Incident(
                **(
                    incident.to_dict()
                    | {
                        "started_at": incident.started_at,
                        "ended_at": ended_at,
                    }
                )
            )
            connection.execute(
                table.update()
                .where(table.c.id == incident_id)
                .values(ended_at=ended.ended_at.timestamp() if ended.ended_at else None)
            )
            return ended

    def incidents(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        service: str | None = None,
        environment: str | None = None,
    ) -> list[Incident]:
        """The recorded incidents that overlap ``start``..``end``, by start time."""
        table = schema.incidents
        conditions = []
        if service is not None:
            conditions.append(table.c.service == service)
        if environment is not None:
            conditions.append(table.c.environment == environment)
        if end is not None:
            conditions.append(table.c.started_at <= _epoch("end", end))
        if start is not None:
            conditions.append(
                (table.c.ended_at.is_(None)) | (table.c.ended_at >= _epoch("start", start))
            )
        query = select(table).where(*conditions).order_by(table.c.started_at)
        with self._connect() as connection:
            return [_incident(row) for row in connection.execute(query)]


# -- rows <-> objects ---------------------------------------------------------------------------


def _epoch(name: str, value: datetime) -> float:
    if value.tzinfo is None or value.utcoffset() is None:
        raise LedgerError(
            f"{name}={value.isoformat()} is a naive datetime: pass a timezone-aware one"
        )
    return value.timestamp()


def _where(
    table: Any,
    service: str | None,
    environment: str | None,
    since: datetime | None,
    until: datetime | None,
    dag_ids: Collection[str] | None = None,
    run_id: str | None = None,
) -> list[Any]:
    conditions = []
    if dag_ids is not None:
        conditions.append(table.c.dag_id.in_(sorted(dag_ids)))
    if run_id is not None:
        conditions.append(table.c.run_id == run_id)
    if service is not None:
        conditions.append(table.c.service == service)
    if environment is not None:
        conditions.append(table.c.environment == environment)
    if since is not None:
        conditions.append(table.c.finished_at >= _epoch("since", since))
    if until is not None:
        conditions.append(table.c.finished_at <= _epoch("until", until))
    return conditions


def _row(record: DeploymentRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in _RECORD_COLUMNS}
    for name in _TIMES:
        if row[name] is not None:
            row[name] = row[name].timestamp()
    row["recorded_at"] = time.time()
    return row


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, timezone.utc)


def _record(row: Row[Any]) -> DeploymentRecord:
    values = dict(row._mapping)
    for name in _TIMES:
        values[name] = _time(values[name])
    values["planned"] = bool(values["planned"])
    return DeploymentRecord(**values)


def _incident(row: Row[Any]) -> Incident:
    values = dict(row._mapping)
    values["started_at"] = _time(values["started_at"])
    values["ended_at"] = _time(values["ended_at"])
    return Incident(**values)


def _fetch_plain(connection: Connection, query: Any) -> list[tuple[Any, ...]]:
    """The rows of ``query`` as plain tuples from the driver's cursor: for a report's 100,000
    rows, SQLAlchemy's Row objects cost as much as the query itself."""
    compiled = query.compile(dialect=connection.dialect)
    params = compiled.params
    arguments: Any = (
        [params[name] for name in compiled.positiontup or ()] if compiled.positional else params
    )
    cursor = connection.connection.cursor()
    try:
        cursor.execute(str(compiled), arguments)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _count(connection: Connection) -> int:
    return int(
        connection.execute(select(func.count()).select_from(schema.deployments)).scalar() or 0
    )


def _upsert(
    connection: Connection,
    rows: Iterable[dict[str, Any]],
    *,
    replace: bool,
    table: Any = schema.deployments,
) -> Any:
    """An INSERT of ``rows`` that, on a row of the same key, replaces it (``replace``) or
    leaves it as it is: one statement, so concurrent writers need no lock of their own."""
    rows = list(rows)
    keys = list(_KEY) if table is schema.deployments else ["id"]
    dialect = connection.dialect.name
    statement: Any
    update: dict[str, Any]
    if dialect in ("sqlite", "postgresql"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        statement = insert(table).values(rows)
        if not replace:
            return statement.on_conflict_do_nothing(index_elements=keys)
        update = {name: statement.excluded[name] for name in rows[0] if name not in keys}
        if table is schema.deployments:
            update["attempts"] = table.c.attempts + 1
        return statement.on_conflict_do_update(index_elements=keys, set_=update)
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        statement = mysql_insert(table).values(rows)
        if not replace:
            return statement.prefix_with("IGNORE")
        update = {name: statement.inserted[name] for name in rows[0] if name not in keys}
        if table is schema.deployments:
            update["attempts"] = table.c.attempts + 1
        return statement.on_duplicate_key_update(update)
    raise LedgerError(
        f"the ledger supports SQLite, PostgreSQL and MySQL databases, not {dialect!r}"
    )


def _reason(exc: BaseException) -> str:
    """An error's message without its SQL statement and parameters (they hold record data)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {str(exc.orig).strip().splitlines()[0]}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc).splitlines()[0]
