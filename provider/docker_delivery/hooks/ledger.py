"""The ledger from a task: one DeploymentRecord of this DAG run written where the pipeline says
(``pipeline.ledger``; default ``$AIRFLOW_HOME/docker-delivery/ledger.jsonl``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Context

from docker_delivery.ledger.records import DeploymentRecord
from docker_delivery.ledger.store import ledger_path


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


def write_record(
    path: str | None,
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
) -> DeploymentRecord:
    """One DeploymentRecord of this run in the ledger at ``path``; returns it."""
    from docker_delivery.images.ref import ImageRef
    from docker_delivery.ledger import Ledger
    from docker_delivery.ledger.records import DIGEST

    ti, run = context["ti"], context["dag_run"]
    ref = ImageRef.parse(image).require_pinned()
    now = dt.datetime.now(dt.timezone.utc)
    revision = ti.xcom_pull(task_ids="what_to_deliver", key="revision")
    committed = ti.xcom_pull(task_ids="what_to_deliver", key="committed_at")
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
    )
    ledger = Ledger(ledger_path(path))
    ledger.record(record)
    return record
