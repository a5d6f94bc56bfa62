"""Airflow's own services as processes of this machine, for end-to-end tests: the API server, the
scheduler (LocalExecutor), the DAG processor and the triggerer, on a metadata database of the
bed's PostgreSQL, with a home, a DAGs folder and a login (SimpleAuthManager, user ``ada``, admin)
of their own; and a small client of their REST API (``/api/v2``).

    with fresh_database(bed) as url, airflow_services(tmp, dags=folder, database_url=url) as af:
        af.wait_dag("my_dag")
        run_id = af.trigger("my_dag")
        af.wait_task("my_dag", run_id, "ask", {"awaiting_input"})
        af.answer("my_dag", run_id, "ask", "Continue")
        af.wait_run("my_dag", run_id, {"success"})

A human-in-the-loop task waits in the state ``awaiting_input`` (Airflow 3.3: parked, in no worker
slot and in no pool slot), and is answered through its ``hitlDetails`` as the UI does.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx

from kit.airflow_ui import ApiServer, outside_environ
from kit.loadgen import free_port
from kit.postgres import psql

AIRFLOW = str(Path(sys.executable).parent / "airflow")
# Task instance and DAG run states that never change by themselves.
TASK_DONE = {"success", "failed", "skipped", "upstream_failed", "removed"}
RUN_DONE = {"success", "failed"}
# The async drivers Airflow derives its async engine's URL with (settings.py).
ASYNC_DRIVERS = {"postgresql": "asyncpg", "sqlite": "aiosqlite", "mysql": "aiomysql"}


@dataclass
class Airflow:
    """The running services: where the API server answers, their home and environment, the login
    (``user``, ``password``), the processes by name; and a client of the REST API."""

    url: str
    home: Path
    env: dict[str, str]
    user: str
    password: str
    processes: dict[str, subprocess.Popen[bytes]]
    started_in: float = 0.0  # seconds from `airflow db migrate` to every service healthy
    _bearer: str | None = field(default=None, repr=False)

    token = ApiServer.token  # a login of user, as the UI's login page makes it (a JWT)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """A request to ``/api/v2{path}`` with the bearer token of :attr:`user`."""
        if self._bearer is None:
            self._bearer = self.token()
        headers = {"Authorization": f"Bearer {self._bearer}", **kw.pop("headers", {})}
        return httpx.request(method, f"{self.url}/api/v2{path}", headers=headers, timeout=30, **kw)

    def call(self, method: str, path: str, **kw: Any) -> Any:
        """:meth:`request`, which must succeed (status < 300): its JSON (None when empty)."""
        answer = self.request(method, path, **kw)
        assert answer.status_code < 300, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json() if answer.content else None

    def wait_dag(self, dag_id: str, timeout: float = 60) -> None:
        """Until the DAG processor has parsed ``dag_id`` (GET /dags/{dag_id} answers 200)."""
        deadline = time.monotonic() + timeout
        while (status := self.request("GET", f"/dags/{dag_id}").status_code) != 200:
            assert status == 404, f"GET /dags/{dag_id}: {status}"
            self._alive()
            assert time.monotonic() < deadline, (
                f"{dag_id} was not parsed in {timeout} s:\n{self.tail('dag-processor')}"
            )
            time.sleep(0.5)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Unpauses ``dag_id`` and triggers a run of it (no logical date): the run's id."""
        self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        run = self.call(
            "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}
        )
        return str(run["dag_run_id"])

    def task_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        """The state of a task instance (None: not scheduled yet, or no such instance yet)."""
        answer = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        if answer.status_code == 404:
            return None
        assert answer.status_code == 200, f"{answer.status_code} {answer.text}"
        state = answer.json()["state"]
        return None if state is None else str(state)

    def wait_task(
        self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 120
    ) -> str:
        """Until the task instance is in one of ``states``: that state. Fails at once when it
        ends in another state."""
        return self._wait(
            task_id, lambda: self.task_state(dag_id, run_id, task_id), states, TASK_DONE, timeout
        )

    def wait_run(self, dag_id: str, run_id: str, states: set[str], timeout: float = 120) -> str:
        """Until the DAG run is in one of ``states``: that state. Fails at once when it ends in
        another state."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}"
        return self._wait(
            run_id, lambda: self.call("GET", path)["state"], states, RUN_DONE, timeout
        )

    def _wait(self, what: str, read: Any, states: set[str], done: set[str], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (state := read()) not in states:
            assert state not in done, f"{what} ended {state}, not in {sorted(states)}"
            self._alive()
            assert time.monotonic() < deadline, (
                f"{what} is still {state} after {timeout} s, not in {sorted(states)}"
            )
            time.sleep(0.5)
        return str(state)

    def answer(self, dag_id: str, run_id: str, task_id: str, option: str) -> Any:
        """Answers a human-in-the-loop task with ``option`` as :attr:`user`, as the UI does: the
        response (``responded_by``, ``responded_at``, ``chosen_options``, ``params_input``).

        It first waits for the scheduler to have taken in the end of the worker process that
        parked the task (see :meth:`wait_parked`): an answer before that fails the task."""
        self.wait_parked(dag_id, run_id, task_id)
        return self.call(
            "PATCH",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails",
            json={"chosen_options": [option], "params_input": {}},
        )

    def wait_parked(self, dag_id: str, run_id: str, task_id: str, timeout: float = 60) -> None:
        """Until the scheduler has taken in the executor's event of the worker process that
        parked (or deferred) the task instance's current try, which its log says.

        Airflow 3.3.2 fails a task resumed before that: the stale "success" of the parking
        process, drained once the resumed try is queued or running, reads as a task killed
        externally (apache/airflow#67287, #72716). A human answers later; a test must wait."""
        self.wait_task(dag_id, run_id, task_id, {"awaiting_input", "deferred"}, timeout)
        ti = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        key = (
            f"TaskInstanceKey(dag_id='{dag_id}', task_id='{task_id}', run_id='{run_id}', "
            f"try_number={ti['try_number']}, map_index={ti['map_index']})"
        )
        drained = re.compile(
            r"Received executor event with state \w+ for task instance " + re.escape(key)
        )
        deadline = time.monotonic() + timeout
        log = self.home / "scheduler.log"
        while not drained.search(log.read_text(errors="replace")):
            self._alive()
            assert time.monotonic() < deadline, (
                f"the scheduler took in no executor event of {key} in {timeout} s"
            )
            time.sleep(0.2)

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """A human-in-the-loop task's detail: its options, and once answered
        ``responded_by_user`` (``{"id", "name"}``), ``chosen_options``, ``response_received``."""
        return self.call(
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"
        )

    def running_slots(self) -> dict[str, int]:
        """What the default pool reports: running, queued, scheduled, deferred, occupied and open
        slots (``running_slots``, ...)."""
        pool = self.call("GET", "/pools/default_pool")
        return {key: int(value) for key, value in pool.items() if key.endswith("_slots")}

    def tail(self, name: str, chars: int = 3000) -> str:
        """The end of a service's log (``api-server``, ``scheduler``, ``dag-processor``,
        ``triggerer``, ``migrate``), or of any ``home/<name>.log``."""
        log = self.home / f"{name}.log"
        if not log.exists():
            return f"({log} does not exist)"
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - chars))
            return f.read().decode("utf-8", "replace")

    def _alive(self) -> None:
        for name, process in self.processes.items():
            assert process.poll() is None, f"airflow {name} exited:\n{self.tail(name)}"


