"""Health checks: what "healthy" means for a release, and an async prober that waits for it.

A :class:`HealthCheck` is data (an HTTP GET, the status it expects, how often and how many times),
so it can be printed, stored in a trigger's kwargs and compared. :func:`wait_healthy` probes one
instance until the check passes or fails; :func:`wait_all_healthy` does that for several
instances at once; :func:`wait_all_healthy_sync` is the same for synchronous callers (operators).

The semantics follow Docker's HEALTHCHECK and load-balancer target health:

- probes start at once and then every ``interval`` seconds (measured from the start of the
  previous probe; a probe that overruns is followed by the next one straight away);
- a probe passes when the instance answers ``expected_status`` within ``timeout`` seconds;
- ``healthy_threshold`` passes in a row make the instance healthy;
- ``unhealthy_threshold`` failures in a row make it unhealthy, except that failures during the
  first ``start_period`` seconds do not count (a pass during it counts);
- an instance whose process has exited is unhealthy at once (the caller says how to tell), and
  one that has not passed by the deadline is unhealthy too.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import functools
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

from docker_delivery.errors import HealthCheckInvalid as HealthCheckInvalid
from docker_delivery.errors import Unhealthy as Unhealthy

if TYPE_CHECKING:
    import httpx


T = TypeVar("T")

__all__ = [
    "HealthCheck",
    "HealthCheckInvalid",
    "HealthReport",
    "LivenessProbe",
    "ProbeResult",
    "Unhealthy",
    "parse_addresses",
    "probe",
    "wait_all_healthy",
    "wait_all_healthy_sync",
    "wait_healthy",
]

Log = Callable[[str], object]

LivenessProbe = Callable[[], Awaitable[str | None]]
"""Tells whether the probed instance still runs: ``None`` while it does, otherwise a short reason
(``"exited with code 3"``) that :class:`Unhealthy`'s message quotes."""


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class HealthCheck:
    """An HTTP health check: ``GET <path>`` must answer ``expected_status``.

    ``port`` is used for addresses given without one (``"10.0.0.5"``); an address with a port
    (``"10.0.0.5:32768"``, e.g. a published port or a router frontend) is probed on that port.
    Times are in seconds. Invalid settings raise :class:`HealthCheckInvalid` (a ValueError).
    With ``scheme="https"`` the certificate is not verified (instances are probed by address,
    as load balancers do).

    ``start_interval`` (as Docker's ``--start-interval``): until an instance first passes, probe
    it this often instead of every ``interval``, so a deployment learns as soon as it listens;
    the passes after the first are still ``interval`` apart, and a failure counts towards
    ``unhealthy_threshold`` at most once per ``interval``, so neither passing nor failing comes
    sooner than with ``interval`` alone. None: ``interval`` throughout.
    """

    path: str = "/health"
    port: int = 8080
    expected_status: int = 200
    interval: float = 1.0
    timeout: float = 2.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3
    start_period: float = 0.0
    scheme: str = "http"
    start_interval: float | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            problems.append(f"path must start with '/', got {self.path!r}")
        if not _is_int(self.port) or not 1 <= self.port <= 65535:
            problems.append(f"port must be an integer within 1..65535, got {self.port!r}")
        if not _is_int(self.expected_status) or not 100 <= self.expected_status <= 599:
            problems.append(
                f"expected_status must be an HTTP status (100..599), got {self.expected_status!r}"
            )
        for name in ("interval", "timeout"):
            value = getattr(self, name)
            if not _is_number(value) or not value > 0:
                problems.append(f"{name} must be a positive number of seconds, got {value!r}")
        if not _is_number(self.start_period) or not self.start_period >= 0:
            problems.append(
                f"start_period must be zero or a positive number of seconds, "
                f"got {self.start_period!r}"
            )
        if self.start_interval is not None and (
            not _is_number(self.start_interval)
            or not 0 < self.start_interval <= (self.interval if _is_number(self.interval) else 0)
        ):
            problems.append(
                f"start_interval must be a positive number of seconds, at most interval "
                f"({self.interval!r}), or None; got {self.start_interval!r}"
            )
        for name in ("healthy_threshold", "unhealthy_threshold"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        if self.scheme not in ("http", "https"):
            problems.append(f"scheme must be 'http' or 'https', got {self.scheme!r}")
        if problems:
            raise HealthCheckInvalid("invalid health check: " + "; ".join(problems))

    def describe(self) -> str:
        """One line for logs and errors, e.g.
        ``GET /health on :8080 expects 200 (interval 1s, timeout 2s, 2 to pass, 3 to fail)``."""
        scheme = f" ({self.scheme})" if self.scheme != "http" else ""
        start = f", start period {_seconds(self.start_period)}" if self.start_period else ""
        if self.start_interval is not None:
            start += f", start interval {_seconds(self.start_interval)}"
        return (
            f"GET {self.path} on :{self.port}{scheme} expects {self.expected_status} "
            f"(interval {_seconds(self.interval)}, timeout {_seconds(self.timeout)}, "
            f"{self.healthy_threshold} to pass, {self.unhealthy_threshold} to fail{start})"
        )

    def min_time_to_healthy(self) -> float:
        """The shortest time, in seconds, in which an instance can pass: ``(healthy_threshold - 1)
        * interval``, since the first probe is sent at once and the last passing one ends the wait
        (plus the response time of the probes, which this does not count). A deadline shorter
        than this can never be met."""
        return (self.healthy_threshold - 1) * self.interval

    def url(self, address: str) -> str:
        """The URL probed for ``address`` (``host``, ``host:port`` or ``[v6]:port``)."""
        host, port = _split_address(address, self.port)
        return f"{self.scheme}://{host}:{port}{self.path}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values; :meth:`from_dict` reads them back (e.g. in a trigger)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealthCheck:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise HealthCheckInvalid(
                f"invalid health check: unknown setting(s) {unknown}; known: {sorted(known)}"
            )
        return cls(**data)


