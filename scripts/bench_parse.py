"""How long Airflow takes to parse each pipeline DAG file in dags/ (target: under 0.5 s each).

For each DAG file made with ``delivery_pipeline``, a fresh interpreter does what a DAG processor
does: Airflow is imported and a plain DAG built first (Airflow's own lazy imports are not the
pipeline's cost), then Airflow's DagBag parses the file and its figure (DagBag's
``dagbag_stats``, as ``airflow dags report`` shows) is read:

* cold: the first pipeline file of a process (it imports docker_delivery, pydantic models, the
  operators and the standard provider's operators): the median of three fresh processes, and
  the best of them (the machine's load shows in the difference);
* warm: the same file parsed again in that process (what building the DAG itself costs), the
  median of five.

Run: ``.venv/bin/python scripts/bench_parse.py`` (no test bed needed: parsing touches nothing).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "dags"
TARGET_S = 0.5
RUNS = 5
PROCESSES = 3

CHILD = r"""
import json, sys, time
import pendulum
t0 = time.perf_counter()
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import DAG, Asset, Param
for schedule in ("@daily", [Asset("warm-up")], None):
    with DAG("warm_up", schedule=schedule, start_date=pendulum.datetime(2025, 1, 1),
             params={"p": Param("", type="string")}):
        pass
airflow_s = time.perf_counter() - t0

def parse(path):
    bag = DagBag(path)
    if bag.import_errors:
        error = list(bag.import_errors.values())[0].strip().splitlines()[-1]
        print(json.dumps({"error": error}))
        raise SystemExit(0)
    [stat] = bag.dagbag_stats
    return stat.duration.total_seconds(), sum(len(d.tasks) for d in bag.dags.values())

path = sys.argv[1]
cold, tasks = parse(path)
warm = [parse(path)[0] for _ in range(int(sys.argv[2]))]
print(json.dumps({"airflow_s": airflow_s, "cold": cold, "warm": warm, "tasks": tasks}))
"""


def measure(path: Path) -> dict[str, object]:
    env = {
        **os.environ,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    }
    env.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(RUNS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    if done.returncode != 0:
        raise SystemExit(f"parsing {path.name} failed:\n{done.stderr[-3000:]}{done.stdout}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    files = sorted(p for p in DAGS.glob("*.py") if "delivery_pipeline(" in p.read_text())
    if not files:
        print("no pipeline DAG files in dags/")
        return 1
    started = time.monotonic()
    print(
        f"parse time per pipeline DAG file (DagBag), target < {TARGET_S} s; "
        f"Python {sys.version.split()[0]}"
    )
    print(f"{'file':<28} {'tasks':>5} {'cold s (median, best)':>22} {'warm s':>8}")
    worst, failed = 0.0, 0
    for path in files:
        runs = [measure(path) for _ in range(PROCESSES)]
        errors = [r["error"] for r in runs if "error" in r]
        if errors:
            failed += 1
            print(f"{path.name:<28} does not parse: {errors[0]}")
            continue
        colds = [float(r["cold"]) for r in runs]  # type: ignore[arg-type]
        cold = statistics.median(colds)
        warm = statistics.median(w for r in runs for w in r["warm"])  # type: ignore[attr-defined]
        worst = max(worst, cold)
        tasks = runs[0]["tasks"]
        print(f"{path.name:<28} {tasks:>5} {cold:>14.3f} {min(colds):>7.3f} {warm:>8.3f}")
    verdict = "under" if worst < TARGET_S else "OVER"
    print(f"slowest median cold parse {worst:.3f} s: {verdict} the {TARGET_S} s target")
    print(f"(measured in {time.monotonic() - started:.0f} s)")
    return 0 if worst < TARGET_S and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
