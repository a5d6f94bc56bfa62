"""Airflow's API server (the UI, the REST API, and the provider's plugin) as a process of its own,
with a home, a metadata database and a login of its own; and Debian's chromium, headless, driven
by playwright.

    with api_server(tmp, ledger="/…/ledger.db", dags=folder) as ui:
        token = ui.token()                # a login of ui.user, as the UI's login page makes it
        with browser() as b: ...
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from kit.loadgen import free_port

CHROMIUM = "/usr/bin/chromium"
AIRFLOW = str(Path(sys.executable).parent / "airflow")


@dataclass
class ApiServer:
    url: str
    home: Path
    env: dict[str, str]
    user: str
    password: str
    log: Path

    def token(self) -> str:
        answer = httpx.post(
            f"{self.url}/auth/token",
            json={"username": self.user, "password": self.password},
            timeout=30,
        )
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def airflow(self, *args: str) -> str:
        """An ``airflow`` command against this server's home and database."""
        run = subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr[-3000:]
        return run.stdout


def outside_environ() -> dict[str, str]:
    """This process's environment less its Airflow settings and connections: what Airflow
    processes of their own start from (the tests' metadata database is not theirs)."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))
    }


@contextmanager
def api_server(
    home: Path, *, ledger: str, dags: Path | None = None, role: str = "viewer"
) -> Iterator[ApiServer]:
    """``airflow api-server`` on a free loopback port, its home in ``home`` (SQLite), the
    SimpleAuthManager with one user of ``role``, the Deliveries view reading ``ledger``."""
    home.mkdir(parents=True, exist_ok=True)
    dags = dags or home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    (home / "passwords.json").write_text(f'{{"ada": "{password}"}}')
    env = outside_environ() | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple."
        "simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"ada:{role}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        "AIRFLOW__DOCKER_DELIVERY__LEDGER": ledger,
    }
    migrate = subprocess.run(
        [AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    port = free_port()
    log = home / "api-server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the API server did not answer in 120 s"
            time.sleep(0.5)
        yield ApiServer(url, home, env, "ada", password, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@contextmanager
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, through playwright (no browser download): a Browser."""
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: tests/bed/up installs chromium"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def load(page: Any, url: str, ready: Any = None, *, attempts: int = 3) -> Any:
    """``page.goto(url)``, then ``ready()`` (waits for what the test needs), again when chromium
    dropped a request with ERR_NETWORK_CHANGED: a container another test starts on this machine
    adds a network interface, and chromium fails the requests in flight (the page's, or its
    frame's). Returns the navigation's response."""
    from playwright.sync_api import Error

    dropped: list[str] = []
    page.on("requestfailed", lambda request: dropped.append(str(request.failure)))
    for attempt in range(1, attempts + 1):
        dropped.clear()
        try:
            answer = page.goto(url)
            if ready is not None:
                ready()
            return answer
        except Error as exc:
            changed = "ERR_NETWORK_CHANGED" in str(exc) or any(
                "ERR_NETWORK_CHANGED" in d for d in dropped
            )
            if not changed or attempt == attempts:
                raise
            print(f"{url}: the network changed under chromium (try {attempt}); loading again")
    return None
