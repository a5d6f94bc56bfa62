"""Test helper: deliveries to the bed's remote machine under load from this one."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from docker_delivery.routing.service import RouterSettings
from kit.loadgen import LoadGenerator, LoadReport, free_port

REMOTE_CONN_ID = "dd_bed_remote"  # the docker_engine connection of the bed's remote engine
SWARM_CONN_ID = "dd_bed_swarm"  # the Swarm manager's (this machine's engine), naming node 2's
AT_LEAST = 5000  # requests sent while deliveries run, per deployment type
RATE = 200
RELEASES = ("v1", "v2", "v3")


def bed_connections(bed: Any) -> dict[str, str]:
    """The ``docker_engine`` connections of the bed, as Airflow reads them from the environment
    (``AIRFLOW_CONN_<ID>``): the remote engine over TLS (the bed's CA and client PEM texts), and
    the Swarm manager (this machine's socket) whose ``swarm_nodes`` names the remote engine for
    the Swarm's second node."""
    tls = {
        name: (bed.remote_tls / file).read_text()
        for name, file in (("tls_ca", "ca.pem"), ("tls_cert", "cert.pem"), ("tls_key", "key.pem"))
    }
    remote = {"conn_type": "docker_engine", "host": bed.remote_url, "extra": tls}
    swarm = {
        "conn_type": "docker_engine",
        "host": "unix:///var/run/docker.sock",
        "extra": {"swarm_nodes": {bed.remote_host: REMOTE_CONN_ID}},
    }
    return {
        f"AIRFLOW_CONN_{REMOTE_CONN_ID.upper()}": json.dumps(remote),
        f"AIRFLOW_CONN_{SWARM_CONN_ID.upper()}": json.dumps(swarm),
    }


def remote_router(bed: Any) -> RouterSettings:
    """A router published on every interface of the remote machine (as for a real host)."""
    return RouterSettings(
        port=free_port(),
        preview_port=free_port(),
        image=bed.haproxy_image,
        slots=8,
        check_interval_ms=500,
    )


def under_load(
    url: str, deliver: Callable[[int], object], *, mix: dict[str, float], cookies: bool = True
) -> LoadReport:
    """``deliver(n)`` again and again (n = 0, 1, ...) under load on ``url`` until at least
    AT_LEAST requests were sent while one ran; each delivery is a phase ``deliver-n``.
    ``cookies=False``: each request a new client (an A/B test's shares need that)."""
    with LoadGenerator(url, rate=RATE, mix=mix, cookies=cookies, max_duration=600) as load:
        n, sent = 0, 0
        while sent < AT_LEAST:
            before = load.snapshot().total
            load.mark(f"deliver-{n}")
            deliver(n)
            load.mark("between")
            sent += load.snapshot().total - before
            n += 1
        time.sleep(1.5)
    report = load.report
    print(report.summary(), f"{n} deliveries, {sent} requests sent during them")
    during = sum(v["total"] for k, v in report.by_phase.items() if k.startswith("deliver-"))
    assert during >= AT_LEAST
    assert report.failed == 0, report.failures
    return report