@dataclass(frozen=True)
class ProbeResult:
    """One probe: ``ok`` when the expected status came back; ``detail`` is ``"got 503"``,
    ``"connection refused"``, ``"timed out after 2s"``, ..."""

    ok: bool
    status: int | None
    detail: str


@dataclass(frozen=True)
class HealthReport:
    """How a wait ended for one address: ``probes`` sent, ``elapsed_s`` since the wait began, the
    last HTTP status (None when no answer came) and the last result in words."""

    address: str
    healthy: bool
    probes: int
    elapsed_s: float
    last_status: int | None
    last_result: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _split_address(address: str, default_port: int) -> tuple[str, int]:
    text = address.strip()
    if "://" in text:
        raise HealthCheckInvalid(f"address {address!r} must be host[:port], not a URL")
    if text.startswith("["):  # [v6]:port or [v6]
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise HealthCheckInvalid(f"address {address!r} is not [ipv6]:port")
        host, port_text = f"[{host}]", rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:  # a bare IPv6 address
        host, port_text = f"[{text}]", ""
    else:
        host, port_text = text, ""
    if not host or host == "[]":
        raise HealthCheckInvalid(f"address {address!r} has no host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise HealthCheckInvalid(f"address {address!r} has an invalid port {port_text!r}")
    return host, int(port_text)


def parse_addresses(addresses: str | Sequence[str]) -> list[str]:
    """Addresses as a list: a list is kept; a string may hold one address, several separated by
    commas or spaces, or a rendered list (``"['a:1', 'b:2']"``, as Jinja renders an XCom list).
    Each must be ``host[:port]``; an empty list raises :class:`HealthCheckInvalid`."""
    if isinstance(addresses, str):
        text = addresses.strip()
        if text.startswith("["):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = None  # perhaps "[::1]:8080"
            if isinstance(value, (list, tuple)):
                return parse_addresses([str(item) for item in value])
        items = text.replace(",", " ").split()
    else:
        items = [str(item).strip() for item in addresses]
    items = [item for item in items if item]
    if not items:
        raise HealthCheckInvalid(f"no addresses to probe (got {addresses!r})")
    for item in items:
        _split_address(item, 1)  # validates
    return items


def _describe_error(exc: BaseException, timeout: float) -> str:
    import httpx

    if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)):
        return f"timed out after {_seconds(timeout)}"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        cause: BaseException | None = exc
        while cause is not None:  # anyio wraps the OSError: "All connection attempts failed"
            if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
                return "connection refused"
            if isinstance(cause, OSError) and cause.errno is not None:
                text = cause.strerror or str(cause)
            cause = cause.__cause__ or cause.__context__
        return f"connection failed: {text}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection closed without a response: {text}"
    return f"request failed: {type(exc).__name__}: {text}"


