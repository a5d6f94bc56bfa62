"""Run the delivery_demo DAG in Airflow (`airflow dags test`, no scheduler) against the test bed,
then print the URL where the delivered app answers, with the release it reports.

``DEMO_DEPLOY=blue_green`` delivers by blue/green instead of minimum in-service (the run param
``deploy_staging``). The DAG's database connection ``demo_db`` is given to Airflow in the
environment (``AIRFLOW_CONN_DEMO_DB``), built from the bed's settings and its password file; it
is never printed.

Run it through `make demo`, which creates the virtualenv, brings the bed up and migrates the
Airflow database first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = 18080  # the staging router's port in dags/pipelines/delivery_demo.yaml


def bed_env() -> dict[str, str]:
    bed_dir = os.environ.get("DOCKER_DELIVERY_BED_DIR") or (
        "/var/lib/docker-delivery-bed"
        if os.geteuid() == 0
        else str(Path.home() / ".local/state/docker-delivery-bed")
    )
    lines = (Path(bed_dir) / "bed.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def database_uri(bed: dict[str, str], database: str | None = None) -> str:
    """The bed's PostgreSQL as containers reach it (the docker0 gateway), as a connection URI."""
    password = Path(bed["DOCKER_DELIVERY_BED_POSTGRES_PASSWORD_FILE"]).read_text().strip()
    user = urllib.parse.quote(bed["DOCKER_DELIVERY_BED_POSTGRES_USER"], safe="")
    host = bed["DOCKER_DELIVERY_BED_POSTGRES_CONTAINER_HOST"]
    port = bed["DOCKER_DELIVERY_BED_POSTGRES_PORT"]
    name = database or bed["DOCKER_DELIVERY_BED_POSTGRES_DB"]
    return f"postgres://{user}:{urllib.parse.quote(password, safe='')}@{host}:{port}/{name}"


def main() -> int:
    bed = bed_env()
    env = {**os.environ, **bed, "AIRFLOW_CONN_DEMO_DB": database_uri(bed)}
    airflow = str(Path(sys.executable).parent / "airflow")
    command = [airflow, "dags", "test", "delivery_demo"]
    kind = os.environ.get("DEMO_DEPLOY", "").strip()  # min_in_service (default) or blue_green
    if kind:
        command += ["--conf", json.dumps({"deploy_staging": kind})]
    started = time.monotonic()
    run = subprocess.run(command, env=env)
    if run.returncode != 0:
        print(f"delivery_demo failed (exit code {run.returncode}); see the task logs above")
        return run.returncode
    url = f"http://127.0.0.1:{PORT}/"
    with urllib.request.urlopen(url + "version", timeout=5) as answer:
        status, version = answer.status, json.loads(answer.read())
    took = time.monotonic() - started
    print()
    release, digest = version["release"], version["digest"]
    with urllib.request.urlopen(url + "greetings", timeout=5) as answer:
        greetings = answer.status
    print(f"delivery_demo delivered release {release} ({digest}) in {took:.0f} s")
    print(f"HTTP {status} from {url}version; HTTP {greetings} from {url}greetings (PostgreSQL)")
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
