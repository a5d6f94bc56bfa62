"""The load generator test helper, against demo app processes on 127.0.0.1."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from kit.loadgen import KINDS, DemoAppProcess, LoadGenerator

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def blue() -> Iterator[DemoAppProcess]:
    with DemoAppProcess("blue") as app:
        yield app


@pytest.fixture
def green() -> Iterator[DemoAppProcess]:
    # Drops its connections when stopped, like apps without a graceful shutdown.
    with DemoAppProcess("green", env={"EXIT_ON_SIGTERM_IMMEDIATELY": "1"}) as app:
        yield app


def test_three_seconds_at_150_per_second_against_two_healthy_apps(
    blue: DemoAppProcess, green: DemoAppProcess
) -> None:
    with LoadGenerator([blue.url, green.url], rate=150, seed=1) as load:
        time.sleep(1.5)
        load.mark("second half")
        live = load.snapshot()
        time.sleep(1.5)
    report = load.report
    assert report is not None
    print(report.summary())

    assert live.total > 150 and live.phase == "second half"
    assert report.rate >= 0.9 * 150
    assert report.total >= 0.9 * 450
    assert report.failed == 0, report.failures
    assert report.failures == {}
    assert set(report.by_release) == {"blue", "green"}
    assert sum(report.by_release.values()) == report.total
    assert 0.45 <= report.share("blue") <= 0.55  # round-robin over the two
    # Phases split the counts, and add up.
    assert set(report.by_phase) == {"start", "second half"}
    assert sum(p["total"] for p in report.by_phase.values()) == report.total
    assert report.by_phase["second half"]["failed"] == 0
    assert 0.4 <= report.share("green", phase="second half") <= 0.6
    # Every kind was sent; slow ones stay in flight at least slow_ms.
    assert set(report.latency) == set(KINDS)
    assert report.latency["slow"]["p50"] >= 1.0
    assert report.latency["get"]["p50"] < 1.0
    # Each answer says who answered.
    instances = {r.instance for r in report.results}
    assert None not in instances
    assert report.stopped_by == "stop()"
    assert "0 failed" in report.summary() and "blue=" in report.summary()


def test_injected_errors_are_counted_as_failures() -> None:
    with (
        DemoAppProcess("flaky", env={"ERROR_RATE": "0.2"}) as app,
        LoadGenerator(app.url, rate=150, seed=2) as load,
    ):
        time.sleep(3)
    report = load.report
    assert report is not None
    print(report.summary())
    assert report.total >= 400
    assert 0.13 <= report.failure_rate <= 0.27
    assert {reason for _, reason in report.failures} == {"status 500"}
    # A 500 is still an answer from a release.
    assert report.by_release == {"flaky": report.total}


def test_killing_an_app_mid_run_produces_counted_failures(
    blue: DemoAppProcess, green: DemoAppProcess
) -> None:
    with LoadGenerator([blue.url, green.url], rate=150, seed=3) as load:
        time.sleep(1.0)
        green.signal(signal.SIGTERM)
        assert green.process is not None and green.process.wait(5) == 128 + signal.SIGTERM
        load.mark("green killed")  # once it has exited: no answer from it can follow
        time.sleep(1.5)
    report = load.report
    assert report is not None
    print(report.summary())

    killed = report.by_phase["green killed"]
    # Every request sent to green after the kill fails: about half of the phase.
    assert 0.35 <= killed["failed"] / killed["total"] <= 0.65
    assert killed.get("green", 0) == 0
    reasons = {reason for _, reason in report.failures}
    assert "connection refused" in reasons
    # Requests in flight at the kill (e.g. slow ones) fail too, counted in the phase they began.
    assert report.by_phase["start"]["failed"] <= report.by_phase["start"]["total"] * 0.3
    assert report.failed == sum(report.failures.values())


def test_it_stops_by_itself(blue: DemoAppProcess) -> None:
    load = LoadGenerator(blue.url, rate=100, max_requests=30).start()
    assert load.wait(5)  # 0.3 s of sending, then the in-flight ones (slow: 1 s) finish
    assert not load.running
    report = load.stop()
    assert report.total == 30 and report.stopped_by == "max_requests (30)"

    load = LoadGenerator(blue.url, rate=50, max_duration=0.5, mix={"get": 1}).start()
    assert load.wait(5)
    report = load.stop()
    assert report.stopped_by == "max_duration (0.5s)"
    assert 20 <= report.total <= 26
    assert load.stop() is report


def test_slow_requests_stay_in_flight(blue: DemoAppProcess) -> None:
    with LoadGenerator(blue.url, rate=20, mix={"slow": 1}, slow_ms=1200) as load:
        time.sleep(0.5)
        assert load.snapshot().in_flight >= 5
    report = load.report
    assert report is not None and report.failed == 0
    assert min(r.latency for r in report.results) >= 1.2


def test_it_only_targets_loopback_addresses() -> None:
    for url in ("http://10.0.0.1:8080", "http://example.com", "ftp://127.0.0.1"):
        with pytest.raises(ValueError):
            LoadGenerator(url)
    with pytest.raises(ValueError, match="mix"):
        LoadGenerator("http://127.0.0.1:1", mix={"delete": 1})