def _result(response: httpx.Response, check: HealthCheck) -> ProbeResult:
    ok = response.status_code == check.expected_status
    return ProbeResult(ok, response.status_code, f"got {response.status_code}")


def _client_options(
    check: HealthCheck, transport: httpx.AsyncBaseTransport | None = None
) -> dict[str, Any]:
    import httpx

    # A new connection per probe (a kept-alive one would hide an instance that stopped accepting,
    # and pin a router frontend to one backend); no proxies from the environment.
    options: dict[str, Any] = {
        "timeout": httpx.Timeout(check.timeout),
        "limits": httpx.Limits(max_keepalive_connections=0),
        "trust_env": False,
        "verify": False,
    }
    if transport is not None:  # probes sent from elsewhere (targets.relay.ProbeTransport)
        options["transport"] = transport
    return options


def probe(address: str, check: HealthCheck) -> ProbeResult:
    """Probe ``address`` once, synchronously (bounded by ``check.timeout`` per phase)."""
    import httpx

    url = check.url(address)
    try:
        with httpx.Client(**_client_options(check)) as client:
            return _result(client.get(url), check)
    except httpx.HTTPError as exc:
        return ProbeResult(False, None, _describe_error(exc, check.timeout))


async def _within(awaitable: Awaitable[T], seconds: float) -> T:
    """``awaitable`` with a time limit, and a cancellation of the caller never lost.

    ``asyncio.wait_for`` before Python 3.12 returns the result, and drops the cancellation, when
    the awaited call ends in the same loop iteration as the caller is cancelled: a health wait
    cancelled by its neighbour's failure then probed on to its own end (Python 3.10 keeps
    that behaviour).
    """
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - Python 3.10


async def _probe_async(
    client: httpx.AsyncClient, url: str, check: HealthCheck, timeout: float
) -> ProbeResult:
    import httpx

    try:
        response = await _within(client.get(url), timeout)
    except (httpx.HTTPError, asyncio.TimeoutError) as exc:
        return ProbeResult(False, None, _describe_error(exc, timeout))
    return _result(response, check)


