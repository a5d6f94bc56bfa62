"""Delivery metrics: DORA's five, from the ledger's deployments and incidents, placed against
the performance levels of DORA's 2024 report.

Over the deployments that finished inside a window ending ``now``:

* deployment frequency: successful deployments per day;
* change lead time: the median time from a change's commit (``committed_at``) to the end of its
  successful deployment;
* change fail rate: the deployments that failed, were rolled back, or caused an incident
  (an incident recorded with ``caused_by``), over the attempted deployments (a delivery
  rejected at the approval gate, or one that changed nothing because another delivery held the
  lock, was not attempted);
* failed deployment recovery time: the median time from an incident's start to its end, over
  the incidents that ended in the window. A failed or rolled-back deployment starts an incident
  in its service and environment (failures in a row are one incident, from the first), which
  the next successful deployment there ends; an incident recorded by hand runs from its start
  to its end. An incident not ended yet is counted in ``unrestored``;
* deployment rework rate: the attempted deployments that were unplanned (a rollback, or one
  made for an incident: a hotfix) over the attempted deployments.

Levels (DORA, Accelerate State of DevOps 2024, the software delivery performance clusters):

=====================  ============  ==================  ==================  =================
metric                 elite         high                medium              low
=====================  ============  ==================  ==================  =================
deployment frequency   >= 1 a day    >= 1 a week         >= 1 a month        less often
change lead time       < 1 day       < 1 week            < 1 month           longer
change fail rate       <= 5 %        <= 20 %             (10 %)              above 20 %
recovery time          < 1 hour      < 1 day             (< 1 day)           longer
=====================  ============  ==================  ==================  =================

A figure gets the best level whose published value it meets, tried from elite down. The report
gives the medium cluster a lower fail rate (10 %) than the high one (20 %), and the same
recovery time as high: those medium levels are never reached before high's. The 2024 clusters
publish no levels for rework rate: it is given without one.

Every duration is in seconds. A metric with nothing to measure is None, never a made-up zero.

This is pure domain code: it must never import airflow.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from docker_delivery.ledger.errors import LedgerError
from docker_delivery.ledger.records import DeploymentRecord, Incident

if TYPE_CHECKING:
    from docker_delivery.ledger.store import Ledger

__all__ = [
    "LEVELS",
    "METRICS",
    "DeliveryMetrics",
    "Report",
    "delivery_metrics",
    "metrics_by",
    "metrics_report",
]

DAY: Final = 86400.0
METRICS: Final = (
    "deployment_frequency",
    "change_lead_time",
    "change_fail_rate",
    "recovery_time",
    "rework_rate",
)
"""DORA's five metrics, by the names of :class:`DeliveryMetrics`'s fields."""

LEVELS: Final[dict[str, tuple[tuple[str, float], ...]]] = {
    # (level, bound): the best level whose bound the figure meets; frequency is "at least".
    "deployment_frequency": (("elite", 1.0), ("high", 1 / 7), ("medium", 1 / 30)),
    "change_lead_time": (("elite", DAY), ("high", 7 * DAY), ("medium", 30 * DAY)),
    "change_fail_rate": (("elite", 0.05), ("high", 0.20), ("medium", 0.10)),
    "recovery_time": (("elite", 3600.0), ("high", DAY), ("medium", DAY)),
}
"""DORA 2024's levels; a figure meeting none of them is ``low``."""

_ATTEMPTED: Final = ("success", "failed", "rolled_back")
_FAILURES: Final = ("failed", "rolled_back")

# The columns of a row, as Ledger.outcome_rows gives them.
_FINISHED, _COMMITTED, _SERVICE, _ENVIRONMENT, _OUTCOME, _PLANNED, _DAG, _RUN = range(8)


