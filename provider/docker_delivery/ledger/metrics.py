"""Delivery metrics (the four DORA metrics) computed from deployment records.

Over the records that finished inside a window ending ``now``:

* deployment frequency: successful deployments per day of the window;
* lead time for changes: the median time from a change's commit (``committed_at``) to its
  successful deployment's end, over the successful deployments that know their commit time;
* change failure rate: failed and rolled-back deployments over all attempted deployments
  (a delivery rejected at the approval gate was never attempted, so it is left out, as is one
  that changed nothing because another delivery held the lock: ``not_deployed``);
* time to restore: the median time from a failure (failed or rolled back) of a service in an
  environment to the next successful deployment of the same service and environment. Failures
  in a row are one incident, measured from its first failure: counting each of them would count
  one outage several times. An incident not yet restored is counted in ``unrestored``.

Every duration is in seconds. A metric with nothing to measure is None, never a made-up zero.

This is pure domain code: it must never import airflow.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from docker_delivery.ledger.errors import LedgerError
from docker_delivery.ledger.records import OUTCOMES, DeploymentRecord

__all__ = ["DeliveryMetrics", "delivery_metrics"]

_FAILURES = ("failed", "rolled_back")


@dataclass(frozen=True)
class DeliveryMetrics:
    """The DORA metrics of one window, with the counts they come from."""

    window_start: datetime
    window_end: datetime
    window_days: float
    service: str | None
    environment: str | None
    total: int
    success: int
    failed: int
    rolled_back: int
    rejected: int
    not_deployed: int
    """Attempts that changed nothing (another delivery held the lock): not deployments."""
    deployment_frequency: float
    """Successful deployments per day."""
    lead_time: float | None
    """Median seconds from commit to successful deployment; None without commit times."""
    change_failure_rate: float | None
    """Failed and rolled back over attempted deployments (0..1); None if none was attempted."""
    time_to_restore: float | None
    """Median seconds from a failure to the next success; None if no failure was restored."""
    unrestored: int
    """Incidents (failures in a row) with no later success in the window."""

    def as_dict(self) -> dict[str, Any]:
        """The metrics as JSON-able data (times in ISO-8601)."""
        data = asdict(self)
        data["window_start"] = self.window_start.isoformat()
        data["window_end"] = self.window_end.isoformat()
        return data

    def describe(self) -> str:
        """A short report for a person: a log line block, a CLI's output."""
        scope = f"{self.service or 'all services'} in {self.environment or 'all environments'}"
        lines = [
            f"Delivery metrics for {scope}, {self.window_days:g} days "
            f"to {self.window_end:%Y-%m-%d %H:%M} UTC",
            f"  deployments: {self.total} ({self.success} succeeded, {self.failed} failed, "
            f"{self.rolled_back} rolled back, {self.rejected} rejected"
            + (f", {self.not_deployed} not deployed" if self.not_deployed else "")
            + ")",
            f"  deployment frequency: {self.deployment_frequency:.2f} a day",
            "  lead time for changes: "
            + (
                "n/a (no successful deployment with a commit time)"
                if self.lead_time is None
                else f"median {_duration(self.lead_time)}"
            ),
            "  change failure rate: "
            + (
                "n/a (no deployment attempted)"
                if self.change_failure_rate is None
                else f"{self.change_failure_rate:.1%}"
            ),
            "  time to restore: "
            + (
                "n/a (no failure restored)"
                if self.time_to_restore is None
                else f"median {_duration(self.time_to_restore)}"
            )
            + (f"; {self.unrestored} not restored yet" if self.unrestored else ""),
        ]
        return "\n".join(lines)


def delivery_metrics(
    records: Iterable[DeploymentRecord],
    *,
    now: datetime,
    window_days: float = 30,
    service: str | None = None,
    environment: str | None = None,
) -> DeliveryMetrics:
    """The delivery metrics of the records that finished in the ``window_days`` up to ``now``.

    ``now`` must be timezone-aware; a record finished exactly at the window's start or at ``now``
    is inside it. ``service`` and ``environment`` keep only those records.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise LedgerError(f"now={now.isoformat()} is a naive datetime: pass a timezone-aware one")
    if not window_days > 0:
        raise LedgerError(f"window_days must be more than 0, got {window_days!r}")
    start = now - timedelta(days=window_days)
    inside = sorted(
        (
            record
            for record in records
            if start <= record.finished_at <= now
            and (service is None or record.service == service)
            and (environment is None or record.environment == environment)
        ),
        key=lambda record: record.finished_at,
    )
    counts = {outcome: 0 for outcome in OUTCOMES}
    for record in inside:
        counts[record.outcome] += 1
    attempted = counts["success"] + counts["failed"] + counts["rolled_back"]
    lead_times = [
        (record.finished_at - record.committed_at).total_seconds()
        for record in inside
        if record.outcome == "success" and record.committed_at is not None
    ]
    restores, unrestored = _restore_times(inside)
    return DeliveryMetrics(
        window_start=start,
        window_end=now,
        window_days=window_days,
        service=service,
        environment=environment,
        total=len(inside),
        success=counts["success"],
        failed=counts["failed"],
        rolled_back=counts["rolled_back"],
        rejected=counts["rejected"],
        not_deployed=counts["not_deployed"],
        deployment_frequency=counts["success"] / window_days,
        lead_time=statistics.median(lead_times) if lead_times else None,
        change_failure_rate=(
            (counts["failed"] + counts["rolled_back"]) / attempted if attempted else None
        ),
        time_to_restore=statistics.median(restores) if restores else None,
        unrestored=unrestored,
    )


def _restore_times(ordered: list[DeploymentRecord]) -> tuple[list[float], int]:
    """Seconds from each incident's first failure to the next success of the same service and
    environment, and how many incidents have no such success. ``ordered`` is by finished_at."""
    incident_start: dict[tuple[str, str], datetime] = {}
    restores: list[float] = []
    for record in ordered:
        where = (record.service, record.environment)
        if record.outcome in _FAILURES:
            incident_start.setdefault(where, record.finished_at)
        elif record.outcome == "success" and where in incident_start:
            restores.append((record.finished_at - incident_start.pop(where)).total_seconds())
    return restores, len(incident_start)


def _duration(seconds: float) -> str:
    """``93784`` -> ``1d 2h 03m``: days, hours and minutes, or seconds below a minute."""
    whole = round(seconds)
    if abs(whole) < 60:
        return f"{whole}s"
    sign = "-" if whole < 0 else ""
    minutes, _ = divmod(abs(whole), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{sign}{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    return f"{sign}{minutes}m"
