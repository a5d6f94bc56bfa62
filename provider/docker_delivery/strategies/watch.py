"""Watching instances that just took traffic: repeated concurrent probes and the router's 5xx
counters, for the post-switch check of blue/green and the checks of a rollback.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from docker_delivery.health import HealthCheck
from docker_delivery.strategies.state import Running
from docker_delivery.strategies.wiring import Wiring


class Prober:
    """Probes instances with ``check``, concurrently, again and again: one HTTP client (a new
    connection per probe, as health.probe does) and one thread pool for all the rounds."""

    def __init__(self, check: HealthCheck, size: int, transport: Any = None) -> None:
        import httpx  # here, not at module level: DAG files load this module while parsed

        self._http_error = httpx.HTTPError
        self._check = check
        options: dict[str, Any] = {"transport": transport} if transport is not None else {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(check.timeout),
            limits=httpx.Limits(max_keepalive_connections=0),
            trust_env=False,
            verify=False,
            **options,
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(max(1, size))

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    def _one(self, address: str) -> tuple[bool, str]:
        try:
            status = self._client.get(self._check.url(address)).status_code
        except self._http_error as exc:
            return False, f"no answer: {type(exc).__name__}: {exc}"[:200]
        return status == self._check.expected_status, f"got {status}"

    def round(self, members: Sequence[Running]) -> dict[str, tuple[bool, str]]:
        """One probe of each instance: address -> (ok, detail)."""
        addresses = [m.address for m in members]
        return dict(zip(addresses, self._pool.map(self._one, addresses), strict=True))


def probe_all(
    members: Sequence[Running], check: HealthCheck, transport: Any = None
) -> dict[str, tuple[bool, str]]:
    """One probe of each instance, concurrently: address -> (ok, detail). ``transport``: how the
    probes travel (the wiring's: from the router container), None: from here."""
    if not members:
        return {}
    with Prober(check, len(members), transport) as prober:
        return prober.round(members)


def watch(
    w: Wiring,
    backend: str,
    members: Sequence[Running],
    *,
    seconds: float,
    max_5xx_ratio: float,
    min_requests: int,
    poll: float = 0.25,
) -> tuple[str | None, dict[str, Any]]:
    """Watch a backend that just took traffic: its router 5xx counters (deltas from now) and its
    instances' health (probed as the health gate probes them; ``unhealthy_threshold`` failures
    in a row fail it, as an exit does). Returns (why it failed or None, figures)."""
    check = w.check
    base = w.router.stats(backend)
    started = time.monotonic()
    in_a_row: Counter[str] = Counter()
    probes = failed_probes = requests = errors = 0

    def figures() -> dict[str, Any]:
        return {
            "backend": backend,
            "seconds": round(time.monotonic() - started, 2),
            "requests": requests,
            "5xx": errors,
            "5xx_ratio": round(errors / requests, 4) if requests else 0.0,
            "max_5xx_ratio": max_5xx_ratio,
            "probes": probes,
            "failed_probes": failed_probes,
        }

    with Prober(check, len(members), w.transport) as prober:
        while True:
            stats = w.router.stats(backend)
            requests = stats.requests - base.requests
            errors = (
                stats.hrsp_5xx
                - base.hrsp_5xx
                + stats.response_errors
                - base.response_errors
                + stats.connect_errors
                - base.connect_errors
            )
            if requests >= max(1, min_requests) and errors / requests > max_5xx_ratio:
                return (
                    f"{errors} of {requests} requests to {backend} failed (5xx or no answer at "
                    f"the router: {errors / requests:.1%} > {max_5xx_ratio:.1%})",
                    figures(),
                )
            results = prober.round(members)
            for member in members:
                address = member.address
                ok, detail = results[address]
                probes += 1
                failed_probes += not ok
                in_a_row[address] = 0 if ok else in_a_row[address] + 1
                if not ok:
                    gone = w.target.exit_reason(member)
                    if gone is not None:
                        return gone, figures()
                if in_a_row[address] >= check.unhealthy_threshold:
                    return (
                        f"{address} is unhealthy: {check.describe()} failed "
                        f"{in_a_row[address]} times in a row; last: {detail}",
                        figures(),
                    )
            if time.monotonic() - started >= seconds:
                return None, figures()
            time.sleep(poll)
