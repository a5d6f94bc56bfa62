"""A whole release back to what ran before it: every service, in reverse order, or none.

A release (several services delivered as one, :mod:`docker_delivery.templates.release_spec`)
left one ledger record per service, all with its release id. Going back means, for each service
whose record says the release reached it: what serves now must be that record's digest (else a
later release replaced it: refused), and what served before (its ``previous_digest``) must not
predate a contract migration (``check_contract``: refused, naming the service). Every check
passes before anything changes; then each service is rolled back (a switch back where the old
release is warm, a redeploy otherwise: :func:`~docker_delivery.strategies.rollback.roll_back`),
the last service of the release first.

This is domain code: it never imports Airflow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from docker_delivery.errors import RollbackImpossible
from docker_delivery.ledger.records import DeploymentRecord
from docker_delivery.strategies.base import Log

__all__ = ["ServiceUndo", "plan_release_rollback", "roll_back_release"]


def _short(digest: str | None) -> str:
    return digest[7:19] if digest else "nothing"


@dataclass(frozen=True)
class ServiceUndo:
    """What going back does to one service of the release."""

    record: DeploymentRecord
    action: Literal["roll_back", "nothing"]
    why: str

    def describe(self) -> str:
        r = self.record
        return f"{r.service}/{r.environment}: {self.action.replace('_', ' ')}: {self.why}"


def plan_release_rollback(
    release_id: str,
    records: Sequence[DeploymentRecord],
    live_digest: Callable[[DeploymentRecord], str | None],
) -> list[ServiceUndo]:
    """The steps, the release's last service first; RollbackImpossible listing every service
    that cannot go back (nothing changed then). ``live_digest``: what serves the record's
    service and environment now (None: nothing)."""
    steps: list[ServiceUndo] = []
    problems: list[str] = []
    for record in reversed(records):
        where = f"{record.service}/{record.environment}"
        if record.outcome != "success":
            steps.append(
                ServiceUndo(record, "nothing", f"the release ended {record.outcome} there")
            )
            continue
        live = live_digest(record)
        if live == record.digest and record.previous_digest is None:
            problems.append(f"{where}: this release was its first; nothing ran before it")
        elif live == record.digest:
            why = f"{_short(record.digest)} -> {_short(record.previous_digest)}"
            steps.append(ServiceUndo(record, "roll_back", why))
        elif live is not None and live == record.previous_digest:
            steps.append(ServiceUndo(record, "nothing", f"already back on {_short(live)}"))
        else:
            problems.append(
                f"{where} serves {_short(live)}, not this release's {_short(record.digest)}: "
                "a later delivery replaced it (roll that one back first)"
            )
    if problems:
        raise RollbackImpossible(
            f"the release {release_id} cannot go back, nothing was changed: " + "; ".join(problems)
        )
    return steps


def roll_back_release(
    release_id: str,
    records: Sequence[DeploymentRecord],
    *,
    live_digest: Callable[[DeploymentRecord], str | None],
    roll_back_one: Callable[[DeploymentRecord], Any],
    check_contract: Callable[[DeploymentRecord], None] | None = None,
    dry_run: bool = False,
    log: Log = print,
) -> list[dict[str, Any]]:
    """Every service of the release back to what served before it (see the module docstring).
    ``roll_back_one(record)`` rolls one service back (its result's ``as_dict()`` is returned);
    ``check_contract(record)`` raises when the service's previous release predates a contract
    migration. Returns one entry per service, in the order they were handled."""
    if not records:
        raise RollbackImpossible(f"the release {release_id} has no records")
    steps = plan_release_rollback(release_id, records, live_digest)
    refused: list[str] = []
    for step in steps:
        log(step.describe())
        if step.action == "roll_back" and check_contract is not None:
            try:
                check_contract(step.record)
            except Exception as exc:  # RollbackPastContract, or the check could not run
                refused.append(f"{step.record.service}: {exc}")
    if refused:
        raise RollbackImpossible(
            f"the release {release_id} cannot go back, nothing was changed: " + "; ".join(refused)
        )
    out: list[dict[str, Any]] = []
    for step in steps:
        entry: dict[str, Any] = {
            "service": step.record.service,
            "environment": step.record.environment,
            "action": step.action,
            "why": step.why,
        }
        if step.action == "roll_back" and not dry_run:
            result = roll_back_one(step.record)
            entry["result"] = result.as_dict() if hasattr(result, "as_dict") else result
        out.append(entry)
    return out