@contextmanager
def fresh_database(bed: Any) -> Iterator[str]:
    """A new, empty database in the bed's PostgreSQL (a random name): its SQLAlchemy URL
    (psycopg2). Dropped at the end, connections or not."""
    name = f"airflow_{secrets.token_hex(6)}"
    psql(bed, bed.postgres_db, f'CREATE DATABASE "{name}"')
    try:
        yield (
            f"postgresql+psycopg2://{quote(bed.postgres_user, safe='')}:"
            f"{quote_plus(bed.postgres_password())}@{bed.postgres_host}:{bed.postgres_port}/{name}"
        )
    finally:
        psql(bed, bed.postgres_db, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def services_env(
    home: Path, *, dags: Path, database_url: str, port: int, password_file: Path
) -> dict[str, str]:
    """The environment of every service: this process's, less its Airflow settings and
    connections, and the settings of these services."""
    env = outside_environ() | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",  # light: the suite's load tests share 2 cores
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple."
        "simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "ada:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # The scheduler's and the triggerer's log servers: free ports, not 8793 and 8794.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        # A new DAG file is seen within 1 to 2 s; a changed one is parsed again after 60 s (each
        # parse imports Airflow and the provider: every 5 s would keep a core a fifth busy).
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "1",
        "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
        "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "1",
    }
    # Airflow makes an async engine too, its driver derived from the URL's (asyncpg for
    # PostgreSQL); without that driver installed, no async engine (the few async-only routes,
    # e.g. GET .../dagRuns/{run_id}/wait, fail; the rest works).
    scheme = database_url.split(":", 1)[0].split("+", 1)[0]
    driver = ASYNC_DRIVERS.get(scheme)
    if driver and importlib.util.find_spec(driver) is None:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = ""
    return env


