"""Human decisions in a delivery: the approval gate before a stage (a rejection in the ledger),
and the hold of a rollout under way (Continue or Abort). Both wait without a worker slot (Airflow
parks a human-in-the-loop task until it is answered) and log who decided, when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLBranchOperator

__all__ = ["DECISION", "DeliveryApprovalOperator", "HoldRolloutOperator"]

DECISION = "decision"
"""The XCom key of a hold's answer: ``{"choice", "by", "at", "after"}``."""


class DeliveryApprovalOperator(ApprovalOperator):
    """The approval gate before a stage: Approve lets the delivery go on, Reject stops it
    (every later task is skipped). The log names who decided and when; a rejection is written
    to the ledger (``record``: the stage's service, environment, deployment type and ledger
    path), since the stage's own record task is skipped with the rest. The image it records is
    what the task ``release_task_id`` pushed."""

    ui_color = "#fbcfe8"

    def __init__(
        self,
        *,
        record: dict[str, Any] | list[dict[str, Any]] | None = None,
        release_task_id: str = "release",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # one service's stage, or a release's services (each with its release_task_id and the
        # release's name, whose id its records share)
        given = record if isinstance(record, list) else [record] if record else []
        self.records = [dict(r) for r in given]
        self.release_task_id = release_task_id

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" not in event:
            from docker_delivery.operators.common import approval_of

            verdict, who = approval_of(event)
            who = who or "(unknown)"
            when = event.get("responded_at")
            user_id = (event.get("responded_by_user") or {}).get("id")
            self.log.info(
                "%s by %s (id %s) at %s%s",
                verdict,
                who,
                user_id,
                when,
                "" if verdict == "approved" else ": the delivery stops here",
            )
            if verdict == "rejected":
                for record in self.records:
                    self._record_rejection(context, record, who, when)
        return super().execute_complete(context, event)

    def _record_rejection(self, context: Any, record: dict[str, Any], who: str, when: Any) -> None:
        from docker_delivery.hooks.ledger import open_ledger, write_record

        ti = context["ti"]
        release_id = None
        if record.get("release"):
            from docker_delivery.templates.release_spec import release_id as id_of

            release_id = id_of(record["release"], record["environment"], ti.dag_id, ti.run_id)
        rejected = write_record(
            open_ledger(record.get("ledger"), record.get("ledger_conn_id")),
            context=context,
            service=record["service"],
            environment=record["environment"],
            deployment_type=str(
                context["params"].get(record.get("param") or "") or record["deployment_type"]
            ),
            image=str(ti.xcom_pull(task_ids=record.get("release_task_id") or self.release_task_id)),
            outcome="rejected",
            approval=("rejected", who),
            detail=f"rejected by {who} at {when}",
            release_id=release_id,
            branch_task_id=record.get("branch_task_id") or "what_to_deliver",
        )
        self.log.info("recorded in the ledger: %s", rejected.to_dict())


class HoldRolloutOperator(HITLBranchOperator):
    """A rollout held ``after`` a point (``stage 1 of 3``, ``step 2 of 4``, ``the preview``):
    a human chooses Continue (the task ``continue_task_id`` carries the rollout on) or Abort
    (``abort_task_id`` takes the release out; what served before serves). The answer, who gave
    it and when are logged and pushed to XCom (key ``decision``) for the stage's ledger record;
    the task holds no worker slot while it waits."""

    CONTINUE, ABORT = "Continue", "Abort"
    ui_color = "#fde047"

    def __init__(
        self, *, after: str, continue_task_id: str, abort_task_id: str, **kwargs: Any
    ) -> None:
        super().__init__(
            options=[self.CONTINUE, self.ABORT],
            options_mapping={self.CONTINUE: continue_task_id, self.ABORT: abort_task_id},
            **kwargs,
        )
        self.after = after

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" not in event and event.get("chosen_options"):
            user = event.get("responded_by_user") or {}
            when = event.get("responded_at")
            decision = {
                "choice": event["chosen_options"][0],
                "by": str(user.get("name") or user.get("id") or "(unknown)"),
                "at": when.isoformat() if isinstance(when, datetime) else str(when),
                "after": self.after,
            }
            self.log.info(
                "%s after %s, by %s (id %s) at %s",
                decision["choice"],
                self.after,
                decision["by"],
                user.get("id"),
                decision["at"],
            )
            context["ti"].xcom_push(key=DECISION, value=decision)
        return super().execute_complete(context, event)
