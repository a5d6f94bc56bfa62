"""Test helper: deliveries to the bed's remote machine under load from this one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from docker_delivery.routing.service import RouterSettings
from kit.loadgen import LoadGenerator, LoadReport, free_port

REMOTE_CONN_ID = "dd_bed_remote"  # the docker_engine connection of the bed's remote engine
AT_LEAST = 5000  # requests sent while deliveries run, per deployment type
RATE = 200
RELEASES = ("v1", "v2", "v3")


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