async def wait_healthy(
    address: str,
    check: HealthCheck,
    *,
    deadline: float,
    is_alive: LivenessProbe | None = None,
    log: Log = print,
    transport: httpx.AsyncBaseTransport | None = None,
) -> HealthReport:
    """Probe ``address`` until ``check`` passes; return the report, or raise :class:`Unhealthy`.

    ``deadline`` is the most time to wait, in seconds. ``is_alive``, if given, is awaited before
    every probe: it returns None while the instance runs, or a reason (``"exited with code 3"``)
    once it has stopped, which ends the wait at once. ``log`` receives a line whenever the result
    changes, and the outcome. ``transport``: how probes travel (default: straight from here;
    :class:`docker_delivery.targets.relay.ProbeTransport` sends them from the router container,
    for instances this machine cannot reach).
    """
    import httpx

    if not _is_number(deadline) or deadline <= 0:
        raise HealthCheckInvalid(f"deadline must be a positive number of seconds, got {deadline!r}")
    url = check.url(address)
    loop = asyncio.get_running_loop()
    started = loop.time()
    probes = passes = failures = 0
    passed_once = False  # until then, probes every start_interval (when set)
    counted_at: float | None = None  # when the last failure was counted
    last = ProbeResult(False, None, "not probed yet")

    def report(healthy: bool) -> HealthReport:
        elapsed = round(loop.time() - started, 3)
        return HealthReport(address, healthy, probes, elapsed, last.status, last.detail)

    def unhealthy(reason: str, message: str) -> Unhealthy:
        log(message)
        return Unhealthy(message, reason=reason, check=check, report=report(False))

    log(f"{address}: waiting up to {_seconds(deadline)} for {check.describe()}")
    async with httpx.AsyncClient(**_client_options(check, transport)) as client:
        while True:
            probe_started = loop.time()
            if is_alive is not None:
                gone = await is_alive()
                if isinstance(gone, bool):
                    raise TypeError(
                        "is_alive must return None while the instance runs, or a reason string "
                        "once it has exited; not a bool"
                    )
                if gone is not None:
                    raise unhealthy(
                        "exited",
                        f"{address}: the instance exited ({gone}) before passing "
                        f"{check.describe()}; last probe: {last.detail}",
                    )
            remaining = deadline - (probe_started - started)
            result = await _probe_async(client, url, check, min(check.timeout, remaining))
            probes += 1
            if result.detail != last.detail or probes == 1:
                log(f"{address}: probe {probes} {result.detail}")
            last = result
            if result.ok:
                passes, failures, passed_once = passes + 1, 0, True
                if passes >= check.healthy_threshold:
                    log(f"{address}: healthy after {probes} probe(s), {report(True).elapsed_s}s")
                    return report(True)
            else:
                passes = 0
                in_start_period = probe_started - started < check.start_period
                too_soon = (  # a fast start probe: at most one counted failure per interval
                    not passed_once
                    and check.start_interval is not None
                    and counted_at is not None
                    and probe_started - counted_at < check.interval
                )
                if in_start_period:
                    failures = 0
                elif not too_soon:
                    failures, counted_at = failures + 1, probe_started
                if failures >= check.unhealthy_threshold:
                    raise unhealthy(
                        "unhealthy",
                        f"{address} is unhealthy: {check.describe()} failed {failures} times in "
                        f"a row; last: {last.detail}",
                    )
            step = check.interval
            if check.start_interval is not None and not passed_once:
                step = check.start_interval
            next_probe = probe_started + step
            if next_probe - started >= deadline:  # no time left for another probe
                raise unhealthy(
                    "deadline",
                    f"{address} was not healthy within {_seconds(deadline)}: {check.describe()}; "
                    f"{probes} probe(s), last: {last.detail}",
                )
            await asyncio.sleep(max(0.0, next_probe - loop.time()))


async def wait_all_healthy(
    addresses: str | Sequence[str],
    check: HealthCheck,
    *,
    deadline: float,
    is_alive: Callable[[str], Awaitable[str | None]] | None = None,
    log: Log = print,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[HealthReport]:
    """Wait for every address concurrently; reports in the order of ``addresses``.

    ``addresses`` is read by :func:`parse_addresses`. The first :class:`Unhealthy` cancels the
    other waits and is raised. ``is_alive`` here takes the address and answers as in
    :func:`wait_healthy`.
    """
    items = parse_addresses(addresses)
    tasks = [
        asyncio.ensure_future(
            wait_healthy(
                address,
                check,
                deadline=deadline,
                is_alive=functools.partial(is_alive, address) if is_alive else None,
                log=log,
                transport=transport,
            )
        )
        for address in items
    ]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def wait_all_healthy_sync(
    addresses: str | Sequence[str],
    check: HealthCheck,
    *,
    deadline: float,
    is_alive: Callable[[str], Awaitable[str | None]] | None = None,
    log: Log = print,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[HealthReport]:
    """:func:`wait_all_healthy` for synchronous code: runs its own event loop (in a helper thread
    when the calling thread already runs one)."""

    def run() -> list[HealthReport]:
        return asyncio.run(
            wait_all_healthy(
                addresses,
                check,
                deadline=deadline,
                is_alive=is_alive,
                log=log,
                transport=transport,
            )
        )

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        in_a_loop = False  # the usual case; run() outside this handler, so that its errors
    else:  # do not carry "no running event loop" as their context
        in_a_loop = True
    if not in_a_loop:
        return run()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="health") as pool:
        return pool.submit(run).result()