@contextmanager
def airflow_services(
    home: Path, *, dags: Path, database_url: str, env: dict[str, str] | None = None
) -> Iterator[Airflow]:
    """Airflow's API server (a free loopback port), scheduler (LocalExecutor, 2 slots), DAG
    processor and triggerer, each a process group of its own logging to ``home/<name>.log``, on
    ``database_url`` (migrated first), reading DAGs from ``dags``; ``env`` adds to their
    environment (e.g. ``AIRFLOW_CONN_*``). Ready when every service reports healthy. On the way
    out, every process is stopped (SIGTERM, then SIGKILL); if the block raised, the logs' tails
    are printed first."""
    started = time.monotonic()
    home.mkdir(parents=True, exist_ok=True)
    dags.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    (home / "passwords.json").write_text(f'{{"ada": "{password}"}}')
    port = free_port()
    environment = services_env(
        home, dags=dags, database_url=database_url, port=port, password_file=home / "passwords.json"
    ) | (env or {})
    with open(home / "migrate.log", "wb") as out:
        migrate = subprocess.run(
            [AIRFLOW, "db", "migrate"], env=environment, stdout=out, stderr=subprocess.STDOUT,
            timeout=300,
        )  # fmt: skip
    assert migrate.returncode == 0, (home / "migrate.log").read_text()[-3000:]
    commands = {
        "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(port)],
        "scheduler": ["scheduler"],
        "dag-processor": ["dag-processor"],
        "triggerer": ["triggerer"],
    }
    airflow = Airflow(f"http://127.0.0.1:{port}", home, environment, "ada", password, {})
    try:
        for name, args in commands.items():
            with open(home / f"{name}.log", "wb") as out:
                airflow.processes[name] = subprocess.Popen(
                    [AIRFLOW, *args], env=environment, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
        _wait_healthy(airflow, timeout=120)
        airflow.started_in = time.monotonic() - started
        yield airflow
    except BaseException:
        for name in airflow.processes:
            print(f"----- {name}.log (end) -----\n{airflow.tail(name)}")
        raise
    finally:
        _stop(airflow.processes.values())


def _wait_healthy(airflow: Airflow, timeout: float) -> None:
    """Until /api/v2/monitor/health says the database, scheduler, DAG processor and triggerer are
    healthy."""
    deadline = time.monotonic() + timeout
    health: dict[str, Any] = {}
    while True:
        try:
            answer = httpx.get(f"{airflow.url}/api/v2/monitor/health", timeout=2)
            health = answer.json() if answer.status_code == 200 else {}
        except httpx.HTTPError:
            pass
        parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
        if all((health.get(part) or {}).get("status") == "healthy" for part in parts):
            return
        airflow._alive()
        assert time.monotonic() < deadline, f"Airflow not healthy in {timeout} s: {health}"
        time.sleep(0.5)


def _stop(processes: Any) -> None:
    """SIGTERM to every process group; 20 s later, SIGKILL to whatever is left of them (a
    leader that has not exited, or the task processes it left behind)."""
    processes = list(processes)
    for process in processes:
        _signal(process, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in processes:
        with suppress(subprocess.TimeoutExpired):
            process.wait(max(0.1, deadline - time.monotonic()))
        _signal(process, signal.SIGKILL)
        process.wait(10)


def _signal(process: subprocess.Popen[bytes], signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signum)
