"""Test utilities: a load generator that counts what users would see during a deployment, and the
demo app run as a local process.

    with DemoAppProcess("blue") as app, LoadGenerator(app.url, rate=150) as load:
        ...                      # deploy, switch, retire
        load.mark("after switch")
    print(load.report.summary())

:class:`LoadGenerator` sends an open-loop stream of requests (fired at the target rate whatever
the latency, up to ``max_in_flight`` at once) from a background thread with its own event loop,
and records every request: when it started, its kind, status, the ``X-Release`` and
``X-Instance`` headers, latency, and why it failed. A request fails on a connection error, a
timeout, or a status >= 500; a request that could not be sent because ``max_in_flight`` requests
were pending is counted as failed too (reason ``not sent: ...``), since users would feel it. The
generator stops by itself after ``max_duration`` seconds or ``max_requests`` requests.

Only loopback addresses are accepted as targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

DEMO_APP = Path(__file__).resolve().parents[2] / "dags" / "demo_app" / "app.py"

KINDS = ("get", "get_new_conn", "slow", "post")
DEFAULT_MIX: Mapping[str, float] = {"get": 0.5, "get_new_conn": 0.2, "slow": 0.15, "post": 0.15}


@dataclass(frozen=True)
class RequestResult:
    """One request. ``start`` is seconds since the generator started; ``latency`` in seconds."""

    start: float
    kind: str
    phase: str
    target: str
    status: int | None
    release: str | None
    instance: str | None
    latency: float
    error: str | None  # None when the request succeeded

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class LoadSnapshot:
    """Live counts while the generator runs."""

    elapsed_s: float
    total: int
    failed: int
    in_flight: int
    phase: str
    by_release: dict[str, int]


def _percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


@dataclass
class LoadReport:
    """What the generator saw. ``total`` counts every request (``skipped`` ones included, as
    failures); ``by_release`` counts the requests answered by each release (any status);
    ``by_phase[label]`` holds those counts plus ``"total"`` and ``"failed"`` for a phase;
    ``failures[(kind, reason)]`` counts failures; ``latency[kind]`` has ``"p50"`` and ``"p99"``
    in seconds over answered requests; ``rate`` is requests sent per second of schedule."""

    total: int
    failed: int
    skipped: int
    failures: dict[tuple[str, str], int]
    by_release: dict[str, int]
    by_phase: dict[str, dict[str, int]]
    duration_s: float
    rate: float
    target_rate: float
    latency: dict[str, dict[str, float]]
    stopped_by: str
    results: list[RequestResult] = field(repr=False, default_factory=list)

    @classmethod
    def build(
        cls,
        results: Sequence[RequestResult],
        *,
        phases: Sequence[str],
        duration_s: float,
        target_rate: float,
        stopped_by: str,
    ) -> LoadReport:
        failures: Counter[tuple[str, str]] = Counter()
        by_release: Counter[str] = Counter()
        by_phase: dict[str, Counter[str]] = {label: Counter() for label in phases}
        latencies: dict[str, list[float]] = {}
        skipped = 0
        for r in results:
            phase = by_phase.setdefault(r.phase, Counter())
            phase["total"] += 1
            if r.error is not None:
                failures[(r.kind, r.error)] += 1
                phase["failed"] += 1
                skipped += r.error.startswith("not sent")
            if r.release is not None:
                by_release[r.release] += 1
                phase[r.release] += 1
            if r.status is not None:
                latencies.setdefault(r.kind, []).append(r.latency)
        total = len(results)
        sent = total - skipped
        return cls(
            total=total,
            failed=sum(failures.values()),
            skipped=skipped,
            failures=dict(failures.most_common()),
            by_release=dict(by_release.most_common()),
            by_phase={label: {"total": 0, "failed": 0, **c} for label, c in by_phase.items()},
            duration_s=round(duration_s, 3),
            rate=round(sent / duration_s, 1) if duration_s > 0 else 0.0,
            target_rate=target_rate,
            latency={
                kind: {"p50": _percentile(v, 0.5), "p99": _percentile(v, 0.99), "n": len(v)}
                for kind, v in sorted(latencies.items())
            },
            stopped_by=stopped_by,
            results=list(results),
        )

    @property
    def failure_rate(self) -> float:
        return self.failed / self.total if self.total else 0.0

    def share(self, release: str, phase: str | None = None) -> float:
        """The share (0..1) of answered requests that ``release`` answered, overall or in a
        phase. Requests that got no answer (connection errors, timeouts) are not counted."""
        counts = self.by_release if phase is None else self.by_phase.get(phase, {})
        if phase is not None:
            counts = {k: v for k, v in counts.items() if k not in ("total", "failed")}
        answered = sum(counts.values())
        return counts.get(release, 0) / answered if answered else 0.0

    def summary(self) -> str:
        releases = ", ".join(
            f"{name}={count} ({self.share(name):.0%})" for name, count in self.by_release.items()
        )
        top = "; ".join(
            f"{kind} {reason} x{n}" for (kind, reason), n in list(self.failures.items())[:3]
        )
        lat = " ".join(
            f"{kind} {v['p50'] * 1000:.0f}/{v['p99'] * 1000:.0f}ms"
            for kind, v in self.latency.items()
        )
        return (
            f"{self.total} requests in {self.duration_s:.1f}s ({self.rate:.1f}/s of "
            f"{self.target_rate:g}/s), {self.failed} failed ({self.failure_rate:.1%})"
            f"{': ' + top if top else ''}; releases: {releases or 'none'}; p50/p99: {lat or '-'}"
            f"; stopped by {self.stopped_by}"
        )


ALLOWED_NETWORKS: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []


def allow_network(network: str) -> None:
    """Let the load generator target ``network`` too: a network of the bed's own (the remote
    machine's address), never one that leads off this machine."""
    net = ipaddress.ip_network(network)
    if not net.is_private:
        raise ValueError(f"{network} is not a private network")
    if net not in ALLOWED_NETWORKS:
        ALLOWED_NETWORKS.append(net)


