"""Benchmark: the ledger's reports over 100,000 records, and the Deliveries view's first paint.

Seeds a SQLite ledger (the default kind) with 100,000 made-up records over 84 days
(tests/kit/ledger_history.py; 6 services in 3 environments; not timed), then prints:

* metrics: ``delivery_metrics(ledger, window_days=84)`` over all 100,000 records, in the
  process (median of 5), and by service and environment, and by week (the view's charts);
* the CLI: ``docker-delivery metrics --ledger FILE --days 84``, the whole command (an
  interpreter's start and imports included), median of 3;
* the JSON Lines ledger of earlier versions for comparison: the same records read from a
  ``.jsonl`` file and their metrics computed (median of 3);
* the view: Airflow's API server with the provider's plugin (tests/kit/airflow_ui.py, a
  process of its own, not timed), and Debian's chromium (headless, through playwright) loading
  ``/docker-delivery/deliveries`` logged in; the browser's first contentful paint, and the time
  until the metrics' charts are drawn (their data fetched and computed), median of 5 loads.

Prints figures, asserts nothing. Needs chromium (tests/bed/up installs it) and the project's
virtualenv. Usage:

    .venv/bin/python scripts/bench_ledger.py [--records 100000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from kit.airflow_ui import api_server, browser  # noqa: E402
from kit.ledger_history import seed  # noqa: E402

from docker_delivery.ledger import Ledger, delivery_metrics, metrics_report  # noqa: E402
from docker_delivery.ledger.jsonl import read_jsonl  # noqa: E402
from docker_delivery.ledger.metrics import metrics_by  # noqa: E402

DAYS = 84


def timed(runs: int, call) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    count = parser.parse_args().records
    now = dt.datetime.now(dt.timezone.utc)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        ledger = Ledger(path)
        start = time.perf_counter()
        records = seed(ledger, count, now=now, days=DAYS)
        seeded, size = time.perf_counter() - start, path.stat().st_size / 2**20
        print(
            f"ledger: {ledger.count():,} records (SQLite), {size:.1f} MiB, seeded in {seeded:.1f} s"
        )

        took, metrics = timed(5, lambda: delivery_metrics(ledger, now=now, window_days=DAYS))
        print(f"metrics over {metrics.total:,} records (in the process): {took * 1000:.0f} ms")  # type: ignore[attr-defined]
        took, scopes = timed(5, lambda: metrics_by(ledger, now=now, window_days=DAYS))
        print(f"metrics by service and environment ({len(scopes)} scopes): {took * 1000:.0f} ms")  # type: ignore[arg-type]
        took, weeks = timed(
            5, lambda: metrics_report(ledger, now=now, window_days=DAYS, period_days=7).series
        )
        print(f"metrics by week ({len(weeks)} weeks, the view's charts): {took * 1000:.0f} ms")  # type: ignore[arg-type]
        cli = [str(ROOT / ".venv/bin/docker-delivery"), "metrics", "--ledger", str(path),
               "--days", str(DAYS), "--format", "json"]  # fmt: skip
        took, _ = timed(3, lambda: subprocess.run(cli, check=True, capture_output=True))
        print(f"`docker-delivery metrics` over them (the whole command): {took * 1000:.0f} ms")

        old = Path(tmp) / "ledger.jsonl"
        with old.open("w") as file:
            for record in records:
                file.write(json.dumps(record.to_dict()) + "\n")
        took, _ = timed(
            3,
            lambda: delivery_metrics(read_jsonl(old).records, now=now, window_days=DAYS),
        )
        print(f"for comparison, the same from a JSON Lines ledger: {took * 1000:.0f} ms")

        with api_server(Path(tmp) / "airflow", ledger=str(path)) as ui, browser() as chromium:
            context = chromium.new_context(viewport={"width": 1440, "height": 1000})
            context.add_cookies([{"name": "_token", "value": ui.token(), "url": ui.url + "/"}])
            paints, drawn = [], []
            for n in range(6):
                page = context.new_page()
                start = time.perf_counter()
                page.goto(f"{ui.url}/docker-delivery/deliveries")
                page.wait_for_function(
                    "performance.getEntriesByName('first-contentful-paint').length > 0"
                )
                fcp = page.evaluate(
                    "performance.getEntriesByName('first-contentful-paint')[0].startTime"
                )
                page.locator("body[data-metrics-drawn='true']").wait_for(timeout=60_000)
                if n:  # the first load warms the server's caches: not counted
                    paints.append(fcp / 1000)
                    drawn.append(time.perf_counter() - start)
                page.close()
            print(f"view, first contentful paint with {count:,} records: "
                  f"{statistics.median(paints) * 1000:.0f} ms (median of 5; "
                  f"{min(paints) * 1000:.0f}..{max(paints) * 1000:.0f})")  # fmt: skip
            print(
                f"view, until the five charts are drawn: {statistics.median(drawn) * 1000:.0f} ms"
            )


if __name__ == "__main__":
    main()