@dataclass(frozen=True)
class DeliveryMetrics:
    """DORA's five metrics over one window, the counts they come from, and their levels."""

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
    unplanned: int
    """Attempted deployments made because of an incident (rollbacks, hotfixes)."""
    caused_incidents: int
    """Successful deployments that an incident recorded by hand names as its cause."""
    deployment_frequency: float
    """Successful deployments per day."""
    change_lead_time: float | None
    """Median seconds from commit to successful deployment; None without commit times."""
    change_fail_rate: float | None
    """Failed, rolled back or incident-causing over attempted deployments (0..1)."""
    recovery_time: float | None
    """Median seconds from an incident's start to its end; None if none ended."""
    rework_rate: float | None
    """Unplanned over attempted deployments (0..1); None if none was attempted."""
    incidents: int
    """Incidents that ended in the window."""
    unrestored: int
    """Incidents not ended at the window's end."""
    levels: dict[str, str | None] = field(default_factory=dict)
    """Each metric's DORA 2024 level (elite, high, medium, low); None without a figure or a
    published level."""

    def as_dict(self) -> dict[str, Any]:
        """The metrics as JSON-able data (times in ISO-8601)."""
        data = asdict(self)
        data["window_start"] = self.window_start.isoformat()
        data["window_end"] = self.window_end.isoformat()
        return data

    def csv_row(self) -> dict[str, Any]:
        """One flat row for a CSV: the scope, the window, the counts, each metric and level."""
        data = self.as_dict()
        levels = data.pop("levels")
        for name in METRICS:
            data[f"{name}_level"] = levels.get(name) or ""
        return {k: "" if v is None else v for k, v in data.items()}

    def describe(self) -> str:
        """A short report for a person: a log line block, a CLI's output."""
        scope = f"{self.service or 'all services'} in {self.environment or 'all environments'}"

        def level(name: str) -> str:
            found = self.levels.get(name)
            return f"  [{found}]" if found else ""

        lines = [
            f"Delivery metrics for {scope}, {self.window_days:g} days "
            f"to {self.window_end:%Y-%m-%d %H:%M} UTC",
            f"  deployments: {self.total} ({self.success} succeeded, {self.failed} failed, "
            f"{self.rolled_back} rolled back, {self.rejected} rejected"
            + (f", {self.not_deployed} not deployed" if self.not_deployed else "")
            + f"; {self.unplanned} unplanned)",
            f"  deployment frequency: {self.deployment_frequency:.2f} a day"
            + level("deployment_frequency"),
            "  change lead time: "
            + (
                "n/a (no successful deployment with a commit time)"
                if self.change_lead_time is None
                else f"median {duration(self.change_lead_time)}" + level("change_lead_time")
            ),
            "  change fail rate: "
            + (
                "n/a (no deployment attempted)"
                if self.change_fail_rate is None
                else f"{self.change_fail_rate:.1%}" + level("change_fail_rate")
            ),
            "  failed deployment recovery time: "
            + (
                "n/a (no incident ended)"
                if self.recovery_time is None
                else f"median {duration(self.recovery_time)} over {self.incidents} incident(s)"
                + level("recovery_time")
            )
            + (f"; {self.unrestored} not restored yet" if self.unrestored else ""),
            "  deployment rework rate: "
            + (
                "n/a (no deployment attempted)"
                if self.rework_rate is None
                else f"{self.rework_rate:.1%} (no DORA 2024 level)"
            ),
        ]
        return "\n".join(lines)


def level_of(metric: str, value: float | None) -> str | None:
    """``value``'s DORA 2024 level for ``metric``; None without a value or published levels."""
    if value is None or metric not in LEVELS:
        return None
    for name, bound in LEVELS[metric]:
        if metric == "deployment_frequency":
            met = value >= bound
        elif metric == "change_fail_rate":
            met = value <= bound
        else:  # durations: "less than"
            met = value < bound
        if met:
            return name
    return "low"


def delivery_metrics(
    source: Ledger | Iterable[DeploymentRecord],
    *,
    now: datetime,
    window_days: float = 30,
    service: str | None = None,
    environment: str | None = None,
    incidents: Iterable[Incident] | None = None,
    dag_ids: Collection[str] | None = None,
) -> DeliveryMetrics:
    """The metrics of the deployments that finished in the ``window_days`` up to ``now``.

    ``source`` is a :class:`Ledger` (its rows are read by index, and its recorded incidents
    used) or records; ``incidents`` adds recorded incidents to records. ``now`` must be
    timezone-aware; a deployment finished exactly at the window's start or at ``now`` is inside
    it. ``service``, ``environment`` and ``dag_ids`` keep only those.
    """
    start, end = _window(now, window_days)
    rows, recorded = _read(source, start, end, service, environment, incidents, dag_ids)
    return _metrics(rows, recorded, start, end, window_days, service, environment)