def _check_loopback(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"load generator target must be an http(s) URL, got {url!r}")
    allowed = host == "localhost"
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(host)
        allowed = allowed or ip.is_loopback or any(ip in net for net in ALLOWED_NETWORKS)
    if not allowed:
        raise ValueError(
            f"the load generator only targets loopback and the bed's networks, got {url!r}"
        )
    return url.rstrip("/")


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timeout after {timeout:g}s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "connection reset"
    if isinstance(exc, asyncio.IncompleteReadError) and not exc.partial:
        return "server disconnected without a response"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "server disconnected mid-response"
    return f"{type(exc).__name__}: {exc}"[:200]


_ECHO_BODY = b'{"hello": "world", "n": 1}'


class _BadResponse(Exception):
    """An answer that is not HTTP/1.x."""


class _Http:
    """A minimal HTTP/1.1 client over asyncio streams, for the generator's one event loop.

    httpx costs about 1.6 ms of CPU per request here, and its connection pool grows costlier
    with every request in flight: on a busy machine the generator itself became the bottleneck
    and reported its own backlog as failures. This client costs a fraction of that and keeps
    a stack of idle keep-alive connections per target (``fresh`` requests open their own and
    close it). Cookies, when kept, are one jar for every request (name -> value).
    """

    MAX_IDLE = 100
    # An idle keep-alive connection is dropped after this many seconds, well before HAProxy
    # closes it (``timeout http-keep-alive 10s``): a request sent on a connection the server is
    # closing at that moment fails without an answer, a race of the client's, not a lost
    # request of a deployment. Clients keep their idle timeout below the server's for this.
    MAX_IDLE_S = 4.0

    def __init__(self, timeout: float, *, cookies: bool) -> None:
        self.timeout = timeout
        self.keep_cookies = cookies
        self.jar: dict[str, str] = {}
        self.idle: dict[
            tuple[str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]]
        ]
        self.idle = {}

    async def request(
        self, target: str, method: str, path: str, body: bytes = b"", *, fresh: bool = False
    ) -> tuple[int, dict[str, str]]:
        parts = urlsplit(target)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path.rstrip("/") + path
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
        if fresh:
            lines.append("Connection: close")
        if body:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        if self.keep_cookies and self.jar:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.jar.items()))
        wire = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        key = (host, port)
        conn = None if fresh else self._idle_connection(key)
        if conn is None:
            conn = await asyncio.open_connection(host, port)
        reader, writer = conn
        reusable = False
        try:
            writer.write(wire)
            status, headers, reusable = await self._response(reader)
        finally:
            if reusable and not fresh and len(self.idle.setdefault(key, [])) < self.MAX_IDLE:
                self.idle[key].append((reader, writer, time.monotonic()))
            else:
                writer.close()
        return status, headers

    def _idle_connection(
        self, key: tuple[str, int]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        stack = self.idle.get(key, [])
        now = time.monotonic()
        while stack and now - stack[0][2] > self.MAX_IDLE_S:  # the oldest first
            stack.pop(0)[1].close()
        while stack:
            reader, writer, _ = stack.pop()  # the most recently used: the least likely closed
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return None

    async def _response(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bool]:
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise _BadResponse(f"not an HTTP/1.x answer: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            name, value = name.strip().lower(), value.strip()
            if name == "set-cookie" and self.keep_cookies:
                cookie, _, _ = value.partition(";")
                cname, _, cvalue = cookie.partition("=")
                if cvalue:
                    self.jar[cname.strip()] = cvalue.strip()
                else:
                    self.jar.pop(cname.strip(), None)
            headers[name] = value
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
        elif "content-length" in headers:
            await reader.readexactly(int(headers["content-length"]))
        else:
            await reader.read()  # the body ends with the connection
            return int(rest[:3]), headers, False
        close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
        return int(rest[:3]), headers, not close

    def close(self) -> None:
        for stack in self.idle.values():
            for _, writer, _ in stack:
                writer.close()
        self.idle.clear()


class LoadGenerator:
    """Open-loop HTTP load against one URL, or round-robin over several (a poor man's router).

    Cookies: by default the responses' cookies are kept in one jar shared by every request, as
    one browser would (behind a sticky router, all requests then stick to one server);
    ``cookies=False`` drops them, so each request is a new client (to measure traffic shares).
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        rate: float = 150,
        mix: Mapping[str, float] = DEFAULT_MIX,
        slow_ms: int = 1000,
        timeout: float = 10,
        max_duration: float = 300,
        max_requests: int = 200_000,
        max_in_flight: int = 400,
        phase: str = "start",
        seed: int | None = None,
        cookies: bool = True,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("no URL to send load to")
        self.urls = [_check_loopback(u) for u in urls]
        unknown = set(mix) - set(KINDS)
        if unknown or not mix or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError(f"mix must weigh the kinds {KINDS} with non-negative weights: {mix}")
        if rate <= 0 or timeout <= 0 or max_duration <= 0 or max_requests < 1:
            raise ValueError("rate, timeout, max_duration and max_requests must be positive")
        self.rate = float(rate)
        self.mix = dict(mix)
        self.slow_ms = slow_ms
        self.timeout = float(timeout)
        self.max_duration = float(max_duration)
        self.max_requests = max_requests
        self.max_in_flight = max_in_flight
        self.cookies = cookies
        self._random = random.Random(seed)
        self._phases = [phase]
        self._phase = phase
        self._lock = threading.Lock()
        self._results: list[RequestResult] = []
        self._failed = 0
        self._by_release: Counter[str] = Counter()
        self._in_flight = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._schedule_end: float | None = None
        self._stopped_by = "stop()"
        self._error: BaseException | None = None
        self.report: LoadReport | None = None

    # -- control -------------------------------------------------------------------------------

    def start(self) -> LoadGenerator:
        if self._thread is not None:
            raise RuntimeError("the load generator was started already")
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="loadgen", daemon=True)
        self._thread.start()
        return self

    def mark(self, label: str) -> None:
        """Start a named phase: requests sent from now on are counted under ``label``."""
        with self._lock:
            if label not in self._phases:
                self._phases.append(label)
            self._phase = label

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the generator stopped by itself (max_duration, max_requests) and its
        in-flight requests ended; True if it did within ``timeout``."""
        if self._thread is None:
            raise RuntimeError("the load generator was never started")
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def snapshot(self) -> LoadSnapshot:
        with self._lock:
            return LoadSnapshot(
                elapsed_s=round(time.monotonic() - self._started, 3) if self._started else 0.0,
                total=len(self._results),
                failed=self._failed,
                in_flight=self._in_flight,
                phase=self._phase,
                by_release=dict(self._by_release),
            )

    def stop(self) -> LoadReport:
        """Stop sending, wait for in-flight requests (at most ``timeout`` + 5 s), and report."""
        if self.report is not None:
            return self.report
        if self._thread is None:
            raise RuntimeError("the load generator was never started")
        self._stopping.set()
        self._thread.join(self.timeout + 5)
        if self._error is not None:
            raise RuntimeError(f"the load generator crashed: {self._error!r}") from self._error
        with self._lock:
            results = sorted(self._results, key=lambda r: r.start)
            end = self._schedule_end or time.monotonic()
            phases = list(self._phases)
        self.report = LoadReport.build(
            results,
            phases=phases,
            duration_s=end - self._started,
            target_rate=self.rate,
            stopped_by=self._stopped_by if not self._thread.is_alive() else "stop() (hung)",
        )
        return self.report

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the loop thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by stop()
            self._error = exc

    async def _main(self) -> None:
        http = _Http(self.timeout, cookies=self.cookies)
        kinds, weights = list(self.mix), list(self.mix.values())
        tasks: set[asyncio.Task[None]] = set()
        try:
            sent = 0
            while not self._stopping.is_set():
                if sent >= self.max_requests:
                    self._stopped_by = f"max_requests ({self.max_requests})"
                    break
                due = self._started + sent / self.rate
                if due - self._started >= self.max_duration:
                    self._stopped_by = f"max_duration ({self.max_duration:g}s)"
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(min(delay, 0.05))
                    continue
                kind = self._random.choices(kinds, weights)[0]
                target = self.urls[sent % len(self.urls)]
                sent += 1
                with self._lock:
                    phase, full = self._phase, self._in_flight >= self.max_in_flight
                    if not full:
                        self._in_flight += 1
                if full:
                    reason = f"not sent: {self.max_in_flight} requests in flight"
                    self._record(
                        RequestResult(
                            due - self._started, kind, phase, target, None, None, None, 0.0, reason
                        ),
                        counted=False,
                    )
                    continue
                task = asyncio.create_task(self._request(http, kind, phase, target))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            self._schedule_end = time.monotonic()
            if tasks:
                _, pending = await asyncio.wait(set(tasks), timeout=self.timeout + 2)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            http.close()

    async def _request(self, http: _Http, kind: str, phase: str, target: str) -> None:
        started = time.monotonic()
        status = release = instance = error = None
        try:
            if kind == "slow":
                request = http.request(target, "GET", f"/slow?ms={self.slow_ms}")
            elif kind == "post":
                request = http.request(target, "POST", "/echo", _ECHO_BODY)
            else:
                request = http.request(target, "GET", "/version", fresh=kind == "get_new_conn")
            status, headers = await asyncio.wait_for(request, self.timeout)
            release = headers.get("x-release")
            instance = headers.get("x-instance")
            if status >= 500:
                error = f"status {status}"
        except asyncio.CancelledError:
            error = "unfinished when the generator stopped"
            raise
        except (TimeoutError, OSError, asyncio.IncompleteReadError, _BadResponse) as exc:
            error = _describe(exc, self.timeout)
        finally:
            result = RequestResult(
                started - self._started,
                kind,
                phase,
                target,
                status,
                release,
                instance,
                time.monotonic() - started,
                error,
            )
            self._record(result, counted=True)

    def _record(self, result: RequestResult, *, counted: bool) -> None:
        with self._lock:
            self._results.append(result)
            self._failed += result.failed
            if result.release is not None:
                self._by_release[result.release] += 1
            if counted:
                self._in_flight -= 1


# -- the demo app as a local process -----------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for apps that must be probed before they listen)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DemoAppProcess:
    """``dags/demo_app/app.py`` as a local process; probe it at :attr:`address` (127.0.0.1).

    ``port=0`` lets the app pick a port, read from its log once it listens. ``wait=False`` returns
    without waiting for it to listen (for apps that start slowly or exit at once: pass a port,
    e.g. :func:`free_port`). Extra environment variables (``FAIL_HEALTH="1"``, ...) go in ``env``.
    """

    def __init__(
        self,
        release: str = "dev",
        *,
        port: int = 0,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
        ready_timeout: float = 15,
    ) -> None:
        self.release = release
        self.port = port
        self.env = dict(env or {})
        self.wait = wait
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix=f"demo-{release}-", suffix=".log")[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def log_text(self) -> str:
        return self._log.read_text(errors="replace")

    def start(self) -> DemoAppProcess:
        env = {**os.environ, "PORT": str(self.port), "APP_RELEASE": self.release, **self.env}
        with self._log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(DEMO_APP)], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        if self.wait:
            self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            for line in self.log_text().splitlines():
                if " listening on " in line:
                    self.port = int(line.rsplit(":", 1)[1])
                    return
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"demo app {self.release} exited with {self.process.returncode}:\n"
                    + self.log_text()
                )
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"demo app {self.release} did not listen in time:\n{self.log_text()}")

    def exit_code(self) -> int | None:
        assert self.process is not None
        return self.process.poll()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def __enter__(self) -> DemoAppProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self._log.unlink(missing_ok=True)
