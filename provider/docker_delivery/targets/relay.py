"""Reaching into a service's network through its engine: the worker never opens a connection to an
instance or to a router's Runtime API; it asks the engine to run a short program in the router
container (``docker exec``), which opens the connection from there. Whoever may use the engine
may reach what runs on it; nobody else can, and no port is opened for it.

* :class:`RuntimeRelay`: one long-lived exec stream that carries Runtime API commands, a line
  each, to the HAProxy stats socket on the container's own loopback, and their replies back. A
  command costs one round trip to the engine, not one exec.
* :class:`ProbeTransport`: an httpx transport that sends a health probe (``GET path``) from the
  container to an instance's address, and reads the status line back: the health check's rules
  (interval, thresholds, start period) stay in :mod:`docker_delivery.health`.

Both run bash in the container (``/dev/tcp``): HAProxy's Debian-based images have it.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

from docker_delivery.errors import RelayError as RelayError

if TYPE_CHECKING:
    import docker
    import httpx

END = b"\0"  # ends each reply on the stream: HAProxy's replies are text, never a NUL

# Reads one command a line; sends it on a fresh connection to the stats socket (HAProxy answers
# and closes); writes the reply and a NUL. A connection it cannot open is a reply too.
RUNTIME_RELAY = r"""
while IFS= read -r line; do
  if exec 3<>"/dev/tcp/$1/$2"; then
    printf '%s\n' "$line" >&3
    cat <&3
    exec 3<&-
  else
    printf 'cannot connect to %s:%s\n' "$1" "$2" >&2
  fi
  printf '\0'
done
"""

# GET $3 from $1:$2 within $4 seconds; prints the status line, or exits 7 (connect failed).
PROBE = r"""
exec 3<>"/dev/tcp/$1/$2" || exit 7
printf 'GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: docker-delivery-probe\r\n\r\n' "$3" "$1" >&3
IFS= read -r status <&3 || exit 8
printf '%s\n' "$status"
"""

_STATUS = re.compile(r"^HTTP/\d(?:\.\d)?\s+(\d{3})\b")


def _raw(sock: Any) -> Any:
    """The object with ``recv``/``sendall``/``settimeout`` under what ``exec_start`` returned (a
    socket's SocketIO on a local socket, a TLS socket, an SSH channel)."""
    return getattr(sock, "_sock", None) if isinstance(sock, socket.SocketIO) else sock


class RuntimeRelay:
    """A line-per-command stream to ``host:port`` inside container ``container`` (id or name).

    Opened on the first :meth:`send` and kept; a broken stream is opened again, and a read
    command (``show ...``) sent again once. Thread-safe: one command at a time.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        container: str,
        *,
        host: str = "localhost",
        port: int,
        timeout: float = 5.0,
    ) -> None:
        self.client = client
        self.container = container
        self.host = host
        self.port = port
        self.timeout = timeout
        self._lock = threading.Lock()
        self._sock: Any = None
        self._buffer = b""

    def __repr__(self) -> str:
        return f"RuntimeRelay({self.container!r}, {self.host}:{self.port})"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port} in container {self.container}"

    def _open(self) -> Any:
        import docker.errors

        try:
            exec_id = self.client.api.exec_create(
                self.container,
                ["bash", "-c", RUNTIME_RELAY, "relay", self.host, str(self.port)],
                stdin=True,
                stdout=True,
                stderr=True,
                tty=False,
            )["Id"]
            sock = self.client.api.exec_start(exec_id, socket=True)
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
            raise RelayError(f"the relay to {self.where} answered more than one reply")
        if err.strip():  # the relay could not reach the socket (bash says why)
            raise RelayError(
                f"the relay in container {self.container} answered: "
                + " ".join(bytes(err).decode("utf-8", "replace").split())
            )
        return reply.decode("utf-8", "replace")

    def _read_exactly(self, sock: Any, n: int, deadline: float) -> bytes:
        while len(self._buffer) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply within {self.timeout:g}s")
            sock.settimeout(left)
            chunk = sock.recv(max(65536, n - len(self._buffer)))
            if not chunk:
                raise ConnectionError("the engine closed the stream")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def send(self, command: str) -> str:
        """Send one command line; return the reply (RelayError when the stream fails)."""
        if "\n" in command or "\0" in command:
            raise RelayError(f"one command a line, without newlines: {command!r}")
        with self._lock:
            retry = command.startswith("show ")
            while True:
                fresh = self._sock is None
                if fresh:
                    self._sock = self._open()
                try:
                    self._sock.sendall(command.encode() + b"\n")
                    return self._read_reply(self._sock, time.monotonic() + self.timeout)
                except (OSError, ConnectionError, TimeoutError) as exc:
                    self._drop()
                    if retry and not fresh and not isinstance(exc, TimeoutError):
                        retry = False
                        continue  # the stream had ended (the engine restarted it): once more
                    raise RelayError(
                        f"the Runtime API relay to {self.where} failed on {command!r}: {exc}"
                    ) from exc


def probe_in_container(
    client: docker.DockerClient, container: str, address: str, port: int, path: str, timeout: float
) -> int:
    """The HTTP status ``GET path`` gets from ``address:port``, asked from inside ``container``.

    Raises ConnectionRefusedError, TimeoutError or ConnectionError (with the reason) otherwise.
    """
    import docker.errors

    budget = max(1, int(timeout + 0.999))
    try:
        result = client.containers.get(container).exec_run(
            ["timeout", str(budget), "bash", "-c", PROBE, "probe", address, str(port), path],
            stdout=True,
            stderr=True,
            demux=True,
        )
    except docker.errors.DockerException as exc:
        raise ConnectionError(f"the engine could not run the probe in {container}: {exc}") from exc
    out, err = result.output if isinstance(result.output, tuple) else (result.output, b"")
    text = (out or b"").decode("utf-8", "replace").strip()
    why = (err or b"").decode("utf-8", "replace").strip()
    if result.exit_code == 124:
        raise TimeoutError(f"timed out after {budget}s")
    if result.exit_code == 7:
        if "refused" in why.lower():
            raise ConnectionRefusedError("connection refused")
        raise ConnectionError(why.rsplit(":", 1)[-1].strip() or "connect failed")
    if result.exit_code == 8:
        raise ConnectionError("connection closed without a response")
    match = _STATUS.match(text)
    if result.exit_code != 0 or match is None:
        raise ConnectionError(f"no HTTP status line (exit {result.exit_code}): {text or why!r}")
    return int(match.group(1))


class ProbeTransport:
    """An httpx transport, for ``Client`` and ``AsyncClient`` (``transport=...``), that runs each
    request as a probe inside ``container``: only plain ``http`` GETs; the response is the
    status the probe got (its body is not read)."""

    def __init__(self, client: docker.DockerClient, container: str) -> None:
        self.client = client
        self.container = container

    def __repr__(self) -> str:
        return f"ProbeTransport({self.container!r})"

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
            status = probe_in_container(
                self.client,
                self.container,
                url.host,
                url.port or 80,
                url.raw_path.decode("ascii"),
                timeout,
            )
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
        """Nothing to close: each probe is one exec."""

    async def aclose(self) -> None:
        """Nothing to close: each probe is one exec."""

    def __enter__(self) -> ProbeTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> ProbeTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None
