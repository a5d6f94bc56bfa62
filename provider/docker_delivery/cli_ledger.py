"""The ledger's commands of ``docker-delivery``:

    docker-delivery metrics [--by ...] [--period DAYS] [--format table|json|csv]
    docker-delivery ledger import FILE.jsonl | upgrade
    docker-delivery incident record SERVICE ENV --started T [--ended T] | end ID | list

Which ledger: ``--ledger`` (a SQLAlchemy URL or a SQLite file; Airflow is not imported), else
``--ledger-conn-id`` (an Airflow connection), else what Airflow's configuration says
(``[docker_delivery] ledger_conn_id`` / ``ledger``), else ``$AIRFLOW_HOME/docker-delivery/
ledger.db``: the same ledger the pipelines write to and the Deliveries view reads.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # the ledger (and SQLAlchemy) is imported when a command needs it
    from docker_delivery.ledger import DeliveryMetrics, Ledger

__all__ = ["add_parsers", "run"]

COMMANDS = ("metrics", "history", "ledger", "incident")


def add_ledger_options(p: argparse.ArgumentParser) -> None:
    """--ledger or --ledger-conn-id (see :func:`ledger_of`)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--ledger", help="a SQLAlchemy URL or a SQLite file (default: Airflow's)")
    g.add_argument("--ledger-conn-id", help="the Airflow connection of the ledger's database")


def add_parsers(sub: Any) -> None:
    m = sub.add_parser(
        "metrics",
        help="DORA's five metrics from the ledger, with their 2024 levels",
        description="Deployment frequency, change lead time, change fail rate, failed "
        "deployment recovery time and deployment rework rate, over a window of days.",
    )
    add_ledger_options(m)
    m.add_argument("--service")
    m.add_argument("--environment")
    m.add_argument("--days", type=float, default=30.0, help="the window, in days (default 30)")
    m.add_argument(
        "--by",
        choices=("service", "environment", "service,environment"),
        help="one row per service, environment, or both",
    )
    m.add_argument("--period", type=float, metavar="DAYS", help="one row per period of DAYS")
    m.add_argument("--format", choices=("table", "json", "csv"), default="table")
    m.add_argument("--json", action="store_true", help="the same as --format json")
    h = sub.add_parser("history", help="the deliveries in the ledger, the newest first")
    add_ledger_options(h)
    h.add_argument("--service")
    h.add_argument("--environment")
    h.add_argument("--release", metavar="ID", help="the records of one release (its services)")
    h.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    h.add_argument("--json", action="store_true", help="one JSON record a line")
    led = sub.add_parser("ledger", help="the ledger's database: import a JSON Lines file, upgrade")
    lsub = led.add_subparsers(dest="ledger_command", required=True, parser_class=type(led))
    imp = lsub.add_parser(
        "import", help="import a JSON Lines ledger (earlier versions'); safe to run again"
    )
    imp.add_argument("file", metavar="FILE.jsonl")
    add_ledger_options(imp)
    upg = lsub.add_parser("upgrade", help="create or upgrade the ledger's tables")
    add_ledger_options(upg)
    inc = sub.add_parser("incident", help="record an incident (for the recovery and fail rates)")
    isub = inc.add_subparsers(dest="incident_command", required=True, parser_class=type(inc))
    rec = isub.add_parser("record", help="record an incident in a service and environment")
    rec.add_argument("service")
    rec.add_argument("environment")
    rec.add_argument("--started", required=True, help="when it started (ISO-8601, UTC if no zone)")
    rec.add_argument("--ended", help="when it ended (ISO-8601); none while it lasts")
    rec.add_argument("--id", help="its id (default: SERVICE-ENVIRONMENT-<start>)")
    rec.add_argument("--title", default="")
    rec.add_argument("--caused-by", metavar="DAG_ID/RUN_ID", help="the deployment that caused it")
    add_ledger_options(rec)
    end = isub.add_parser("end", help="mark a recorded incident ended")
    end.add_argument("id")
    end.add_argument("--at", help="when it ended (ISO-8601; default now)")
    add_ledger_options(end)
    lst = isub.add_parser("list", help="the recorded incidents")
    lst.add_argument("--service")
    lst.add_argument("--environment")
    add_ledger_options(lst)


def ledger_of(args: argparse.Namespace) -> Ledger:
    """The ledger ``--ledger`` / ``--ledger-conn-id`` name, else Airflow's configuration's."""
    from docker_delivery.ledger import Ledger

    if args.ledger:
        return Ledger(args.ledger)
    from docker_delivery.hooks.ledger import open_ledger  # Airflow's configuration

    return open_ledger(conn_id=getattr(args, "ledger_conn_id", None))


def _time(text: str, name: str) -> dt.datetime:
    from docker_delivery.cli import UsageError

    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{name}: {text!r} is not an ISO-8601 time such as 2026-01-31T12:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def run(args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "metrics":
        return _metrics(args, out)
    ledger = ledger_of(args)
    if args.command == "history":
        return _history(ledger, args, out)
    if args.command == "ledger":
        if args.ledger_command == "import":
            result = ledger.import_jsonl(args.file)
            print(
                f"{args.file}: {result.read} records, {result.imported} imported, "
                f"{result.present} already in {ledger.where}"
                + (
                    f"; {len(result.skipped_lines)} unreadable line(s) skipped: "
                    f"{', '.join(map(str, result.skipped_lines[:20]))}"
                    if result.skipped_lines
                    else ""
                ),
                file=out,
            )
            return 0
        before, after = ledger.upgrade()
        print(f"{ledger.where}: schema version {before} -> {after}", file=out)
        return 0
    from docker_delivery.ledger import Incident

    if args.incident_command == "record":
        started = _time(args.started, "--started")
        incident = Incident(
            id=args.id or f"{args.service}-{args.environment}-{started:%Y%m%dT%H%M%SZ}",
            service=args.service,
            environment=args.environment,
            started_at=started,
            ended_at=_time(args.ended, "--ended") if args.ended else None,
            title=args.title,
            caused_by=args.caused_by,
        )
        ledger.record_incident(incident)
        print(f"recorded incident {incident.id} in {ledger.where}", file=out)
        return 0
    if args.incident_command == "end":
        at = _time(args.at, "--at") if args.at else dt.datetime.now(dt.timezone.utc)
        ended = ledger.end_incident(args.id, at)
        print(f"incident {ended.id} ended at {at.isoformat()}", file=out)
        return 0
    for incident in ledger.incidents(service=args.service, environment=args.environment):
        print(json.dumps(incident.to_dict()), file=out)
    return 0


def _metrics(args: argparse.Namespace, out: TextIO) -> int:
    from docker_delivery.ledger.metrics import delivery_metrics, metrics_by, metrics_report

    ledger = ledger_of(args)
    now = dt.datetime.now(dt.timezone.utc)
    scope: dict[str, Any] = {
        "now": now,
        "window_days": args.days,
        "service": args.service,
        "environment": args.environment,
    }
    fmt = "json" if args.json else args.format
    rows: list[DeliveryMetrics]
    if args.period:
        rows = metrics_report(ledger, period_days=args.period, **scope).series
    elif args.by:
        rows = metrics_by(ledger, by=args.by.split(","), **scope)
    else:
        rows = [delivery_metrics(ledger, **scope)]
    single = not args.period and not args.by
    if fmt == "json":
        data = [m.as_dict() for m in rows]
        print(json.dumps(data[0] if single else data, indent=2), file=out)
    elif fmt == "csv":
        flat = [m.csv_row() for m in rows]
        writer = csv.DictWriter(out, fieldnames=list(flat[0]) if flat else ["window_start"])
        writer.writeheader()
        writer.writerows(flat)
    elif single:
        print(f"{ledger.where}", file=out)
        print(rows[0].describe(), file=out)
    else:
        _table(rows, out, by_period=bool(args.period))
    return 0


def _table(rows: list[DeliveryMetrics], out: TextIO, *, by_period: bool) -> None:
    from docker_delivery.ledger.metrics import METRICS, duration

    head = ["period ending" if by_period else "scope", "deploys", "freq/day", "lead time",
            "fail rate", "recovery", "rework"]  # fmt: skip

    def cell(m: DeliveryMetrics, name: str) -> str:
        value = getattr(m, name)
        if value is None:
            return "n/a"
        text = (
            f"{value:.2f}"
            if name == "deployment_frequency"
            else f"{value:.1%}"
            if name.endswith("rate")
            else duration(value)
        )
        level = m.levels.get(name)
        return f"{text} {level}" if level else text

    lines = [head]
    for m in rows:
        label = (
            f"{m.window_end:%Y-%m-%d %H:%M}"
            if by_period
            else f"{m.service or '*'}/{m.environment or '*'}"
        )
        lines.append([label, str(m.total), *(cell(m, name) for name in METRICS)])
    _print_columns(lines, out)


def _history(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    from docker_delivery.cli import UsageError

    if args.limit < 1:
        raise UsageError(f"--limit must be 1 or more, got {args.limit}")
    if args.release:
        records = ledger.release(args.release)
    else:
        records = ledger.records(
            args.service, args.environment, limit=args.limit, newest_first=True
        )
    if args.json:
        for record in records:
            print(json.dumps(record.to_dict()), file=out)
        return 0
    lines = [["finished (UTC)", "service", "environment", "from -> to", "type", "outcome",
              "approved by", "run", "release"]]  # fmt: skip
    for r in records:
        before = r.previous_digest[7:19] if r.previous_digest else "none"
        kind = r.deployment_type + ("" if r.planned else " (unplanned)")
        lines.append([f"{r.finished_at:%Y-%m-%d %H:%M:%S}", r.service, r.environment,
                      f"{before} -> {r.digest[7:19]}", kind, r.outcome, r.approved_by or "",
                      f"{r.dag_id}/{r.run_id}", r.release_id or ""])  # fmt: skip
    _print_columns(lines, out)
    if not records:
        print(f"no deliveries in {ledger.where}", file=out)
    return 0


def _print_columns(lines: list[list[str]], out: TextIO) -> None:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=out)
