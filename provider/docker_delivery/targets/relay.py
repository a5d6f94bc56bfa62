"""Reaching into a service's network through its engine: the worker never opens a connection to an
instance or to a router's Runtime API; it asks the engine to run a short program in the router
container (``docker exec``), which opens the connection from there. Whoever may use the engine
may reach what runs on it; nobody else can, and no port is opened for it.

* :class:`RuntimeRelay`: one long-lived exec stream (:class:`ExecStream`) that carries Runtime
  API commands, a line each, to the HAProxy stats socket on the container's own loopback, and
  their replies back. A command costs one round trip to the engine, not one exec.
* :class:`ProbeTransport`: an httpx transport that sends each health probe (``GET path``) from
  the container to an instance's address over the same relay (more streams of it only while
  probes run at once), and reads the status line back: the health check's rules (interval,
  thresholds, start period) stay in :mod:`docker_delivery.health`.

Both run bash in the container (``/dev/tcp``): HAProxy's Debian-based images have it.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import select
import socket
import struct
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from docker_delivery.errors import RelayError as RelayError

if TYPE_CHECKING:
    import docker
    import httpx

END = b"\0"  # ends each reply on the stream: HAProxy's replies are text, never a NUL

# GET $3 from $1:$2; prints the status line, or exits 7 (connect failed) or 8 (no answer).
PROBE = r"""
exec 3<>"/dev/tcp/$1/$2" || exit 7
printf 'GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: docker-delivery-probe\r\n\r\n' "$3" "$1" >&3
IFS= read -r status <&3 || exit 8
printf '%s\n' "$status"
"""

PROBE_MARK = "#probe"  # a request line of the relay that is a probe, not a Runtime API command

# The relay ($1 $2: the stats socket; $3: PROBE). Reads a request a line and writes its reply
# and a NUL. A Runtime API command goes on a fresh connection to the socket (HAProxy answers and
# closes; a connection it cannot open is said on stderr). "#probe host port path seconds" runs
# PROBE within that time and replies with what it printed, then its exit code on a last line.
RUNTIME_RELAY = r"""
api_host=$1 api_port=$2 probe=$3
while IFS= read -r line; do
  case $line in
    "#probe "*)
      read -r _ host port path secs <<<"$line"
      timeout "$secs" bash -c "$probe" probe "$host" "$port" "$path" 2>&1
      printf '\n%s\0' "$?"
      continue ;;
  esac
  if exec 3<>"/dev/tcp/$api_host/$api_port"; then
    printf '%s\n' "$line" >&3
    cat <&3
    exec 3<&-
  else
    printf 'cannot connect to %s:%s\n' "$api_host" "$api_port" >&2
  fi
  printf '\0'
