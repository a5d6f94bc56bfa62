"""Run the delivery_demo DAG in Airflow (`airflow dags test`, no scheduler) against the test bed,
then print the URL where the delivered app answers, with the release it reports.

Run it through `make demo`, which creates the virtualenv, brings the bed up and migrates the
Airflow database first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = int(os.environ.get("DEMO_PORT", "18080"))


def bed_env() -> dict[str, str]:
    bed_dir = os.environ.get("DOCKER_DELIVERY_BED_DIR") or (
        "/var/lib/docker-delivery-bed"
        if os.geteuid() == 0
        else str(Path.home() / ".local/state/docker-delivery-bed")
    )
    lines = (Path(bed_dir) / "bed.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def main() -> int:
    env = {**os.environ, **bed_env()}
    airflow = str(Path(sys.executable).parent / "airflow")
    conf = json.dumps({"port": PORT})
    started = time.monotonic()
    run = subprocess.run([airflow, "dags", "test", "delivery_demo", "--conf", conf], env=env)
    if run.returncode != 0:
        print(f"delivery_demo failed (exit code {run.returncode}); see the task logs above")
        return run.returncode
    url = f"http://127.0.0.1:{PORT}/"
    with urllib.request.urlopen(url + "version", timeout=5) as answer:
        status, version = answer.status, json.loads(answer.read())
    took = time.monotonic() - started
    print()
    release, digest = version["release"], version["digest"]
    print(f"delivery_demo delivered release {release} ({digest}) in {took:.0f} s")
    print(f"HTTP {status} from {url}version")
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