def metrics_by(
    source: Ledger | Iterable[DeploymentRecord],
    *,
    now: datetime,
    window_days: float = 30,
    by: Sequence[str] = ("service", "environment"),
    service: str | None = None,
    environment: str | None = None,
    incidents: Iterable[Incident] | None = None,
    dag_ids: Collection[str] | None = None,
) -> list[DeliveryMetrics]:
    """The metrics of each service, environment, or service and environment (``by``) that
    has deployments in the window, in name order."""
    unknown = set(by) - {"service", "environment"}
    if unknown or not by:
        raise LedgerError(f"metrics are grouped by service and/or environment, not {by!r}")
    start, end = _window(now, window_days)
    rows, recorded = _read(source, start, end, service, environment, incidents, dag_ids)
    groups: dict[tuple[str | None, str | None], list[Sequence[Any]]] = defaultdict(list)
    for row in rows:
        groups[
            (
                row[_SERVICE] if "service" in by else service,
                row[_ENVIRONMENT] if "environment" in by else environment,
            )
        ].append(row)
    return [
        _metrics(
            groups[scope],
            [i for i in recorded if _in_scope(i, *scope)],
            start,
            end,
            window_days,
            *scope,
        )
        for scope in sorted(groups, key=lambda s: (s[0] or "", s[1] or ""))
    ]


class Report(NamedTuple):
    """A window's metrics and those of each of its periods (the oldest first)."""

    summary: DeliveryMetrics
    series: list[DeliveryMetrics]


