"""Watching instances that just took traffic: repeated concurrent probes and the router's 5xx
counters, for the post-switch check of blue/green and the checks of a rollback.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from docker_delivery.health import HealthCheck
from docker_delivery.strategies.state import Running
from docker_delivery.strategies.wiring import Wiring

if TYPE_CHECKING:
    from docker_delivery.routing.haproxy import HaproxyRouter
    from docker_delivery.routing.haproxy.runtime import Traffic


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


@dataclass(frozen=True)
class WatchStart:
    """A watch's beginning, as plain data (it may go on elsewhere: Airflow's triggerer): the
    backend, the instances watched (addresses), the backend's request and error counters then,
    and when (Unix time)."""

    backend: str
    addresses: tuple[str, ...]
    requests: int
    errors: int
    started_at: float

    @classmethod
    def now(cls, router: HaproxyRouter, backend: str, members: Sequence[Running]) -> WatchStart:
        stats = router.stats(backend)
        return cls(
            backend,
            tuple(m.address for m in members),
            stats.requests,
            _errors(stats),
            time.time(),
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "addresses": list(self.addresses)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WatchStart:
        return cls(
            str(data["backend"]),
            tuple(str(a) for a in data["addresses"]),
            int(data["requests"]),
            int(data["errors"]),
            float(data["started_at"]),
        )


def _errors(stats: Traffic) -> int:
    return stats.hrsp_5xx + stats.response_errors + stats.connect_errors


class Watcher:
    """Looks at a backend that just took traffic, once per :meth:`look`: its router 5xx counters
    (deltas since ``start``) and its instances' health (probed as the health gate probes them;
    ``unhealthy_threshold`` failures in a row fail it, as an exit does)."""

    def __init__(
        self,
        w: Wiring,
        members: Sequence[Running],
        start: WatchStart,
        *,
        seconds: float,
        max_5xx_ratio: float,
        min_requests: int,
    ) -> None:
        self._w, self._members, self.start = w, list(members), start
        self._seconds, self._max, self._min = seconds, max_5xx_ratio, min_requests
        self._in_a_row: Counter[str] = Counter()
        self._probes = self._failed_probes = self._requests = self._errors = 0
        self._prober = Prober(w.check, len(members), w.transport)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self._prober.__exit__()

    def figures(self) -> dict[str, Any]:
        requests, errors = self._requests, self._errors
        return {
            "backend": self.start.backend,
            "seconds": round(time.time() - self.start.started_at, 2),
            "requests": requests,
            "5xx": errors,
            "5xx_ratio": round(errors / requests, 4) if requests else 0.0,
            "max_5xx_ratio": self._max,
            "probes": self._probes,
            "failed_probes": self._failed_probes,
        }

    def look(self) -> tuple[bool, str | None]:
        """One look: (done, why it failed or None); done once failed or ``seconds`` passed."""
        w, backend, check = self._w, self.start.backend, self._w.check
        stats = w.router.stats(backend)
        requests = self._requests = stats.requests - self.start.requests
        errors = self._errors = _errors(stats) - self.start.errors
        if requests >= max(1, self._min) and errors / requests > self._max:
            return True, (
                f"{errors} of {requests} requests to {backend} failed (5xx or no answer at "
                f"the router: {errors / requests:.1%} > {self._max:.1%})"
            )
        results = self._prober.round(self._members)
        for member in self._members:
            address = member.address
            ok, detail = results[address]
            self._probes += 1
            self._failed_probes += not ok
            self._in_a_row[address] = 0 if ok else self._in_a_row[address] + 1
            if not ok:
                gone = w.target.exit_reason(member)
                if gone is not None:
                    return True, gone
            if self._in_a_row[address] >= check.unhealthy_threshold:
                return True, (
                    f"{address} is unhealthy: {check.describe()} failed "
                    f"{self._in_a_row[address]} times in a row; last: {detail}"
                )
        return time.time() - self.start.started_at >= self._seconds, None


def watch(
    w: Wiring,
    backend: str,
    members: Sequence[Running],
    *,
    seconds: float,
    max_5xx_ratio: float,
    min_requests: int,
    poll: float = 0.25,
    start: WatchStart | None = None,
) -> tuple[str | None, dict[str, Any]]:
    """Watch a backend that just took traffic for ``seconds`` (from ``start``, else from now):
    see :class:`Watcher`. Returns (why it failed or None, figures)."""
    start = start or WatchStart.now(w.router, backend, members)
    with Watcher(
        w, members, start, seconds=seconds, max_5xx_ratio=max_5xx_ratio, min_requests=min_requests
    ) as watcher:
        while True:
            done, why = watcher.look()
            if done:
                return why, watcher.figures()
            time.sleep(poll)
