"""The ledger from Airflow: where it is, and one DeploymentRecord of a DAG run written there.

Where the ledger is, the first that is set of: the pipeline's ``ledger_conn_id`` (an Airflow
connection to PostgreSQL, MySQL or SQLite), the pipeline's ``ledger`` (a SQLAlchemy URL or a
SQLite file's path), Airflow's ``[docker_delivery] ledger_conn_id``, ``[docker_delivery] ledger``;
else the SQLite file ``$AIRFLOW_HOME/docker-delivery/ledger.db``. The Deliveries view reads the
ledger that Airflow's configuration names: set it there when pipelines share one."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Context

from docker_delivery.ledger.records import DeploymentRecord
from docker_delivery.ledger.store import Ledger

SECTION = "docker_delivery"
"""The section of Airflow's configuration with the provider's options."""

_DRIVERS = {
    "postgres": "postgresql+psycopg2",
    "postgresql": "postgresql+psycopg2",
    "mysql": "mysql",  # mysqlclient (Airflow's MySQL provider), else PyMySQL
    "sqlite": "sqlite",
}


def connection_url(conn_id: str) -> Any:
    """The SQLAlchemy URL of the Airflow connection ``conn_id`` (postgres, mysql or sqlite)."""
    from airflow.sdk import BaseHook
    from sqlalchemy import URL

    from docker_delivery.errors import LedgerError

    conn = BaseHook.get_connection(conn_id)
    driver = _DRIVERS.get(conn.conn_type or "")
    if driver is None:
        raise LedgerError(
            f"the ledger's connection {conn_id!r} is of type {conn.conn_type!r}: use a "
            f"connection of type {', '.join(sorted(set(_DRIVERS) - {'postgresql'}))}"
        )
    if driver == "sqlite":
        return URL.create("sqlite", database=conn.host or conn.schema)
    if driver == "mysql":
        import importlib.util

        driver = "mysql+mysqldb" if importlib.util.find_spec("MySQLdb") else "mysql+pymysql"
    return URL.create(
        driver,
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=conn.port or None,
        database=conn.schema or None,
    )


def open_ledger(location: str | None = None, conn_id: str | None = None) -> Ledger:
    """The ledger a pipeline names (``conn_id``, ``location``), else the one Airflow's
    configuration names, else this machine's SQLite file (see the module's docstring)."""
    from airflow.configuration import conf

    if conn_id:
        return Ledger(connection_url(conn_id))
    if location:
        return Ledger(location)
    configured_conn = conf.get(SECTION, "ledger_conn_id", fallback=None)
    if configured_conn:
        return Ledger(connection_url(configured_conn))
    return Ledger(conf.get(SECTION, "ledger", fallback=None) or None)


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and value:
        return dt.datetime.fromisoformat(value)
    return None


def pinned(image: str) -> bool:
    """Whether ``image`` is a digest-pinned reference (not the ``None`` a missing XCom renders)."""
    from docker_delivery.errors import InvalidReference
    from docker_delivery.images.ref import ImageRef

    try:
        return ImageRef.parse(image).is_pinned
    except InvalidReference:
        return False


def write_record(ledger: Ledger, **fields: Any) -> DeploymentRecord:
    """:func:`build_record` of ``fields``, written to ``ledger``; returns it."""
    record = build_record(**fields)
    ledger.record(record)
    return record


def build_record(
    *,
    context: Context,
    service: str,
    environment: str,
    deployment_type: str,
    image: str,
    outcome: str,
    previous_digest: str | None = None,
    approval: tuple[str | None, str | None] = (None, None),
    detail: str = "",
    release_id: str | None = None,
    branch_task_id: str = "what_to_deliver",
) -> DeploymentRecord:
    """One DeploymentRecord of this run. A run triggered for an
    incident (its conf's ``incident``: the incident's id) or as a hotfix (``unplanned: true``)
    is recorded as unplanned, as a rollback is."""
    from docker_delivery.images.ref import ImageRef
    from docker_delivery.ledger.records import DIGEST

    ti, run = context["ti"], context["dag_run"]
    ref = ImageRef.parse(image).require_pinned()
    now = dt.datetime.now(dt.timezone.utc)
    revision = ti.xcom_pull(task_ids=branch_task_id, key="revision")
    committed = ti.xcom_pull(task_ids=branch_task_id, key="committed_at")
    given = getattr(run, "conf", None)
    conf: dict[str, Any] = given if isinstance(given, dict) else {}
    incident = str(conf["incident"]) if conf.get("incident") else None
    record = DeploymentRecord(
        service=service,
        environment=environment,
        digest=str(ref.digest),
        previous_digest=previous_digest
        if previous_digest and DIGEST.fullmatch(previous_digest)
        else None,
        image=str(ref),
        deployment_type=deployment_type,  # type: ignore[arg-type]  # validated by the record
        outcome=outcome,  # type: ignore[arg-type]
        started_at=_time(run.start_date) or now,
        finished_at=now,
        revision=str(revision) if revision else None,
        committed_at=_time(committed),
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        approval=approval[0],  # type: ignore[arg-type]
        approved_by=approval[1],
        detail=detail,
        incident=incident,
        planned=False if conf.get("unplanned") is True or incident else None,
        release_id=release_id,
    )
    return record
