"""docker-delivery demo application: a small HTTP service the example DAGs deliver as an image.

Python 3 standard library only, plus a PostgreSQL driver (psycopg2 or psycopg, which the
Dockerfile installs) imported only when a database is configured. Configuration (environment
variables):

  PORT                         listen port on 0.0.0.0 (default 8080; 0 picks a free port)
  APP_RELEASE                  release string reported by /version and the X-Release header
                               (default "dev"; the Dockerfile bakes it from the RELEASE build arg)
  APP_DIGEST                   image digest passed by the delivery tool, reported by /version
  START_DELAY_S                seconds to sleep before listening (simulates a slow start-up)
  FAIL_HEALTH=1                /health and /ready answer 503 (the release never becomes healthy)
  ERROR_RATE=0.2               share (0..1) of requests to /, /version, /slow, /echo answering 500
  EXIT_ON_START=1              print a message and exit with code 3 at once (a bad release)
  SHUTDOWN_TIMEOUT_S           on SIGTERM/SIGINT, time in-flight requests get to finish (default 30)
  EXIT_ON_SIGTERM_IMMEDIATELY=1  exit at once on SIGTERM/SIGINT (code 128+signal) without
                               draining, like apps that drop requests when stopped
  KEEPALIVE_TIMEOUT_S          idle keep-alive connections are closed after this (default 15)
  UPSTREAM_URL                 another service this one calls (http://host:port): GET /upstream
                               answers 200 with that service's /version, 502 when it fails
  DATABASE_URL                 PostgreSQL URL (postgresql://user:password@host:port/db) for
                               /greetings, or DATABASE_URL_FILE: a file holding it. Optional:
                               without it the app runs as before and /greetings answers 503.
                               Never printed (the log names host, port and database only).

Flags (FAIL_HEALTH, EXIT_ON_START, EXIT_ON_SIGTERM_IMMEDIATELY) are on for 1/true/yes/on. Logs go
to stdout, one line per request (method, path, status, duration_ms), flushed at once.

Endpoints: GET /, /health, /ready, /version, /slow?ms=N (cap 60000), /upstream, /admin/fault,
/greetings?limit=N; POST /echo, /admin/fault, /greetings. Every response carries X-Release and
X-Instance headers. The fault switches can be changed at runtime: POST /admin/fault
{"unhealthy": bool, "error_rate": 0..1, "exit_on_start": bool} (exit_on_start only matters at
start; it is stored and reported).

On SIGTERM/SIGINT the server stops accepting connections, /ready answers 503, idle keep-alive
connections are closed, in-flight requests finish (up to SHUTDOWN_TIMEOUT_S), then it exits 0.
A second signal during the drain exits at once.

/greetings uses the database (schema: migrations/, applied by migrate.py): GET lists the latest
greetings (limit 1-100, default 20), POST adds one (a JSON {"message": "..."} or plain text) and
answers 201. Without a database, or when it fails, it answers 503 with the (masked) reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import db

HOSTNAME = socket.gethostname()
MAX_SLOW_MS = 60_000
MAX_BODY = 10 * 1024 * 1024
FAULT_KEYS = {"unhealthy": bool, "error_rate": float, "exit_on_start": bool}
FAULTY_PATHS = {"/", "/version", "/slow", "/echo"}
ROUTES = {  # path -> methods; /admin/fault is served by Handler.route_admin_fault
    "/": ("GET",),
    "/health": ("GET",),
    "/ready": ("GET",),
    "/version": ("GET",),
    "/slow": ("GET",),
    "/echo": ("POST",),
    "/admin/fault": ("GET", "POST"),
    "/greetings": ("GET", "POST"),
    "/upstream": ("GET",),
}
MAX_GREETING = 1000


def log(message: str) -> None:
    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    sys.stdout.write(f"{stamp} {message}\n")
    sys.stdout.flush()


def _valid_fault(key: str, value: object) -> bool:
    if FAULT_KEYS[key] is bool or isinstance(value, bool):
        return FAULT_KEYS[key] is bool and isinstance(value, bool)
    return isinstance(value, (int, float)) and 0 <= value <= 1  # error_rate


def _flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class Config:
    port: int = 8080
    release: str = "dev"
    digest: str | None = None
    start_delay_s: float = 0.0
    unhealthy: bool = False
    error_rate: float = 0.0
    exit_on_start: bool = False
    shutdown_timeout_s: float = 30.0
    exit_on_sigterm_immediately: bool = False
    keepalive_timeout_s: float = 15.0
    database_url: str | None = field(default=None, repr=False)
    upstream_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        cfg = cls(
            port=int(env.get("PORT", "8080")),
            release=env.get("APP_RELEASE") or "dev",
            digest=env.get("APP_DIGEST") or None,
            start_delay_s=float(env.get("START_DELAY_S", "0")),
            unhealthy=_flag(env.get("FAIL_HEALTH", "")),
            error_rate=float(env.get("ERROR_RATE", "0")),
            exit_on_start=_flag(env.get("EXIT_ON_START", "")),
            shutdown_timeout_s=float(env.get("SHUTDOWN_TIMEOUT_S", "30")),
            exit_on_sigterm_immediately=_flag(env.get("EXIT_ON_SIGTERM_IMMEDIATELY", "")),
            keepalive_timeout_s=float(env.get("KEEPALIVE_TIMEOUT_S", "15")),
            database_url=db.database_url(env),
            upstream_url=(env.get("UPSTREAM_URL") or "").rstrip("/") or None,
        )
        if not 0.0 <= cfg.error_rate <= 1.0:
            raise ValueError(f"ERROR_RATE must be within 0..1, got {cfg.error_rate}")
        return cfg

    def faults(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key in FAULT_KEYS}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, no delayed-ACK stall
    server_version = "docker-delivery-demo"
    server: DemoServer

    def setup(self) -> None:
        self.timeout = self.server.config.keepalive_timeout_s
        self.served = 0
        super().setup()

    def handle_one_request(self) -> None:
        # While waiting for the next request the connection counts as idle: a drain closes it.
        with self.server.lock:
            self.server.idle.add(self.connection)
            closing = self.server.draining.is_set() and self.served > 0
        try:
            if closing:
                self.close_connection = True
            else:
                super().handle_one_request()
        finally:
            with self.server.lock:
                self.server.idle.discard(self.connection)

    def parse_request(self) -> bool:
        with self.server.lock:
            self.server.idle.discard(self.connection)
        return super().parse_request()

    def send_response(self, code: int, message: str | None = None) -> None:
        self.status = code
        super().send_response(code, message)

    def end_headers(self) -> None:
        self.send_header("X-Release", self.server.config.release)
        self.send_header("X-Instance", HOSTNAME)
        if self.server.draining.is_set() and not self.close_connection:
            self.send_header("Connection", "close")  # also sets self.close_connection
        super().end_headers()

    def log_request(self, code: object = "-", size: object = "-") -> None:
        pass  # _dispatch logs one line per request, with its duration

    def log_message(self, format: str, *args: object) -> None:
        log(f"{self.address_string()} {format % args}")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        start, self.status, self.served = time.monotonic(), 0, self.served + 1
        url = urlsplit(self.path)
        cfg = self.server.config
        with self.server.lock:
            self.server.inflight += 1
        try:
            body = self._read_body() if method == "POST" else b""
            methods = ROUTES.get(url.path, ())
            if body is None:
                pass  # _read_body answered already
            elif not methods:
                self._json(404, {"error": "not found", "path": url.path})
            elif method not in methods:
                self._json(405, {"error": "method not allowed"}, Allow=", ".join(methods))
            elif url.path in FAULTY_PATHS and random.random() < cfg.error_rate:
                self._json(500, {"error": "injected fault", "release": cfg.release})
            else:
                name = "route_" + (url.path.strip("/").replace("/", "_") or "root")
                getattr(self, name)(parse_qs(url.query), body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with self.server.lock:
                self.server.inflight -= 1
            took = (time.monotonic() - start) * 1000
            log(
                f"request method={method} path={self.path} status={self.status} "
                f"duration_ms={took:.1f}"
            )

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._json(411, {"error": "chunked bodies are not supported; send Content-Length"})
            return None
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._json(413, {"error": f"body larger than {MAX_BODY} bytes"})
            return None
        return self.rfile.read(length)

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict, **headers: str) -> None:
        body = (json.dumps(payload) + "\n").encode()
        self._send(status, body, "application/json", **headers)

    def route_root(self, query: dict, body: bytes) -> None:
        text = f"docker-delivery demo app, release {self.server.config.release}\n"
        self._send(200, text.encode(), "text/plain; charset=utf-8")

    def route_health(self, query: dict, body: bytes) -> None:
        ok = not self.server.config.unhealthy
        self._json(200 if ok else 503, {"status": "ok" if ok else "unhealthy"})

    def route_ready(self, query: dict, body: bytes) -> None:
        if self.server.draining.is_set():
            self._json(503, {"status": "draining"})
        else:
            self.route_health(query, body)

    def route_version(self, query: dict, body: bytes) -> None:
        cfg = self.server.config
        self._json(
            200,
            {
                "release": cfg.release,
                "digest": cfg.digest,
                "hostname": HOSTNAME,
                "pid": os.getpid(),
            },
        )

    def route_upstream(self, query: dict, body: bytes) -> None:
        import urllib.error
        import urllib.request

        upstream = self.server.config.upstream_url
        if upstream is None:
            self._json(503, {"error": "no UPSTREAM_URL configured"})
            return
        try:
            with urllib.request.urlopen(upstream + "/version", timeout=3) as answer:
                payload = json.loads(answer.read())
                self._json(200, {"status": answer.status, "upstream": payload})
        except (OSError, ValueError) as exc:  # HTTPError, URLError, timeouts, bad JSON
            self._json(502, {"error": f"{upstream}/version: {exc}"})

    def route_slow(self, query: dict, body: bytes) -> None:
        try:
            ms = min(max(int(query.get("ms", ["1000"])[0]), 0), MAX_SLOW_MS)
        except ValueError:
            return self._json(400, {"error": "ms must be an integer"})
        time.sleep(ms / 1000)
        self._json(200, {"release": self.server.config.release, "slept_ms": ms})

    def route_echo(self, query: dict, body: bytes) -> None:
        text = body.decode("utf-8", errors="replace")[:1000]
        self._json(
            200, {"release": self.server.config.release, "received": len(body), "body": text}
        )

    def route_greetings(self, query: dict, body: bytes) -> None:
        url = self.server.config.database_url
        if not url:
            return self._json(503, {"error": "no database configured: set DATABASE_URL"})
        try:
            if self.command == "POST":
                text = _greeting(body)
                sql = "INSERT INTO greetings (body) VALUES (%s) RETURNING id, body, created_at"
                status, rows = 201, _query(url, sql, (text,))
            else:
                limit = query.get("limit", ["20"])[0]
                if not limit.isdigit():
                    raise ValueError("limit must be a whole number")
                limit = min(max(int(limit), 1), 100)
                sql = "SELECT id, body, created_at FROM greetings ORDER BY id DESC LIMIT %s"
                status, rows = 200, _query(url, sql, (limit,))
        except ValueError as error:
            return self._json(400, {"error": str(error)})
        except Exception as error:
            if not db.is_database_error(error):
                raise
            return self._json(503, {"error": f"database error: {db.error_text(error, url)}"})
        greetings = [
            {"id": id_, "message": message, "created_at": created.isoformat()}
            for id_, message, created in rows
        ]
        release = self.server.config.release
        if status == 201:
            return self._json(201, {"release": release, "greeting": greetings[0]})
        self._json(200, {"release": release, "greetings": greetings})

    def route_admin_fault(self, query: dict, body: bytes) -> None:
        cfg = self.server.config
        if self.command == "POST":
            try:
                change = json.loads(body or b"{}")
                if not isinstance(change, dict) or set(change) - set(FAULT_KEYS):
                    raise ValueError(f"expected an object with keys {sorted(FAULT_KEYS)}")
                for key, value in change.items():
                    if not _valid_fault(key, value):
                        raise ValueError(f"invalid {key}: {value!r}")
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                return self._json(400, {"error": str(exc)})
            with self.server.lock:
                for key, value in change.items():
                    setattr(cfg, key, FAULT_KEYS[key](value))
            log(f"faults changed: {cfg.faults()}")
        self._json(200, cfg.faults())


def _greeting(body: bytes) -> str:
    """The message of a POST /greetings body: JSON {"message": "..."} or plain UTF-8 text."""
    text = body.decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        try:
            message = json.loads(text).get("message")
        except (ValueError, AttributeError):
            message = None
        if not isinstance(message, str):
            raise ValueError('expected {"message": "..."} or plain text')
        text = message.strip()
    if not text or len(text) > MAX_GREETING:
        raise ValueError(f"a greeting is 1-{MAX_GREETING} characters")
    return text


def _query(url: str, sql: str, params: tuple) -> list[tuple]:
    """One statement on a fresh connection (autocommit); its rows."""
    conn = db.connect(url, timeout=5)
    try:
        cur = conn.cursor()
        cur.execute(sql, params)
        return cur.fetchall()
    finally:
        conn.close()


class DemoServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins request threads: in-flight requests finish
    request_queue_size = 512  # listen backlog: bursts of new connections are not dropped
    block_on_close = True

    def __init__(self, address: tuple[str, int], config: Config) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.draining = threading.Event()
        self.idle: set[socket.socket] = set()
        self.inflight = 0
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the FQDN, which can stall in containers without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = HOSTNAME, self.server_address[1]


def make_server(port: int, config: Config, host: str = "0.0.0.0") -> DemoServer:
    return DemoServer((host, port), config)


def drain(server: DemoServer, timeout: float) -> bool:
    """Stop accepting, close idle connections, wait for in-flight requests up to timeout.

    serve_forever() must be running in another thread (or have run). True if all finished.
    """
    server.draining.set()  # /ready answers 503, responses carry Connection: close
    server.shutdown()  # the accept loop ends
    with server.lock:
        for conn in server.idle:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RD)  # wakes the handler waiting for a request
    closer = threading.Thread(target=server.server_close, name="closer", daemon=True)
    closer.start()
    closer.join(timeout)
    return not closer.is_alive()


def main() -> int:
    cfg = Config.from_env()
    where = db.describe_url(cfg.database_url) if cfg.database_url else "none"
    log(
        f"starting release={cfg.release} digest={cfg.digest} pid={os.getpid()} "
        f"faults={cfg.faults()} database={where}"
    )
    if cfg.exit_on_start:
        log("EXIT_ON_START is set: simulating a bad release, exiting with code 3")
        return 3
    stop, received = threading.Event(), []

    def on_signal(signum: int, _frame: object) -> None:
        # Only os.write here: the handler may interrupt a print of the main thread. And no
        # stop.set() here: the handler runs on the main thread, which may hold the event's lock
        # (inside stop.wait), so it would wait for itself forever; another thread sets it.
        if cfg.exit_on_sigterm_immediately or received:
            os.write(1, f"received signal {signum}: exiting at once, no drain\n".encode())
            os._exit(128 + signum)
        received.append(signal.Signals(signum).name)
        threading.Thread(target=stop.set, name="on-signal", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if cfg.start_delay_s > 0:
        log(f"START_DELAY_S: sleeping {cfg.start_delay_s}s before listening")
        if stop.wait(cfg.start_delay_s):
            log(f"received {received[0]} before listening: exiting")
            return 0
    server = make_server(cfg.port, cfg)
    threading.Thread(target=server.serve_forever, args=(0.2,), daemon=True).start()
    log(f"listening on {server.server_address[0]}:{server.server_address[1]}")
    while not stop.wait(1.0):
        pass
    log(f"received {received[0]}: draining (timeout {cfg.shutdown_timeout_s}s)")
    if drain(server, cfg.shutdown_timeout_s):
        log("shutdown complete")
        return 0
    log(f"shutdown timeout: abandoning {server.inflight} in-flight request(s)")
    os._exit(0)  # request threads are not daemons; do not wait for them


if __name__ == "__main__":
    sys.exit(main())
