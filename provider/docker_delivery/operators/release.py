"""A release of several services in one DAG: the decision to roll it back, its ledger record, and
the rollback of a whole release by its id (docker_delivery.templates.release_spec).

* :func:`release_failed` (a branch task, run whatever happened): the environment's rollback
  tasks when one of its tasks failed, else straight to the record;
* :class:`RecordReleaseOperator`: one DeploymentRecord per service, all with the release id
  (``<release>-<env>-<hash of the run>``), written in one transaction; it fails when the release
  did, so the next environment does not start;
* :class:`RollbackReleaseOperator`: a release, by id, back to what ran before it (every service,
  the last first), as ``docker-delivery rollback --release ID`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from docker_delivery.hooks.ledger import build_record, open_ledger, pinned
from docker_delivery.operators.common import approval_of, lock_owner
from docker_delivery.operators.links import DeliveryLink

__all__ = ["RecordReleaseOperator", "RollbackReleaseOperator", "release_failed"]

FAILED = ("failed", "upstream_failed")
log = logging.getLogger(__name__)


def _failed(context: Any, group: str, own: Sequence[str]) -> dict[str, str]:
    """The tasks of ``group`` in this run that failed (or could not run for a failure), but
    ``own`` (the release's own closing tasks), with their states."""
    ti = context["ti"]
    states = ti.get_task_states(dag_id=ti.dag_id, task_group_id=group, run_ids=[ti.run_id])
    here = states.get(ti.run_id, {})
    return {t: s for t, s in sorted(here.items()) if s in FAILED and t not in own}


def release_failed(
    environment: str, roll_backs: Sequence[str], record: str, **context: Any
) -> list[str] | str:
    """The rollback tasks when the release failed in ``environment``, else the record."""
    own = [context["ti"].task_id, *roll_backs, record]
    failed = _failed(context, environment, own)
    if not failed:
        log.info("every task of the release in %s passed", environment)
        return record
    first = [t for t, s in failed.items() if s == "failed"]
    if not first:  # a failure before the environment (a build, the previous one)
        log.info("the release never reached %s: nothing here to roll back", environment)
        return record
    log.info(
        "the release failed in %s at %s (%d task(s) not run for it): every service it moved "
        "goes back, in reverse order",
        environment, ", ".join(first), len(failed) - len(first),
    )  # fmt: skip
    return list(roll_backs)


class RecordReleaseOperator(BaseOperator):
    """Record this run's release in ``environment``: one record per service of ``services``
    (``{"service", "deployment_type", "deploy_task_id", "roll_back_task_id",
    "branch_task_id"}``, in the release's order), their images (``images``, templated: each
    service's digest-pinned release), one release id. Outcomes: ``success`` when nothing
    failed; else ``rolled_back`` for each service serving what it served before (its own deploy
    failed and stepped back, or the release's rollback took it back), ``failed`` where the
    rollback failed, ``not_deployed`` where the release never reached it. Fails when the
    release failed. Returns the release id and the records (XCom)."""

    template_fields: Sequence[str] = ("images", "ledger", "ledger_conn_id")
    operator_extra_links = (DeliveryLink(),)
    ui_color = "#e5e7eb"

    def __init__(
        self,
        *,
        release: str,
        environment: str,
        services: Sequence[Mapping[str, Any]],
        images: Mapping[str, str],
        ledger: str | None = None,
        ledger_conn_id: str | None = None,
        approval_task_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.release, self.environment = release, environment
        self.services = [dict(s) for s in services]
        self.images = dict(images)
        self.ledger, self.ledger_conn_id = ledger, ledger_conn_id
        self.approval_task_id = approval_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        from docker_delivery.templates.release_spec import release_id

        ti = context["ti"]
        states = ti.get_task_states(
            dag_id=ti.dag_id, task_group_id=self.environment, run_ids=[ti.run_id]
        ).get(ti.run_id, {})
        own = {ti.task_id, *(s["roll_back_task_id"] for s in self.services)}
        failed = sorted(t for t, s in states.items() if s in FAILED and t not in own)
        the_id = release_id(self.release, self.environment, ti.dag_id, ti.run_id)
        unpinned = [s["service"] for s in self.services if not pinned(self.images[s["service"]])]
        if unpinned:
            raise AirflowFailException(
                f"release {self.release} in {self.environment}: nothing was delivered, the run "
                f"failed before a release of {', '.join(unpinned)} was made; no record"
            )
        approval = (
            approval_of(ti.xcom_pull(task_ids=self.approval_task_id))
            if self.approval_task_id
            else (None, None)
        )
        first = [t for t in failed if states[t] == "failed"]
        if failed and not first:
            raise AirflowFailException(
                f"release {the_id}: the run failed before the release reached "
                f"{self.environment}; nothing was delivered here, no record"
            )
        records = []
        for s in self.services:
            deployed = ti.xcom_pull(task_ids=s["deploy_task_id"])
            previous = deployed.get("previous_digest") if isinstance(deployed, Mapping) else None
            back = states.get(s["roll_back_task_id"])
            reached = isinstance(deployed, Mapping) or states.get(s["deploy_task_id"]) == "failed"
            if not failed:
                outcome, detail = "success", ""
            elif back == "failed":
                outcome, detail = "failed", f"the release failed at {', '.join(first)}; "
                detail += "its rollback failed: see the roll_back task's log"
            elif not reached:
                outcome, detail = "not_deployed", f"the release failed at {', '.join(first)} first"
            else:
                outcome, detail = "rolled_back", f"the release failed at {', '.join(first)}"
            records.append(
                build_record(
                    context=context,
                    service=s["service"],
                    environment=self.environment,
                    deployment_type=s["deployment_type"],
                    image=self.images[s["service"]],
                    outcome=outcome,
                    previous_digest=previous,
                    approval=approval,
                    detail=detail[:500],
                    release_id=the_id,
                    branch_task_id=s["branch_task_id"],
                )
            )
        ledger = open_ledger(self.ledger, self.ledger_conn_id)
        ledger.record_many(records)
        for record in records:
            self.log.info("recorded in %s: %s", ledger.where, record.to_dict())
        if failed:
            raise AirflowFailException(
                f"release {the_id}: failed at {', '.join(first)}; "
                + ", ".join(f"{r.service} {r.outcome}" for r in records)
                + f"; recorded in {ledger.where}"
            )
        self.log.info("release %s: %d services delivered", the_id, len(records))
        return {"release_id": the_id, "records": [r.to_dict() for r in records]}


class RollbackReleaseOperator(BaseOperator):
    """Take every service of the release ``release_id`` (templated) back to what served before
    it, the release's last service first, as ``docker-delivery rollback --release`` does. The
    release file (``release``: its path) says how each service is reached; the ledger
    (``ledger`` / ``ledger_conn_id``) holds the release's records. Refused, with nothing
    changed, when a later delivery replaced one of its services or when one would go back past
    a contract migration (the message names which). ``plan_only``: log the plan only."""

    template_fields: Sequence[str] = ("release_id", "ledger", "ledger_conn_id")
    ui_color = "#fca5a5"

    def __init__(
        self,
        *,
        release: str | Path,
        release_id: str,
        ledger: str | None = None,
        ledger_conn_id: str | None = None,
        lock_wait: float = 0.0,
        docker_url: str | None = None,
        plan_only: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from docker_delivery.templates.release_spec import load_release

        self.release = str(release)
        load_release(Path(self.release))  # a bad file fails when the DAG is parsed
        self.release_id, self.ledger, self.ledger_conn_id = release_id, ledger, ledger_conn_id
        self.lock_wait, self.docker_url, self.plan_only = lock_wait, docker_url, plan_only

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from docker_delivery.templates.release_spec import load_release
        from docker_delivery.templates.release_undo import undo_release

        ti = context["ti"]
        return undo_release(
            load_release(Path(self.release)),
            str(self.release_id),
            open_ledger(self.ledger, self.ledger_conn_id),
            owner=lock_owner(context),
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            docker_url=self.docker_url,
            lock_wait=self.lock_wait,
            dry_run=self.plan_only,
            log=self.log.info,
        )
