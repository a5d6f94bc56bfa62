"""The ledger's tables, their schema version, and the upgrade path between versions.

Three tables, named ``docker_delivery_*`` so they can share a database with anything else
(Airflow's own metadata database, for one):

* ``docker_delivery_schema``: one row, the schema version the tables are at;
* ``docker_delivery_deployments``: one row per delivery, unique by its key
  ``(dag_id, run_id, service, environment)``: a retry of the run replaces its row with the
  last attempt's and counts it in ``attempts``;
  ``release_id`` names the release a record belongs to (several services delivered as one);
* ``docker_delivery_incidents``: incidents recorded by hand (the CLI, the Python API), with
  their start and end. Incidents caused by a failed or rolled-back deployment are not stored:
  they are read from the deployments, so two writers never race to open the same one.

Times are stored as seconds since the epoch (UTC), a double: the same arithmetic in SQLite,
PostgreSQL and MySQL, and no date parsing when a report reads 100,000 rows.

Upgrading: :data:`STEPS` is the ordered list of steps from version 0 (no tables) to
:data:`SCHEMA_VERSION`; :func:`upgrade` runs the missing ones in one transaction and records the
new version. A database at a newer version than this code knows is refused, not written.

This is pure domain code: it must never import airflow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
)

from docker_delivery.ledger.errors import LedgerError

__all__ = ["SCHEMA_VERSION", "STEPS", "deployments", "incidents", "metadata", "schema", "upgrade"]

metadata = MetaData()

schema = Table(
    "docker_delivery_schema",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

deployments = Table(
    "docker_delivery_deployments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # (MySQL indexes at most 3,072 bytes: the key's four columns stay inside it in utf8mb4)
    Column("dag_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("service", String(100), nullable=False),
    Column("environment", String(100), nullable=False),
    Column("digest", String(71), nullable=False),
    Column("previous_digest", String(71)),
    Column("image", String(1000), nullable=False),
    Column("deployment_type", String(20), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("finished_at", Double, nullable=False),
    Column("committed_at", Double),
    Column("revision", String(250)),
    Column("approval", String(20)),
    Column("approved_by", String(250)),
    Column("detail", Text, nullable=False, default=""),
    Column("planned", Boolean, nullable=False, default=True),
    Column("incident", String(250)),
    Column("recorded_at", Double, nullable=False),
    # how many times the delivery was recorded: a retry of its run records it again
    Column("attempts", Integer, nullable=False, default=1),
    # the release (several services delivered as one) the record belongs to, when it does
    Column("release_id", String(250)),
    UniqueConstraint("dag_id", "run_id", "service", "environment", name="dd_deployments_key"),
    Index("dd_deployments_where_when", "service", "environment", "finished_at"),
    Index("dd_deployments_when", "finished_at"),
    Index("dd_deployments_release", "release_id"),
)

incidents = Table(
    "docker_delivery_incidents",
    metadata,
    Column("id", String(250), primary_key=True),
    Column("service", String(250), nullable=False),
    Column("environment", String(250), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("ended_at", Double),
    Column("title", Text, nullable=False, default=""),
    Column("caused_by", String(250)),
    Index("dd_incidents_where_when", "service", "environment", "started_at"),
)


def _create(*tables: Table) -> Callable[[Connection], None]:
    def step(connection: Connection) -> None:
        for table in tables:
            table.create(connection, checkfirst=True)

    return step


def _add_release_id(connection: Connection) -> None:
    """The release id column and its index, where the deployments table lacks them (a table
    created at this version has them already)."""
    columns = {c["name"] for c in inspect(connection).get_columns(deployments.name)}
    if "release_id" not in columns:
        column = deployments.c.release_id
        kind = column.type.compile(dialect=connection.dialect)
        connection.exec_driver_sql(
            f"ALTER TABLE {deployments.name} ADD COLUMN {column.name} {kind}"
        )
    index = next(i for i in deployments.indexes if i.name == "dd_deployments_release")
    index.create(connection, checkfirst=True)


STEPS: Final[tuple[Callable[[Connection], None], ...]] = (
    _create(schema, deployments),  # 0 -> 1: the deployments
    _create(incidents),  # 1 -> 2: incidents recorded by hand
    _add_release_id,  # 2 -> 3: records of one release share its id
)
"""``STEPS[n]`` takes the tables from version ``n`` to ``n + 1``."""

SCHEMA_VERSION: Final = len(STEPS)


def version(connection: Connection) -> int:
    """The schema version of the database (0: no ledger tables yet)."""
    if not inspect(connection).has_table(schema.name):
        return 0
    found = connection.execute(select(schema.c.version)).scalar()
    return int(found or 0)


def upgrade(connection: Connection, target: int = SCHEMA_VERSION) -> tuple[int, int]:
    """Run the steps from the database's version up to ``target``; returns (before, after).

    Call inside a transaction: a step that fails leaves the version where it was.
    """
    before = version(connection)
    if before > SCHEMA_VERSION:
        raise LedgerError(
            f"the ledger's tables are at schema version {before}, newer than this provider "
            f"knows ({SCHEMA_VERSION}): upgrade airflow-provider-docker-delivery on this machine"
        )
    for step in STEPS[before:target]:
        step(connection)
    if target > before:
        if before == 0:
            connection.execute(schema.insert().values(id=1, version=target))
        else:
            connection.execute(schema.update().where(schema.c.id == 1).values(version=target))
    return before, max(before, target)
