"""Test helper: answering a delivery's approval as Airflow's REST API does for the UI's Approve
and Reject buttons (``PATCH .../taskInstances/{task_id}/{map_index}/hitlDetails``): the response
on the ``hitl_detail`` row, then ``handle_event_submit`` to resume the task."""

from __future__ import annotations

import threading

APPROVER = {"id": "e2e-test", "name": "e2e approver"}


def answer_approval(
    revision: str,
    stop: threading.Event,
    answered: list[str],
    *,
    dag_id: str,
    gate: str,
    choice: str = "Approve",
) -> None:
    """Wait for the approval task ``gate`` of the run of ``dag_id`` whose conf has
    ``revision`` (another run may share the database) to ask, then answer ``choice`` as
    APPROVER, as the REST endpoint does; the run's id goes to ``answered``."""
    from airflow._shared.timezones import timezone
    from airflow.models.dagrun import DagRun
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.triggers.base import TriggerEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    while not stop.is_set():
        try:
            with create_session() as session:
                waiting = (
                    session.query(TaskInstance, DagRun.conf)
                    .join(
                        DagRun,
                        (DagRun.dag_id == TaskInstance.dag_id)
                        & (DagRun.run_id == TaskInstance.run_id),
                    )
                    .filter(
                        TaskInstance.dag_id == dag_id,
                        TaskInstance.task_id == gate,
                        TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
                    )
                    .all()
                )
                ours = [ti for ti, conf in waiting if (conf or {}).get("revision") == revision]
                detail = ours and session.query(HITLDetail).filter_by(ti_id=ours[0].id).one()
                if detail and detail.responded_at is None:
                    assert "Approve" in detail.options
                    detail.responded_by = dict(APPROVER)
                    detail.responded_at = timezone.utcnow()
                    detail.chosen_options = [choice]
                    detail.params_input = {}
                    session.add(detail)
                    event = TriggerEvent(detail.as_resume_event_payload())
                    handle_event_submit(event, task_instance=ours[0], session=session)
                    answered.append(ours[0].run_id)
                    return
        except Exception as exc:  # e.g. the database is busy: try again
            print(f"answering the approval: {exc!r}; trying again")
        stop.wait(1)
