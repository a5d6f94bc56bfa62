"""Tests of the demo app (stdlib unittest): python3 -m unittest -v test_app."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import unittest
from pathlib import Path
from unittest import mock

import app
import db

APP = Path(__file__).resolve().parent / "app.py"


class ServerTestCase(unittest.TestCase):
    """Runs the server in-process on an ephemeral port, one server per test."""

    def setUp(self) -> None:
        self.logged: list[str] = []
        patcher = mock.patch.object(app, "log", self.logged.append)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.config = app.Config(release="r42", digest="sha256:feed")
        self.server = app.make_server(0, self.config, host="127.0.0.1")
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.addCleanup(app.drain, self.server, 5)

    def connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        self.addCleanup(conn.close)
        return conn

    def request(self, method: str, path: str, body: bytes | None = None, conn=None):
        conn = conn or self.connect()
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp, resp.read()

    def get_json(self, path: str, status: int = 200) -> dict:
        resp, body = self.request("GET", path)
        self.assertEqual(resp.status, status)
        self.assertEqual(resp.getheader("Content-Type"), "application/json")
        return json.loads(body)


class EndpointTest(ServerTestCase):
    def test_upstream_calls_the_other_service(self) -> None:
        self.assertEqual(self.get_json("/upstream", 503), {"error": "no UPSTREAM_URL configured"})
        other = app.make_server(0, app.Config(release="api-v1"), host="127.0.0.1")
        threading.Thread(target=other.serve_forever, args=(0.05,), daemon=True).start()
        self.addCleanup(app.drain, other, 5)
        self.config.upstream_url = f"http://127.0.0.1:{other.server_address[1]}"
        got = self.get_json("/upstream")
        self.assertEqual((got["status"], got["upstream"]["release"]), (200, "api-v1"))
        app.drain(other, 5)
        self.assertIn("/version", self.get_json("/upstream", 502)["error"])

    def test_health(self) -> None:
        self.assertEqual(self.get_json("/health"), {"status": "ok"})
        self.assertEqual(self.get_json("/ready"), {"status": "ok"})

    def test_version_fields_and_headers(self) -> None:
        resp, body = self.request("GET", "/version")
        self.assertEqual(resp.status, 200)
        self.assertEqual(
            json.loads(body),
            {
                "release": "r42",
                "digest": "sha256:feed",
                "hostname": app.HOSTNAME,
                "pid": os.getpid(),
            },
        )
        self.assertEqual(resp.getheader("X-Release"), "r42")
        self.assertEqual(resp.getheader("X-Instance"), app.HOSTNAME)
        self.assertEqual(resp.getheader("Content-Length"), str(len(body)))

    def test_root_is_text(self) -> None:
        resp, body = self.request("GET", "/")
        self.assertEqual(resp.status, 200)
        self.assertTrue(resp.getheader("Content-Type").startswith("text/plain"))
        self.assertEqual(body.decode(), "docker-delivery demo app, release r42\n")

    def test_slow_takes_at_least_n_ms(self) -> None:
        start = time.monotonic()
        self.assertEqual(self.get_json("/slow?ms=300"), {"release": "r42", "slept_ms": 300})
        self.assertGreaterEqual(time.monotonic() - start, 0.3)
        self.get_json("/slow?ms=abc", status=400)

    def test_echo(self) -> None:
        resp, body = self.request("POST", "/echo", body=b"hello \xc3\xa9")
        self.assertEqual(resp.status, 200)
        self.assertEqual(json.loads(body), {"release": "r42", "received": 8, "body": "hello é"})
        resp, body = self.request("POST", "/echo", body=b"x" * 5000)
        reply = json.loads(body)
        self.assertEqual((reply["received"], len(reply["body"])), (5000, 1000))

    def test_unknown_path_and_method(self) -> None:
        self.get_json("/nope", status=404)
        resp, _ = self.request("POST", "/health", body=b"")
        self.assertEqual((resp.status, resp.getheader("Allow")), (405, "GET"))

    def test_greetings_without_a_database_answer_503(self) -> None:
        self.assertIsNone(self.config.database_url)
        self.assertIn("no database configured", self.get_json("/greetings", status=503)["error"])
        resp, _ = self.request("POST", "/greetings", body=b'{"message": "hi"}')
        self.assertEqual(resp.status, 503)

    def test_greetings_with_an_unreachable_database_answer_503_without_the_password(
        self,
    ) -> None:
        try:
            db.driver_name()
        except db.DriverMissing:
            self.skipTest("no PostgreSQL driver here (the image has one)")
        self.config.database_url = "postgresql://demo:hunter2@127.0.0.1:1/demo"
        error = self.get_json("/greetings", status=503)["error"]
        self.assertTrue(error.startswith("database error: "), error)
        self.assertNotIn("hunter2", error)
        resp, body = self.request("POST", "/greetings", body=b'{"message": 3}')
        self.assertEqual(resp.status, 400)
        self.assertIn("expected", json.loads(body)["error"])
        self.get_json("/greetings?limit=x", status=400)

    def test_keep_alive_reuses_one_connection(self) -> None:
        conn = self.connect()
        first, _ = self.request("GET", "/health", conn=conn)
        sock = conn.sock
        second, body = self.request("POST", "/echo", body=b"abc", conn=conn)
        self.assertEqual((first.status, second.status), (200, 200))
        self.assertIs(conn.sock, sock)  # http.client reconnects if the server closed it
        self.assertEqual(json.loads(body)["received"], 3)

    def test_one_log_line_per_request(self) -> None:
        self.request("GET", "/slow?ms=20")
        deadline = time.monotonic() + 2  # the line is written just after the response is sent
        while True:
            lines = [line for line in self.logged if line.startswith("request ")]
            if lines or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        self.assertEqual(len(lines), 1)
        self.assertRegex(lines[0], r"method=GET path=/slow\?ms=20 status=200 duration_ms=\d")


class FaultTest(ServerTestCase):
    def test_error_rate_one_gives_500_with_release_header(self) -> None:
        self.config.error_rate = 1.0
        for path in ("/", "/version", "/slow?ms=1"):
            resp, _ = self.request("GET", path)
            self.assertEqual((resp.status, resp.getheader("X-Release")), (500, "r42"), path)
        resp, _ = self.request("POST", "/echo", body=b"x")
        self.assertEqual(resp.status, 500)
        self.get_json("/health")  # health is not subject to the error rate

    def test_fail_health_gives_503(self) -> None:
        self.config.unhealthy = True
        self.assertEqual(self.get_json("/health", status=503), {"status": "unhealthy"})
        self.get_json("/ready", status=503)

    def test_admin_fault_at_runtime(self) -> None:
        resp, body = self.request("POST", "/admin/fault", body=b'{"unhealthy": true}')
        self.assertEqual(json.loads(body)["unhealthy"], True)
        self.get_json("/health", status=503)
        self.request("POST", "/admin/fault", body=b'{"unhealthy": false, "error_rate": 1}')
        self.get_json("/health")
        self.get_json("/version", status=500)
        for bad in (b"[]", b"{", b'{"error_rate": 2}', b'{"unhealthy": 1}', b'{"x": true}'):
            resp, _ = self.request("POST", "/admin/fault", body=bad)
            self.assertEqual(resp.status, 400, bad)
        self.assertEqual(
            self.get_json("/admin/fault"),
            {"unhealthy": False, "error_rate": 1.0, "exit_on_start": False},
        )

    def test_config_from_env(self) -> None:
        cfg = app.Config.from_env(
            {
                "PORT": "9000",
                "APP_RELEASE": "v2",
                "FAIL_HEALTH": "1",
                "ERROR_RATE": "0.2",
                "EXIT_ON_START": "true",
            }
        )
        self.assertEqual(
            (cfg.port, cfg.release, cfg.digest, cfg.unhealthy, cfg.error_rate, cfg.exit_on_start),
            (9000, "v2", None, True, 0.2, True),
        )
        with self.assertRaises(ValueError):
            app.Config.from_env({"ERROR_RATE": "1.5"})
        self.assertIsNone(cfg.database_url)
        url = "postgresql://demo:hunter2@db:5432/demo"
        cfg = app.Config.from_env({"DATABASE_URL": url})
        self.assertEqual(cfg.database_url, url)
        self.assertNotIn("hunter2", repr(cfg))


class ShutdownTest(ServerTestCase):
    def test_drain_lets_in_flight_request_finish(self) -> None:
        result: dict = {}
        slow = threading.Thread(target=lambda: result.update(r=self.request("GET", "/slow?ms=500")))
        slow.start()
        deadline = time.monotonic() + 5
        while self.server.inflight == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        start = time.monotonic()
        self.assertTrue(app.drain(self.server, 5))
        self.assertGreaterEqual(time.monotonic() - start, 0.3)  # it waited for the request
        slow.join(5)
        resp, body = result["r"]
        self.assertEqual((resp.status, resp.getheader("Connection")), (200, "close"))
        self.assertEqual(json.loads(body)["slept_ms"], 500)
        with self.assertRaises(ConnectionRefusedError):
            self.request("GET", "/health")

    def test_drain_closes_idle_keep_alive_connections_at_once(self) -> None:
        conn = self.connect()
        self.request("GET", "/health", conn=conn)  # the connection stays open, idle
        start = time.monotonic()
        self.assertTrue(app.drain(self.server, 5))
        self.assertLess(time.monotonic() - start, 2)

    def test_ready_is_503_while_draining(self) -> None:
        self.server.draining.set()
        resp, body = self.request("GET", "/ready")
        self.assertEqual((resp.status, json.loads(body)), (503, {"status": "draining"}))
        self.assertEqual(resp.getheader("Connection"), "close")
        self.get_json("/health")


class ProcessTest(unittest.TestCase):
    """Runs app.py as a process: exit codes and signal handling."""

    def start(self, **env: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, str(APP)],
            env={**os.environ, "PORT": "0", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        self.addCleanup(proc.stdout.close)
        return proc

    def wait_for_port(self, proc: subprocess.Popen) -> int:
        # Lines are read by a thread, not after select(): one read may take both "starting"
        # and "listening" into the reader's buffer, where select() no longer sees the second.
        found: queue.Queue[int] = queue.Queue()

        def read() -> None:
            for line in proc.stdout:
                if " listening on " in line:
                    found.put(int(line.rsplit(":", 1)[1]))
                    return

        threading.Thread(target=read, daemon=True).start()
        try:
            return found.get(timeout=10)
        except queue.Empty:
            self.fail("the app did not start listening")

    def slow_request_during_sigterm(self, ms: int = 500, **env: str):
        proc = self.start(**env)
        port = self.wait_for_port(proc)
        result: dict = {}

        def call() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", f"/slow?ms={ms}")
                result["status"] = conn.getresponse().status
            except (http.client.HTTPException, OSError) as exc:
                result["error"] = exc
            finally:
                conn.close()

        worker = threading.Thread(target=call)
        worker.start()
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        worker.join(10)
        return proc, result

    def test_exit_on_start_exits_3(self) -> None:
        proc = self.start(EXIT_ON_START="1")
        self.assertEqual(proc.wait(10), 3)
        self.assertIn("EXIT_ON_START", proc.stdout.read())

    def test_sigterm_drains_and_exits_0(self) -> None:
        proc, result = self.slow_request_during_sigterm()
        self.assertEqual(result, {"status": 200})
        self.assertEqual(proc.wait(10), 0)
        self.assertIn("shutdown complete", proc.stdout.read())

    def test_exit_on_sigterm_immediately_drops_requests(self) -> None:
        proc, result = self.slow_request_during_sigterm(EXIT_ON_SIGTERM_IMMEDIATELY="1")
        self.assertIn("error", result)
        self.assertEqual(proc.wait(10), 128 + signal.SIGTERM)

    def test_shutdown_timeout_abandons_requests_and_exits_0(self) -> None:
        start = time.monotonic()
        proc, result = self.slow_request_during_sigterm(ms=5000, SHUTDOWN_TIMEOUT_S="0.3")
        self.assertIn("error", result)
        self.assertEqual(proc.wait(10), 0)
        self.assertLess(time.monotonic() - start, 4)
        self.assertIn("shutdown timeout: abandoning 1 in-flight request(s)", proc.stdout.read())

    def test_start_delay(self) -> None:
        start = time.monotonic()
        proc = self.start(START_DELAY_S="0.5")
        self.wait_for_port(proc)
        self.assertGreaterEqual(time.monotonic() - start, 0.5)
        proc.send_signal(signal.SIGINT)
        self.assertEqual(proc.wait(10), 0)


if __name__ == "__main__":
    unittest.main()
