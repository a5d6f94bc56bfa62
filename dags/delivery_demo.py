"""delivery_demo: the example delivery of the demo app (dags/demo_app) to the local engine.

build once -> two test tasks in parallel, inside the image, by digest -> promote to staging
(a tag moves; nothing is rebuilt) -> deploy staging by digest, minimum in-service (4 replicas,
2 always in service) behind the service's HAProxy router, whose URL the deploy task returns.

Settings come from the environment the test bed writes (tests/bed/up): the registry and the base
image the demo app builds from.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from docker_delivery.operators.build import BuildImageOperator
from docker_delivery.operators.deploy import MinimumInServiceDeployOperator
from docker_delivery.operators.promote import PromoteImageOperator
from docker_delivery.operators.test import TestImageOperator

APP_DIR = Path(__file__).parent / "demo_app"
REGISTRY = os.environ.get("DOCKER_DELIVERY_BED_REGISTRY", "127.0.0.1:5000")
BASE_IMAGE = os.environ.get("DOCKER_DELIVERY_BED_PYTHON_IMAGE", "python:3.12-slim")
HAPROXY_IMAGE = os.environ.get("DOCKER_DELIVERY_BED_HAPROXY_IMAGE", "haproxy:lts")
REPOSITORY = f"{REGISTRY}/docker-delivery/demo-app"
IMAGE = "{{ ti.xcom_pull(task_ids='build') }}"
# A smoke test in the image: start the app as it will run, ask it for its health and version.
SMOKE_TEST = [
    "python3",
    "-c",
    "import subprocess, time, urllib.request, os\n"
    "app = subprocess.Popen(['python3', '/app/app.py'], env={**os.environ, 'PORT': '8080'})\n"
    "for _ in range(50):\n"
    "    try:\n"
    "        print(urllib.request.urlopen('http://127.0.0.1:8080/health').read().decode())\n"
    "        break\n"
    "    except OSError:\n"
    "        time.sleep(0.1)\n"
    "else:\n"
    "    raise SystemExit('the app never answered /health')\n"
    "print(urllib.request.urlopen('http://127.0.0.1:8080/version').read().decode())\n"
    "app.terminate(); app.wait()\n",
]

with DAG(
    dag_id="delivery_demo",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["docker-delivery", "example"],
    params={
        "revision": Param(
            "", type="string", description="commit SHA; empty: the app's source hash"
        ),
        "port": Param(18080, type="integer", description="host port of the staging router"),
    },
) as dag:

    @task
    def revision(params: dict[str, object]) -> str:
        """The commit to deliver: the param, or a content hash of the demo app's source."""
        import hashlib

        if params["revision"]:
            return str(params["revision"])
        digest = hashlib.sha1()
        for path in sorted(
            p for p in APP_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts
        ):
            digest.update(str(path.relative_to(APP_DIR)).encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()

    build = BuildImageOperator(
        task_id="build",
        repository=REPOSITORY,
        revision="{{ ti.xcom_pull(task_ids='revision') }}",
        context=str(APP_DIR),
        build_args={"BASE_IMAGE": BASE_IMAGE},
        source="https://example.invalid/docker-delivery/demo-app",
    )
    tests = [
        TestImageOperator(
            task_id=f"test_{name}",
            image=IMAGE,
            command=command,
            junit_path="/tmp/junit.xml" if name == "unit" else None,
        )
        for name, command in {
            "unit": ["python3", "/app/run_tests.py", "--junit-xml", "/tmp/junit.xml"],
            "smoke": SMOKE_TEST,
        }.items()
    ]
    promote = PromoteImageOperator(
        task_id="promote_staging", image=IMAGE, repository=REPOSITORY, environment="staging"
    )

    deploy = MinimumInServiceDeployOperator(
        task_id="deploy_staging",
        service="demo-app",
        environment="staging",
        image=IMAGE,
        env={"APP_RELEASE": "{{ ti.xcom_pull(task_ids='revision') }}"},
        replicas=4,
        min_in_service=2,
        router_port="{{ params.port }}",
        router_image=HAPROXY_IMAGE,
        health_check={"path": "/health", "interval": 0.5, "healthy_threshold": 2},
        stop_grace=15,
    )

    revision() >> build >> tests >> promote >> deploy
