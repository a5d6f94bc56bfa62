"""RecordDeliveryOperator: each stage's delivery written to the ledger (docker_delivery.ledger).

It is a stage's last task and runs whatever happened before it (trigger rule ``all_done``): it
reads the states of the stage's tasks in this run, writes one DeploymentRecord (what, where,
from which digest to which, who approved, outcome), then fails when the stage failed, so the
run's state stays what the stage's was. When the run failed before any release reached the
stage (the build or an image test failed), nothing was deployed: it records nothing and fails,
saying so. A retry or a cleared run records again under the same
key; the ledger keeps the last record of a key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from docker_delivery.ledger.store import ledger_path
from docker_delivery.operators.common import NOT_DEPLOYED

FAILED = ("failed", "upstream_failed")


def approval_of(result: Any) -> tuple[str | None, str | None]:
    """(``approved`` | ``rejected`` | None, who) from an approval task's XCom."""
    if not isinstance(result, Mapping) or not result.get("chosen_options"):
        return None, None
    user = result.get("responded_by_user") or {}
    who = str(user.get("name") or user.get("id") or "") or None
    verdict = "approved" if "Approve" in result["chosen_options"] else "rejected"
    return verdict, who


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and value:
        return dt.datetime.fromisoformat(value)
    return None


def _pinned(image: str) -> bool:
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
) -> Any:
    """One DeploymentRecord of this run in the ledger at ``path``; returns it."""
    from docker_delivery.images.ref import ImageRef
    from docker_delivery.ledger import DeploymentRecord, Ledger
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


class RecordDeliveryOperator(BaseOperator):
    """Record this run's delivery of ``service`` to ``environment`` (the TaskGroup ``group``'s
    tasks) in the ledger; fail when one of them failed. ``image`` (templated) is the
    digest-pinned release; the XCom of the one of ``deploy_task_ids`` that ran gives the
    digest it replaced;
    ``approval_task_id``'s XCom who approved. Returns the record (XCom)."""

    template_fields: Sequence[str] = ("image", "ledger", "deployment_type")
    ui_color = "#e5e7eb"

    def __init__(
        self,
        *,
        service: str,
        environment: str,
        group: str,
        deployment_type: str,
        image: str,
        ledger: str | None = None,
        deploy_task_ids: Sequence[str] = (),
        approval_task_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.service, self.environment, self.group = service, environment, group
        self.deployment_type, self.image, self.ledger = deployment_type, image, ledger
        self.deploy_task_ids, self.approval_task_id = list(deploy_task_ids), approval_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        ti = context["ti"]
        states = ti.get_task_states(
            dag_id=ti.dag_id, task_group_id=self.group, run_ids=[ti.run_id]
        ).get(ti.run_id, {})
        failed = sorted(t for t, s in states.items() if t != ti.task_id and s in FAILED)
        first = [t for t in failed if states[t] == "failed"] or failed
        # A stage whose failed steps all changed nothing (another delivery held the lock)
        # deployed nothing: not a failed deployment.
        unchanged = [ti.xcom_pull(task_ids=t, key=NOT_DEPLOYED) for t in first]
        not_deployed = bool(first) and all(unchanged)
        outcome = "not_deployed" if not_deployed else "failed" if failed else "success"
        previous = None
        for task_id in self.deploy_task_ids:  # the one that ran (one path of a choice)
            deployed = ti.xcom_pull(task_ids=task_id)
            if isinstance(deployed, Mapping):
                before = [deployed.get("previous_digest"), *deployed.get("previous_digests", [])]
                previous = next((str(d) for d in before if d), None)
                break
        if failed and not _pinned(self.image):
            raise AirflowFailException(
                f"{self.service}/{self.environment}: nothing was delivered, the run failed "
                f"before a release reached this stage ({', '.join(first)}: "
                f"{states[first[0]]}); no deployment to record"
            )
        approval = (
            approval_of(ti.xcom_pull(task_ids=self.approval_task_id))
            if self.approval_task_id
            else (None, None)
        )
        record = write_record(
            self.ledger,
            context=context,
            service=self.service,
            environment=self.environment,
            deployment_type=self.deployment_type,
            image=self.image,
            outcome=outcome,
            previous_digest=previous,
            approval=approval,
            detail=(
                f"not deployed: {unchanged[0]}"[:500]
                if not_deployed
                else f"failed at {', '.join(first)}"
                if failed
                else ""
            ),
        )
        where = ledger_path(self.ledger)
        self.log.info("recorded in %s: %s", where, record.to_dict())
        if not_deployed:
            raise AirflowFailException(
                f"{self.service}/{self.environment}: nothing was deployed ({', '.join(first)}: "
                f"{unchanged[0]}); recorded as not_deployed in {where}"
            )
        if failed:
            raise AirflowFailException(
                f"{self.service}/{self.environment}: the delivery failed at {', '.join(first)}; "
                f"recorded as failed in {where}"
            )
        return dict(record.to_dict())
