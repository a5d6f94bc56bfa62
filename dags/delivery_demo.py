"""delivery_demo: the example delivery of the demo app (dags/demo_app) to the local engine.

build once -> two test tasks in parallel, inside the image, by digest -> promote to staging
(a tag moves; nothing is rebuilt) -> start the staging release by digest -> print its URL.

Settings come from the environment the test bed writes (tests/bed/up): the registry and the base
image the demo app builds from.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from docker_delivery.operators.build import BuildImageOperator
from docker_delivery.operators.promote import PromoteImageOperator
from docker_delivery.operators.test import TestImageOperator

APP_DIR = Path(__file__).parent / "demo_app"
REGISTRY = os.environ.get("DOCKER_DELIVERY_BED_REGISTRY", "127.0.0.1:5000")
BASE_IMAGE = os.environ.get("DOCKER_DELIVERY_BED_PYTHON_IMAGE", "python:3.12-slim")
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
        "port": Param(18080, type="integer", description="host port of the staging release"),
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

    @task
    def start_staging(image: str, params: dict[str, object]) -> str:
        """Start the staging release by digest (one container) and wait until it answers.

        A stand-in for the deployment operators: one container, replaced on each run.
        """
        import time
        import urllib.request

        import docker

        from docker_delivery.images.ref import ImageRef

        port = int(str(params["port"]))
        labels = {
            "io.docker-delivery.managed": "true",
            "io.docker-delivery.service": "demo-app",
            "io.docker-delivery.environment": "staging",
        }
        client = docker.from_env()
        for old in client.containers.list(
            all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]}
        ):
            old.stop(timeout=10)
            old.remove(force=True)
        ref = ImageRef.parse(image).require_pinned()
        client.containers.run(
            image,
            detach=True,
            name="delivery-demo-staging",
            labels={**labels, "io.docker-delivery.digest": str(ref.digest)},
            environment={"APP_RELEASE": str(ref.tag), "APP_DIGEST": str(ref.digest)},
            ports={"8080/tcp": ("127.0.0.1", port)},
            restart_policy={"Name": "unless-stopped"},
        )
        url = f"http://127.0.0.1:{port}/"
        for _ in range(100):
            try:
                with urllib.request.urlopen(url + "version", timeout=2) as answer:
                    print(f"delivery_demo: staging answers at {url} with {answer.read().decode()}")
                    return url
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the staging release did not answer at {url}")

    revision() >> build >> tests >> promote
    start_staging(IMAGE)  # type: ignore[arg-type]
    promote >> dag.get_task("start_staging")