def metrics_report(
    source: Ledger | Iterable[DeploymentRecord],
    *,
    now: datetime,
    window_days: float = 84,
    period_days: float = 7,
    service: str | None = None,
    environment: str | None = None,
    incidents: Iterable[Incident] | None = None,
    dag_ids: Collection[str] | None = None,
) -> Report:
    """The window's metrics, and those of each period of ``period_days`` in it, the oldest
    first (for charts), from one read of the ledger. An incident spanning periods counts in
    the period it ended in."""
    if not period_days > 0 or period_days > window_days:
        raise LedgerError(
            f"period_days must be more than 0 and at most window_days, got {period_days!r}"
        )
    start, end = _window(now, window_days)
    rows, recorded = _read(source, start, end, service, environment, incidents, dag_ids)
    summary = _metrics(rows, recorded, start, end, window_days, service, environment)
    count = int(-(-window_days // period_days))
    edges = [end - timedelta(days=period_days * (count - n)) for n in range(count + 1)]
    edges[0] = max(edges[0], start)
    incidents_all = _incidents(rows, recorded, end)
    series = []
    index = 0
    for first, last in pairwise(edges):
        lo, hi = first.timestamp(), last.timestamp()
        part = []
        while index < len(rows) and rows[index][_FINISHED] <= hi:
            if rows[index][_FINISHED] >= lo:
                part.append(rows[index])
            index += 1
        days = (last - first).total_seconds() / DAY
        series.append(
            _metrics(part, recorded, first, last, days, service, environment, incidents_all)
        )
    return Report(summary, series)


# -- computing ---------------------------------------------------------------------------------


def _window(now: datetime, window_days: float) -> tuple[datetime, datetime]:
    if now.tzinfo is None or now.utcoffset() is None:
        raise LedgerError(f"now={now.isoformat()} is a naive datetime: pass a timezone-aware one")
    if not isinstance(window_days, (int, float)) or not window_days > 0:
        raise LedgerError(f"window_days must be more than 0, got {window_days!r}")
    now = now.astimezone(timezone.utc)
    return now - timedelta(days=window_days), now


def _read(
    source: Ledger | Iterable[DeploymentRecord],
    start: datetime,
    end: datetime,
    service: str | None,
    environment: str | None,
    incidents: Iterable[Incident] | None,
    dag_ids: Collection[str] | None = None,
) -> tuple[Sequence[Sequence[Any]], list[Incident]]:
    from docker_delivery.ledger.store import Ledger

    if isinstance(source, Ledger):
        recorded = source.incidents(start, end, service, environment) + list(incidents or ())
        causes = any(i.caused_by for i in recorded)  # only then are the runs' names needed
        rows = source.outcome_rows(start, end, service, environment, dag_ids, runs=causes)
        return rows, recorded
    lo, hi = start.timestamp(), end.timestamp()
    rows = sorted(
        (
            _as_row(record)
            for record in source
            if (service is None or record.service == service)
            and (environment is None or record.environment == environment)
            and (dag_ids is None or record.dag_id in dag_ids)
        ),
        key=lambda row: row[_FINISHED],
    )
    rows = [row for row in rows if lo <= row[_FINISHED] <= hi]
    recorded = [i for i in incidents or () if _in_scope(i, service, environment)]
    return rows, recorded


def _as_row(record: DeploymentRecord) -> tuple[Any, ...]:
    return (
        record.finished_at.timestamp(),
        record.committed_at.timestamp() if record.committed_at else None,
        record.service,
        record.environment,
        record.outcome,
        record.planned,
        record.dag_id,
        record.run_id,
    )


def _in_scope(incident: Incident, service: str | None, environment: str | None) -> bool:
    return (service is None or incident.service == service) and (
        environment is None or incident.environment == environment
    )


def _incidents(
    rows: Sequence[Sequence[Any]], recorded: Iterable[Incident], end: datetime
) -> list[tuple[float, float | None]]:
    """Every incident as (start, end or None), in epoch seconds: those the deployments show
    (from a first failure to the next success of the same service and environment), and those
    recorded by hand (as they ended by ``end``)."""
    found: list[tuple[float, float | None]] = []
    open_since: dict[tuple[str, str], float] = {}
    for row in rows:
        where = (row[_SERVICE], row[_ENVIRONMENT])
        if row[_OUTCOME] in _FAILURES:
            open_since.setdefault(where, row[_FINISHED])
        elif row[_OUTCOME] == "success" and where in open_since:
            found.append((open_since.pop(where), row[_FINISHED]))
    found.extend((started, None) for started in open_since.values())
    limit = end.timestamp()
    for incident in recorded:
        ended = incident.ended_at.timestamp() if incident.ended_at else None
        found.append(
            (
                incident.started_at.timestamp(),
                ended if ended is not None and ended <= limit else None,
            )
        )
    return found


def _metrics(
    rows: Sequence[Sequence[Any]],
    recorded: list[Incident],
    start: datetime,
    end: datetime,
    window_days: float,
    service: str | None,
    environment: str | None,
    incidents: list[tuple[float, float | None]] | None = None,
) -> DeliveryMetrics:
    counts = dict.fromkeys(("success", "failed", "rolled_back", "rejected", "not_deployed"), 0)
    lead_times: list[float] = []
    unplanned = 0
    successes: set[str] = set()
    causes = {i.caused_by for i in recorded if i.caused_by and _in_scope(i, service, environment)}
    for row in rows:
        outcome = row[_OUTCOME]
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome in _ATTEMPTED and not row[_PLANNED]:
            unplanned += 1
        if outcome == "success":
            if row[_COMMITTED] is not None:
                lead_times.append(row[_FINISHED] - row[_COMMITTED])
            if causes:
                successes.add(f"{row[_DAG]}/{row[_RUN]}")
    caused = len(causes & successes)
    attempted = counts["success"] + counts["failed"] + counts["rolled_back"]
    if incidents is None:
        incidents = _incidents(
            rows, [i for i in recorded if _in_scope(i, service, environment)], end
        )
    lo, hi = start.timestamp(), end.timestamp()
    recoveries = [e - s for s, e in incidents if e is not None and lo <= e <= hi]
    unrestored = sum(1 for s, e in incidents if s <= hi and (e is None or e > hi))
    values = {
        "deployment_frequency": counts["success"] / window_days,
        "change_lead_time": statistics.median(lead_times) if lead_times else None,
        "change_fail_rate": (
            (counts["failed"] + counts["rolled_back"] + caused) / attempted if attempted else None
        ),
        "recovery_time": statistics.median(recoveries) if recoveries else None,
        "rework_rate": unplanned / attempted if attempted else None,
    }
    return DeliveryMetrics(
        window_start=start,
        window_end=end,
        window_days=window_days,
        service=service,
        environment=environment,
        total=len(rows),
        success=counts["success"],
        failed=counts["failed"],
        rolled_back=counts["rolled_back"],
        rejected=counts["rejected"],
        not_deployed=counts["not_deployed"],
        unplanned=unplanned,
        caused_incidents=caused,
        incidents=len(recoveries),
        unrestored=unrestored,
        levels={name: level_of(name, value) for name, value in values.items()},
        **values,  # type: ignore[arg-type]
    )


def duration(seconds: float) -> str:
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
