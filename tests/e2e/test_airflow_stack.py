"""The provider in a real Airflow deployment: docker-compose.yml on the bed's Swarm.

``scripts/airflow-stack up --swarm`` builds the Airflow image from the Dockerfile (on the bed's
Python base) and deploys the stack with ``docker stack deploy``: PostgreSQL, Redis, the API
server, the scheduler, the DAG processor, the triggerer and a Celery worker. Everything below
goes through Airflow's REST API (``/api/v2``), as a user or the UI would: the connections of the
remote engine (TLS) and of the registry are added, the DAG is unpaused and triggered, the
scheduler runs it on the Celery worker, which delivers to the bed's remote engine through its
connection (not through a Docker socket or the host's network). A smoke test fails on purpose
while an Airflow Variable says so; the run fails; the Variable is deleted and the failed task
is cleared through the endpoint the UI's "Clear" calls; the same run then completes without
running the finished tasks again (the build keeps its one try), and the history read back
(task instances and their tries) says so. Before the stage, an approval gate waits for its
answer and is answered through the HITL API; the stage's health sensor is deferred to the
triggerer (the stack's ``[operators] default_deferrable``). Then the example ``delivery_demo``
is triggered as the UI's Trigger button does, with the connections the README's section names
(engine, registry, database), and delivers the demo app to the remote engine, its database
migrated. The stack is taken down at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kit.loadgen import free_port
from kit.pipeline import pipeline_dag_file
from kit.postgres import psql
from kit.remote import bed_connections

pytestmark = pytest.mark.timeout(1800)

ROOT = Path(__file__).resolve().parents[2]
STACK = "dd-stack-test"
DAG_ID = "dd_stack_delivery"
FAILING = "staging.smoke_once"
GATE = "approve_staging"  # a human-in-the-loop task: parked awaiting input, in no worker slot
SENSOR = "staging.verify_health"  # deferrable by [operators] default_deferrable (the stack's)
FLAG = "dd_stack_fail_smoke"
ENGINE_CONN = "dd_stack_engine"
REGISTRY_CONN = "dd_stack_registry"
DEMO = "delivery_demo"
DEMO_PORT = 18080  # the staging router's port in dags/pipelines/delivery_demo.yaml


def bed_env(bed: Any) -> dict[str, str]:
    values = dict(
        line.split("=", 1) for line in (bed.dir / "bed.env").read_text().splitlines() if "=" in line
    )
    return {k: v for k, v in values.items() if k.startswith("DOCKER_DELIVERY_BED_STACK_")}


def write_dags(folder: Path, bed: Any, images: dict[str, str], service: str, port: int) -> None:
    """The DAG folder the stack mounts: the examples (dags/) and one pipeline more, delivering
    to the remote engine through ENGINE_CONN and promoting in the registry through REGISTRY_CONN.
    The remote engine builds the demo app, and the bed's remote machine has no way out to a
    package mirror: its base is the bed's Python with its PostgreSQL driver."""
    shutil.copytree(ROOT / "dags", folder, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    registry = images["DOCKER_DELIVERY_BED_STACK_REGISTRY"]
    once = [
        "sh",
        "-c",
        'if [ -n "$FAIL_SMOKE" ]; then echo "failing on purpose: $FAIL_SMOKE"; exit 1; fi; '
        "echo smoke: ok",
    ]
    spec = {
        "service": service,
        "image": f"{registry}/dd-test/{service}",
        "defaults": {
            "replicas": 2,
            "stop_grace": 5,
            "engine": ENGINE_CONN,
            "health_check": {"path": "/health", "interval": 0.5},
            "router": {"image": bed.haproxy_image, "check_interval_ms": 500, "port": port},
        },
        "environments": {"staging": {}},
        "pipeline": {
            "dag_id": DAG_ID,
            "mode": "continuous_delivery",
            "trigger": {"schedule": None},
            "docker_conn_id": REGISTRY_CONN,
            "engine": ENGINE_CONN,
            "build": {
                "context": "demo_app",
                "build_args": {"BASE_IMAGE": images["DOCKER_DELIVERY_BED_STACK_DEMO_BASE_IMAGE"]},
            },
            "tests": [{"name": "quick", "command": ["python3", "-c", "print('quick: ok')"]}],
            "stages": [
                {
                    "environment": "staging",
                    "approval": True,
                    "deploy": {"type": "min_in_service", "min_in_service": 1},
                    "verify": {
                        "smoke": [
                            {
                                "name": "once",
                                "command": once,
                                "environment": {
                                    "FAIL_SMOKE": f"{{{{ var.value.get('{FLAG}', '') }}}}"
                                },
                            },
                            {
                                "name": "version",
                                "http": {"path": "/version", "expect_digest": True},
                            },
                        ]
                    },
                }
            ],
        },
    }
    pipeline_dag_file(folder, "pipeline", spec)
    for path in [folder, *folder.rglob("*")]:  # the services run as uid 50000
        path.chmod(0o755 if path.is_dir() else 0o644)


class Api:
    """Airflow's REST API as the admin user, with a JWT from /auth/token."""

    def __init__(self, url: str, password: str) -> None:
        token = httpx.post(
            f"{url}/auth/token", json={"username": "admin", "password": password}, timeout=30
        )
        token.raise_for_status()
        self.http = httpx.Client(
            base_url=f"{url}/api/v2",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=30,
        )

    def call(self, method: str, path: str, **kw: Any) -> Any:
        response = self.http.request(method, path, **kw)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json() if response.content else None

    def run_state(self, run_id: str, dag_id: str = DAG_ID) -> str:
        return str(self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_run(self, run_id: str, states: set[str], timeout: float, dag_id: str = DAG_ID) -> str:
        deadline = time.monotonic() + timeout
        while (state := self.run_state(run_id, dag_id)) not in states:
            assert time.monotonic() < deadline, f"run {run_id} still {state} after {timeout:.0f}s"
            time.sleep(3)
        return state

    def task_instances(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, dict[str, Any]]:
        found = self.call(
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100}
        )
        return {ti["task_id"]: ti for ti in found["task_instances"]}


def test_the_compose_file_reads_in_docker_compose_and_asks_for_its_secrets() -> None:
    """Debian's docker-compose (v1, installed by the bed) validates the file; without the
    Fernet key and the JWT secret it refuses to start, saying what to set."""
    command = ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"]
    secrets = {"AIRFLOW_FERNET_KEY": "k" * 44, "AIRFLOW_JWT_SECRET": "s"}
    env = {k: v for k, v in os.environ.items() if k not in secrets}
    ok = subprocess.run(command, env={**env, **secrets}, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(command, env=env, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "is required (see the top of this file)" in refused.stderr


def approve(api: Api, run_id: str) -> None:
    """Wait for the approval gate to wait for its answer (Airflow 3.3 parks it awaiting input,
    in no worker slot), then approve it as the UI does, through the HITL endpoint; the answer
    says who responded."""
    path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{GATE}"
    deadline = time.monotonic() + 900
    while (state := api.call("GET", path)["state"]) not in ("awaiting_input", "deferred"):
        assert state not in ("failed", "upstream_failed", "success"), f"{GATE} is {state}"
        assert time.monotonic() < deadline, f"{GATE} never waited for its answer"
        time.sleep(3)
    answer = api.call("PATCH", f"{path}/-1/hitlDetails", json={"chosen_options": ["Approve"]})
    assert answer["chosen_options"] == ["Approve"]
    assert answer["responded_by"]["name"] == "admin", answer


@pytest.fixture(scope="module")
def stack(bed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    images = bed_env(bed)
    if not images:
        pytest.fail("the bed has no images for the Airflow stack (bed.env predates them): up")
    dags = tmp_path_factory.mktemp("stack-dags")
    service = f"ddstack{uuid.uuid4().hex[:6]}"
    registry = images["DOCKER_DELIVERY_BED_STACK_REGISTRY"]  # reached by workers and engine
    write_dags(dags, bed, images, service, free_port())
    port = free_port()
    password = uuid.uuid4().hex
    env = {
        **os.environ,
        "AIRFLOW_STACK": STACK,
        "AIRFLOW_IMAGE": "docker-delivery-bed/airflow:stack",
        "AIRFLOW_BASE_IMAGE": images["DOCKER_DELIVERY_BED_STACK_BASE_IMAGE"],
        "POSTGRES_IMAGE": images["DOCKER_DELIVERY_BED_STACK_POSTGRES_IMAGE"],
        "REDIS_IMAGE": images["DOCKER_DELIVERY_BED_STACK_REDIS_IMAGE"],
        "AIRFLOW_API_PORT": str(port),
        "AIRFLOW_ADMIN_PASSWORD": password,
        "AIRFLOW_DAGS_DIR": str(dags),
        # where delivery_demo delivers (the README's section): the remote engine, the registry
        # as it reaches it, the address its router publishes on
        "DOCKER_DELIVERY_DEMO_ENGINE": ENGINE_CONN,
        "DOCKER_DELIVERY_DEMO_REGISTRY_CONN": REGISTRY_CONN,
        "DOCKER_DELIVERY_DEMO_ADDRESS": bed.remote_host,
        "DOCKER_DELIVERY_BED_REGISTRY": registry,
        "DOCKER_DELIVERY_BED_PYTHON_IMAGE": images["DOCKER_DELIVERY_BED_STACK_DEMO_BASE_IMAGE"],
        "DOCKER_DELIVERY_BED_HAPROXY_IMAGE": bed.haproxy_image,
    }
    script = str(ROOT / "scripts" / "airflow-stack")
    subprocess.run([script, "down", "--swarm"], env=env, check=False, capture_output=True)
    started = time.monotonic()
    up = subprocess.run([script, "up", "--swarm"], env=env, capture_output=True, text=True)
    print(up.stdout, up.stderr)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        assert f"login: admin / {password}" in up.stdout
        yield {
            "api": Api(f"http://127.0.0.1:{port}", password),
            "service": service,
            "registry": registry,
            "up_s": time.monotonic() - started,
            "dags": dags,
            "images": images,
        }
    finally:
        logs = subprocess.run(
            ["docker", "service", "logs", "--tail", "60", f"{STACK}_airflow-worker"],
            capture_output=True,
            text=True,
        )
        print(logs.stdout[-6000:], logs.stderr[-3000:])
        subprocess.run([script, "down", "--swarm"], env=env, check=False)
        remote_cleanup(bed, service)
        remote_cleanup(bed, "demo-app")


def remote_cleanup(bed: Any, service: str) -> None:
    from kit.cleanup import remove_service
    from kit.remote import REMOTE_CONN_ID

    from docker_delivery.hooks.engine import engine_client

    os.environ.update(bed_connections(bed))
    client = engine_client(engine_conn_id=REMOTE_CONN_ID)
    try:
        remove_service(client, service, "staging")
    finally:
        client.close()


@pytest.fixture(scope="module")
def connected(bed: Any, stack: dict[str, Any]) -> Api:
    """The engine's and the registry's connections added as the UI's form does (REST API), and
    both DAGs parsed by the DAG processor."""
    api: Api = stack["api"]
    print(f"stack up in {stack['up_s']:.0f}s (image build included)")
    remote = json.loads(bed_connections(bed)[f"AIRFLOW_CONN_{'dd_bed_remote'.upper()}"])
    api.call(
        "POST",
        "/connections",
        json={
            "connection_id": ENGINE_CONN,
            "conn_type": "docker_engine",
            "host": remote["host"],
            "extra": json.dumps(remote["extra"]),
        },
    )
    api.call(
        "POST",
        "/connections",
        json={
            "connection_id": REGISTRY_CONN,
            "conn_type": "docker",
            "host": f"http://{stack['registry']}",
        },
    )
    deadline = time.monotonic() + 300
    for dag_id in (DAG_ID, DEMO):
        while api.http.get(f"/dags/{dag_id}").status_code != 200:  # parsed by the DAG processor
            assert time.monotonic() < deadline, f"the DAG processor never parsed {dag_id}"
            time.sleep(3)
    return api


def test_a_failed_stage_cleared_through_the_rest_api_completes_the_run_on_the_celery_worker(
    bed: Any, connected: Api
) -> None:
    api = connected
    api.call("POST", "/variables", json={"key": FLAG, "value": "the dependency is down"})
    api.call("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    run = api.call("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None})
    run_id = run["dag_run_id"]
    t0 = time.monotonic()
    approve(api, run_id)
    assert api.wait_run(run_id, {"failed", "success"}, timeout=900) == "failed"
    first = api.task_instances(run_id)
    print(f"first try: {time.monotonic() - t0:.0f}s", {k: v["state"] for k, v in first.items()})
    assert (first[FAILING]["state"], first[FAILING]["try_number"]) == ("failed", 1)
    assert first["build"]["state"] == "success"
    # The human fixes what was broken, then clears the failed task as the UI's "Clear" does.
    api.call("DELETE", f"/variables/{FLAG}")
    cleared = api.call(
        "POST",
        f"/dags/{DAG_ID}/clearTaskInstances",
        json={
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": [FAILING],
            "include_downstream": True,
            "only_failed": False,
            "reset_dag_runs": True,
        },
    )
    assert FAILING in {ti["task_id"] for ti in cleared["task_instances"]}
    t1 = time.monotonic()
    assert api.wait_run(run_id, {"failed", "success"}, timeout=600) == "success"
    after = api.task_instances(run_id)
    print(f"after the clear: {time.monotonic() - t1:.0f}s")
    assert all(ti["state"] in ("success", "skipped") for ti in after.values()), after
    assert after["build"]["try_number"] == 1  # built once: not run again
    assert after[FAILING]["try_number"] == 2
    assert after[GATE]["try_number"] == 1 and after[SENSOR]["try_number"] == 1
    log = json.dumps(
        api.call(
            "GET",
            f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{SENSOR}/logs/1",
            params={"full_content": True},
        )
    )
    # It deferred (its wait ran in the triggerer) before anything said healthy.
    assert "Pausing task as DEFERRED" in log, log[-3000:]
    assert "Healthy" not in log.split("Pausing task as DEFERRED", 1)[0], log[-3000:]
    tries = api.call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{FAILING}/tries")
    assert [t["state"] for t in tries["task_instances"]] == ["failed", "success"]
    # Run by the Celery worker: every task's host is the worker's container, none the scheduler's.
    hosts = {ti["hostname"] for ti in after.values() if ti["state"] == "success"}
    worker = subprocess.run(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.swarm.service.name={STACK}_airflow-worker",
        ],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert len(worker) == 1 and hosts == {worker[0][:12]}, hosts
    # The ledger is in the stack's PostgreSQL: the retry's record replaced the failed try's,
    # and counts both attempts.
    postgres = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}_postgres"],
        capture_output=True, text=True, check=True,
    ).stdout.split()[0]  # fmt: skip
    rows = subprocess.run(
        ["docker", "exec", postgres, "psql", "-U", "airflow", "-d", "airflow", "-tA", "-c",
         "SELECT run_id, outcome, attempts FROM docker_delivery_deployments "
         f"WHERE dag_id = '{DAG_ID}'"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert rows == [f"{run_id}|success|2"], rows
    # The Deliveries view (the provider's plugin in the API server) shows it, to a login only.
    base = str(api.http.base_url).removesuffix("/api/v2/")
    history = api.http.get(f"{base}/docker-delivery/api/history", params={"dag_id": DAG_ID})
    assert history.status_code == 200, history.text
    assert [(r["run_id"], r["outcome"]) for r in history.json()] == [(run_id, "success")]
    assert httpx.get(f"{base}/docker-delivery/deliveries", timeout=30).status_code == 401


def test_delivery_demo_triggered_as_from_the_ui_delivers_to_the_remote_engine(
    bed: Any, stack: dict[str, Any], connected: Api
) -> None:
    """The README's section: the stack started with the demo's environment, its database's
    connection added, the DAG unpaused and triggered without parameters (the UI's Trigger
    button); built, tested, promoted, migrated and deployed on the remote engine by the Celery
    worker; the app answers through its router there, with its digest and the migrated table."""
    api = connected
    database = f"dd_stack_demo_{os.urandom(4).hex()}"  # a new, empty database: every migration
    psql(bed, bed.postgres_db, f"CREATE DATABASE {database}")
    try:
        api.call(
            "POST",
            "/connections",
            json={
                "connection_id": "demo_db",
                "conn_type": "postgres",
                "host": stack["images"]["DOCKER_DELIVERY_BED_STACK_POSTGRES_HOST"],
                "port": bed.postgres_port,
                "login": bed.postgres_user,
                "password": bed.postgres_password(),
                "schema": database,
            },
        )
        api.call("PATCH", f"/dags/{DEMO}", json={"is_paused": False})
        run_id = api.call("POST", f"/dags/{DEMO}/dagRuns", json={"logical_date": None})[
            "dag_run_id"
        ]
        t0 = time.monotonic()
        state = api.wait_run(run_id, {"failed", "success"}, timeout=900, dag_id=DEMO)
        tis = api.task_instances(run_id, DEMO)
        print(f"delivery_demo in the stack: {state} in {time.monotonic() - t0:.0f}s")
        assert state == "success", {k: v["state"] for k, v in tis.items()}
        assert tis["build"]["try_number"] == 1
        assert tis["staging.migrate_contract"]["state"] == "success"
        url = f"http://{bed.remote_host}:{DEMO_PORT}"
        version = httpx.get(f"{url}/version", timeout=5).json()
        built = api.call(
            "GET", f"/dags/{DEMO}/dagRuns/{run_id}/taskInstances/build/xcomEntries/return_value"
        )["value"]
        assert version["digest"].startswith("sha256:") and version["digest"] in str(built)
        assert httpx.get(f"{url}/greetings", timeout=5).status_code == 200
        assert psql(bed, database, "SELECT count(*) FROM greetings") != ""
    finally:
        psql(bed, bed.postgres_db, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
