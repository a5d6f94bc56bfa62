"""RecordDeliveryOperator: each stage's delivery written to the ledger (docker_delivery.ledger).

It is a stage's last task and runs whatever happened before it (trigger rule ``all_done``): it
reads the states of the stage's tasks in this run, writes one DeploymentRecord (what, where,
from which digest to which, who approved, outcome), then fails when the stage failed, so the
run's state stays what the stage's was. When the run failed before any release reached the
stage (the build or an image test failed), nothing was deployed: it records nothing and fails,
saying so. A rollout a human aborted at a hold (the stage's abort task ran) is recorded as
rolled back, with each decision (who, when, after which point) in its detail, and fails the
stage too: the release was not delivered. A retry or a cleared run records again under the same
key; the ledger keeps the last record of a key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from docker_delivery.hooks.ledger import open_ledger, pinned, write_record
from docker_delivery.operators.approval import DECISION
from docker_delivery.operators.common import NOT_DEPLOYED, approval_of
from docker_delivery.operators.links import DeliveryLink

FAILED = ("failed", "upstream_failed")


class RecordDeliveryOperator(BaseOperator):
    """Record this run's delivery of ``service`` to ``environment`` (the TaskGroup ``group``'s
    tasks) in the ledger; fail when one of them failed. ``image`` (templated) is the
    digest-pinned release; the XCom of the one of ``deploy_task_ids`` that ran gives the
    digest it replaced;
    ``approval_task_id``'s XCom who approved; ``hold_task_ids``' the decisions taken at holds,
    and ``abort_task_id`` (when it ran) that the rollout was aborted. Returns the record
    (XCom)."""

    template_fields: Sequence[str] = ("image", "ledger", "ledger_conn_id", "deployment_type")
    operator_extra_links = (DeliveryLink(),)
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
        ledger_conn_id: str | None = None,
        deploy_task_ids: Sequence[str] = (),
        approval_task_id: str | None = None,
        hold_task_ids: Sequence[str] = (),
        abort_task_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.service, self.environment, self.group = service, environment, group
        self.deployment_type, self.image, self.ledger = deployment_type, image, ledger
        self.ledger_conn_id = ledger_conn_id
        self.deploy_task_ids, self.approval_task_id = list(deploy_task_ids), approval_task_id
        self.hold_task_ids, self.abort_task_id = list(hold_task_ids), abort_task_id

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
        aborted = not failed and states.get(self.abort_task_id or "") == "success"
        outcome = (
            "not_deployed"
            if not_deployed
            else "failed"
            if failed
            else "rolled_back"
            if aborted
            else "success"
        )
        decisions = [
            d
            for t in self.hold_task_ids
            if isinstance(d := ti.xcom_pull(task_ids=t, key=DECISION), Mapping)
        ]
        held = "; ".join(
            f"{d['choice']} after {d['after']} by {d['by']} at {d['at']}" for d in decisions
        )
        previous = None
        for task_id in self.deploy_task_ids:  # the one that ran (one path of a choice)
            deployed = ti.xcom_pull(task_ids=task_id)
            if isinstance(deployed, Mapping):
                before = [deployed.get("previous_digest"), *deployed.get("previous_digests", [])]
                previous = next((str(d) for d in before if d), None)
                break
        if failed and not pinned(self.image):
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
        ledger = open_ledger(self.ledger, self.ledger_conn_id)
        record = write_record(
            ledger,
            context=context,
            service=self.service,
            environment=self.environment,
            deployment_type=self.deployment_type,
            image=self.image,
            outcome=outcome,
            previous_digest=previous,
            approval=approval,
            detail=(
                f"not deployed: {unchanged[0]}"
                if not_deployed
                else f"failed at {', '.join(first)}"
                if failed
                else f"aborted, the release under way removed: {held}"
                if aborted
                else held
            )[:500],
        )
        where = ledger.where
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
        if aborted:
            raise AirflowFailException(
                f"{self.service}/{self.environment}: the rollout was aborted ({held}); what "
                f"served before serves; recorded as rolled_back in {where}"
            )
        return dict(record.to_dict())
