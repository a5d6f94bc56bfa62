"""The approval gate before a delivery stage: who decided, when; a rejection in the ledger."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

__all__ = ["DeliveryApprovalOperator"]


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
        record: dict[str, Any] | None = None,
        release_task_id: str = "release",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.record = dict(record or {})
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
            if verdict == "rejected" and self.record:
                from docker_delivery.hooks.ledger import open_ledger, write_record

                rejected = write_record(
                    open_ledger(self.record.get("ledger"), self.record.get("ledger_conn_id")),
                    context=context,
                    service=self.record["service"],
                    environment=self.record["environment"],
                    deployment_type=str(
                        context["params"].get(self.record.get("param") or "")
                        or self.record["deployment_type"]
                    ),
                    image=str(context["ti"].xcom_pull(task_ids=self.release_task_id)),
                    outcome="rejected",
                    approval=("rejected", who),
                    detail=f"rejected by {who} at {when}",
                )
                self.log.info("recorded in the ledger: %s", rejected.to_dict())
        return super().execute_complete(context, event)
