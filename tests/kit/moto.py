"""moto's server mode on loopback: AWS's APIs (ECR, ECS, ELBv2, Route 53, CloudWatch) for the
tests, one server per test process (pytest-xdist worker), so that no test sees another's state.

``aws_connection(url)`` is the Airflow ``aws`` connection that points the amazon provider's
hooks at it (``endpoint_url``), as ``AIRFLOW_CONN_*`` JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from kit.loadgen import free_port

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@contextmanager
def moto_server(**env: str) -> Iterator[str]:
    """A moto server on 127.0.0.1 (a free port); yields its URL; stopped at the end. ``env``:
    moto's switches (``MOTO_ECS_SERVICE_RUNNING``, ``MOTO_ECS_SERVICE_FAILED_TASKS``: the
    running and failed task counts its ECS services report)."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(  # its log to a file: a pipe nobody reads would block it
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/moto-api/data.json", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                assert process.poll() is None, Path(log.name).read_text()[-2000:]
                assert time.monotonic() < deadline, "moto's server did not answer in 60 s"
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        os.unlink(log.name)


FEW_RETRIES = {"retries": {"mode": "standard", "max_attempts": 2}}
"""The tests' botocore settings: what moto does not implement answers HTTP 500, which AWS's
clients retry (8 attempts by default here); two attempts keep that short."""


def aws_connection(url: str, **extra: object) -> str:
    """An ``aws`` connection to the moto server at ``url``, as AIRFLOW_CONN_* JSON (with
    FEW_RETRIES unless ``config_kwargs`` is given)."""
    extra = {"config_kwargs": FEW_RETRIES, **extra}
    return json.dumps(
        {
            "conn_type": "aws",
            "login": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "password": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "extra": {"endpoint_url": url, "region_name": REGION, **extra},
        }
    )


@contextmanager
def throttling_proxy(url: str, failures: int) -> Iterator[tuple[str, dict[str, int]]]:
    """An HTTP proxy on loopback in front of moto at ``url`` that answers the first ``failures``
    requests as AWS does when it throttles (HTTP 400, ``ThrottlingException``), then forwards.
    Yields its URL and the counts (``throttled``, ``forwarded``)."""
    import http.server
    import threading

    seen = {"throttled": 0, "forwarded": 0}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                throttle = seen["throttled"] < failures
                seen["throttled" if throttle else "forwarded"] += 1
            if throttle:
                payload = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"})
                status, headers, content = (
                    400,
                    {"Content-Type": "application/x-amz-json-1.1"},
                    payload.encode(),
                )
            else:
                answer = httpx.post(
                    url + self.path,
                    content=body,
                    headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                    timeout=30,
                )
                status, content = answer.status_code, answer.content
                headers = {"Content-Type": answer.headers.get("Content-Type", "application/json")}
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def clients(url: str, *names: str) -> dict[str, Any]:
    """boto3 clients of ``names`` (ecs, elbv2, ...) for the moto server at ``url``."""
    import boto3

    return {
        name: boto3.client(
            name,
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        for name in names
    }


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """``values`` in this process's environment meanwhile; what was there before, after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