done
"""

_STATUS = re.compile(r"^HTTP/\d(?:\.\d)?\s+(\d{3})\b")


def _ended(sock: Any) -> bool:
    """True when a kept stream that should be idle has something to read: its end (the process
    in the container is gone) or a stray reply. Either way it cannot take a request."""
    if getattr(sock, "pending", lambda: 0)():
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _raw(sock: Any) -> Any:
    """The object with ``recv``/``sendall``/``settimeout`` under what ``exec_start`` returned (a
    socket's SocketIO on a local socket, a TLS socket, an SSH channel)."""
    return getattr(sock, "_sock", None) if isinstance(sock, socket.SocketIO) else sock


class ExecStream:
    """A line-per-request stream into a running container: ``argv`` runs there (``docker exec``
    with stdin attached), reads a request a line and answers each with text ending in a NUL.

    Opened on the first :meth:`send` and kept; a kept stream found ended before a request is
    opened again (nothing was sent on it); one that breaks during a request fails it, and is
    opened again on the next one. Thread-safe: one request at a time.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        container: str,
        argv: list[str],
        *,
        timeout: float = 5.0,
        what: str = "a relay",
    ) -> None:
        self.api = client.api  # not the client: a kept relay must not keep its client alive
        self.container = container
        self.argv = argv
        self.timeout = timeout
        self.what = what
        self._lock = threading.Lock()
        self._sock: Any = None
        self._keep: Any = None
        self._buffer = b""

    def _open(self) -> Any:
        import docker.errors

        try:
            exec_id = self.api.exec_create(
                self.container, self.argv, stdin=True, stdout=True, stderr=True, tty=False
            )["Id"]
            sock = self.api.exec_start(exec_id, socket=True)
        except docker.errors.DockerException as exc:
            raise RelayError(
                f"cannot open a stream into container {self.container} through the engine: {exc}"
            ) from exc
        self._buffer = b""
        self._keep = sock  # holds the HTTP response that owns a TLS socket
        return _raw(sock)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _read_reply(self, sock: Any, deadline: float) -> str:
        """Frames of the exec stream (8-byte header: stream, size) until stdout holds a NUL."""
        out = bytearray()
        err = bytearray()
        while END not in out:
            header = self._read_exactly(sock, 8, deadline)
            stream, size = struct.unpack(">BxxxL", header)
            data = self._read_exactly(sock, size, deadline) if size else b""
            (err if stream == 2 else out).extend(data)
        reply, _, rest = bytes(out).partition(END)
        if rest.strip():
            raise RelayError(f"{self.what} in container {self.container} answered twice")
        if err.strip():  # the program could not do it (bash says why)
            raise RelayError(
                f"{self.what} in container {self.container} answered: "
                + " ".join(bytes(err).decode("utf-8", "replace").split())
            )
        return reply.decode("utf-8", "replace")

    def _read_exactly(self, sock: Any, n: int, deadline: float) -> bytes:
        while len(self._buffer) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply in time")
            sock.settimeout(left)
            chunk = sock.recv(max(65536, n - len(self._buffer)))
            if not chunk:
                raise ConnectionError("the engine closed the stream")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def send(self, line: str, *, again: bool = False, timeout: float | None = None) -> str:
        """Send one request line; return the reply (RelayError when the stream fails).
        ``again``: send it once more on a new stream when the kept one had ended (only for a
        request that is safe to repeat)."""
        if "\n" in line or "\0" in line:
            raise RelayError(f"one request a line, without newlines: {line!r}")
        seconds = self.timeout if timeout is None else timeout
        with self._lock:
            while True:
                if self._sock is not None and _ended(self._sock):
                    self._drop()  # it ended while kept (the container restarted): nothing sent
                fresh = self._sock is None
                if fresh:
                    self._sock = self._open()
                try:
                    self._sock.sendall(line.encode() + b"\n")
                    return self._read_reply(self._sock, time.monotonic() + seconds)
                except (OSError, ConnectionError, TimeoutError) as exc:
                    self._drop()
                    if again and not fresh and not isinstance(exc, TimeoutError):
                        again = False
                        continue  # the kept stream had ended (the container restarted): again
                    raise RelayError(
                        f"{self.what} in container {self.container} failed on {line!r}: "
                        f"{exc or type(exc).__name__}"
                    ) from exc


class RuntimeRelay(ExecStream):
    """HAProxy's Runtime API at ``host:port`` inside container ``container`` (id or name), a
    command a line over one kept stream; a read command (``show ...``) is sent again once when
    the kept stream had ended."""

    def __init__(
        self,
        client: docker.DockerClient,
        container: str,
        *,
        host: str = "localhost",
        port: int,
        timeout: float = 5.0,
    ) -> None:
        argv = ["bash", "-c", RUNTIME_RELAY, "relay", host, str(port), PROBE]
        super().__init__(client, container, argv, timeout=timeout, what="the Runtime API relay")
        self._client = weakref.ref(client)
        self.host = host
        self.port = port
        self.pool = _Pool(self)

    @classmethod
    def kept(
        cls,
        client: docker.DockerClient,
        container: str,
        *,
        host: str = "localhost",
        port: int,
        timeout: float = 5.0,
    ) -> RuntimeRelay:
        """The relay kept for this container on ``client``, made on first use: every router
        object of it, and every step of a delivery run with that client, share its streams."""
        key = (container, host, str(port))
        with _KEPT_LOCK:
            relays = _KEPT.setdefault(client, {})
            if key not in relays:
                relays[key] = cls(client, container, host=host, port=port, timeout=timeout)
            return relays[key]

    def __repr__(self) -> str:
        return f"RuntimeRelay({self.container!r}, {self.host}:{self.port})"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port} in container {self.container}"

    def send(self, line: str, *, again: bool = False, timeout: float | None = None) -> str:
        """A command (or a probe); one that only reads is sent again once when the kept stream
        had ended."""
        safe = line.startswith(("show ", PROBE_MARK + " "))
        return super().send(line, again=again or safe, timeout=timeout)

    def sibling(self) -> RuntimeRelay:
        """Another stream of the same relay (for probes in flight at once)."""
        client = self._client()
        if client is None:
            raise RelayError(f"the docker client of {self!r} is closed")
        return RuntimeRelay(client, self.container, host=self.host, port=self.port)


# The relays kept per docker client (weakly: they go with their client, which they do not hold).
_KEPT: weakref.WeakKeyDictionary[Any, dict[tuple[str, str, str], RuntimeRelay]] = (
    weakref.WeakKeyDictionary()
)
_KEPT_LOCK = threading.Lock()


class _Pool:
    """A relay's streams for probes: its own first, then siblings when probes run at once and
    the busy ones do not free up within ``patience`` seconds (at most ``most`` streams): starting
    a stream costs a process start in the container, a probe on a kept one a few milliseconds."""

    def __init__(self, first: RuntimeRelay, *, most: int = 8, patience: float = 0.05) -> None:
        self.first = first
        self.idle: list[RuntimeRelay] = [first]
        self.count = 1
        self.most = most
        self.patience = patience
        self.cond = threading.Condition()

    def take(self) -> RuntimeRelay:
        with self.cond:
            self.cond.wait_for(lambda: bool(self.idle), timeout=self.patience)
            if self.idle:
                return self.idle.pop()
            if self.count < self.most:
                self.count += 1
                grow = True
            else:
                self.cond.wait_for(lambda: bool(self.idle))
                return self.idle.pop()
        assert grow
        return self.first.sibling()

    def give(self, stream: RuntimeRelay) -> None:
        with self.cond:
            self.idle.append(stream)
            self.cond.notify()


class ProbeTransport:
    """An httpx transport, for ``Client`` and ``AsyncClient`` (``transport=...``), that sends
    each request as a probe from inside the router container, over its relay's streams
    (``relay.pool``): only plain ``http`` GETs; the response is the status the probe got (its
    body is not read)."""

    def __init__(self, relay: RuntimeRelay) -> None:
        self.relay = relay
        self.container = relay.container

    def __repr__(self) -> str:
        return f"ProbeTransport({self.container!r})"

    def probe(self, address: str, port: int, path: str, timeout: float) -> int:
        """The HTTP status ``GET path`` gets from ``address:port``, asked from the container.
        Raises ConnectionRefusedError, TimeoutError or ConnectionError (with the reason)."""
        seconds = max(0.1, timeout)
        line = f"{PROBE_MARK} {address} {port} {path} {seconds:g}"
        stream = self.relay.pool.take()
        try:
            reply = stream.send(line, timeout=seconds + 5)
        except RelayError as exc:
            raise ConnectionError(str(exc)) from exc
        finally:
            self.relay.pool.give(stream)
        text, _, code = reply.rstrip("\n").rpartition("\n")
        text = text.strip()
        if code == "124":
            raise TimeoutError(f"timed out after {seconds:g}s")
        if code == "7":
            if "refused" in text.lower():
                raise ConnectionRefusedError("connection refused")
            raise ConnectionError(text.rsplit(":", 1)[-1].strip() or "connect failed")
        if code == "8":
            raise ConnectionError("connection closed without a response")
        match = _STATUS.match(text)
        if code != "0" or match is None:
            raise ConnectionError(f"no HTTP status line (exit {code}): {text!r}")
        return int(match.group(1))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        import httpx

        url = request.url
        if request.method != "GET" or url.scheme != "http":
            raise httpx.UnsupportedProtocol(
                f"probes through container {self.container} are plain http GETs, not "
                f"{request.method} {url.scheme}"
            )
        timeout = (request.extensions.get("timeout") or {}).get("read") or 5.0
        try:
            status = self.probe(url.host, url.port or 80, url.raw_path.decode("ascii"), timeout)
        except ConnectionRefusedError as exc:
            raise httpx.ConnectError("connection refused", request=request) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc), request=request) from exc
        except ConnectionError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        return httpx.Response(status, request=request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await asyncio.to_thread(self.handle_request, request)

    def close(self) -> None:
        """Nothing: the kept streams serve the next probes of this docker client; they end with
        it."""

    async def aclose(self) -> None:
        """Nothing, as :meth:`close`."""

    def __enter__(self) -> ProbeTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> ProbeTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None
