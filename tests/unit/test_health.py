"""Health checks and the async prober, against the demo app run as a local process (no mocks)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from kit.loadgen import DemoAppProcess, free_port

from docker_delivery.errors import DeliveryError
from docker_delivery.health import (
    HealthCheck,
    HealthCheckInvalid,
    HealthReport,
    Unhealthy,
    parse_addresses,
    probe,
    wait_all_healthy,
    wait_all_healthy_sync,
    wait_healthy,
)

pytestmark = pytest.mark.timeout(60)

StartApp = Callable[..., DemoAppProcess]


@pytest.fixture
def demo_app() -> Iterator[StartApp]:
    """Start demo app processes on 127.0.0.1: ``demo_app("blue", FAIL_HEALTH="1")``."""
    apps: list[DemoAppProcess] = []

    def start(
        release: str = "blue", *, port: int = 0, wait: bool = True, **env: str
    ) -> DemoAppProcess:
        app = DemoAppProcess(release, port=port, env=env, wait=wait)
        apps.append(app)
        return app.start()

    yield start
    for app in apps:
        app.__exit__(None, None, None)


def fast(**overrides: float) -> HealthCheck:
    settings: dict[str, float] = {"interval": 0.2, "timeout": 1.0}
    settings.update(overrides)
    return HealthCheck(**settings)  # type: ignore[arg-type]


def health_requests(app: DemoAppProcess, *, at_least: int = 0, wait: float = 3.0) -> int:
    """How many /health requests the app logged; waiting up to ``wait`` seconds for ``at_least``
    (it logs a request after answering it, so the last line may come a moment after)."""
    deadline = time.monotonic() + wait
    while (count := app.log_text().count("path=/health ")) < at_least:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return count


# -- the spec ------------------------------------------------------------------------------------


def test_describe_and_defaults() -> None:
    check = HealthCheck()
    assert check.describe() == (
        "GET /health on :8080 expects 200 (interval 1s, timeout 2s, 2 to pass, 3 to fail)"
    )
    assert check.min_time_to_healthy() == 1.0
    slow_start = HealthCheck(path="/ready", interval=0.5, healthy_threshold=5, start_period=30)
    assert slow_start.min_time_to_healthy() == 2.0
    assert "GET /ready" in slow_start.describe()
    assert "start period 30s" in slow_start.describe()


def test_round_trips_through_a_dict() -> None:
    check = HealthCheck(
        path="/ready",
        port=9000,
        expected_status=204,
        interval=0.5,
        timeout=1,
        healthy_threshold=1,
        unhealthy_threshold=5,
        start_period=10,
        scheme="https",
    )
    data = check.to_dict()
    assert data["path"] == "/ready" and data["expected_status"] == 204
    assert HealthCheck.from_dict(data) == check
    with pytest.raises(HealthCheckInvalid, match=r"unknown setting.*'intervall'"):
        HealthCheck.from_dict({"intervall": 1})


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"path": "health"}, "path must start with '/'"),
        ({"port": 0}, "port must be an integer within 1..65535"),
        ({"port": 70000}, "port must be an integer within 1..65535"),
        ({"interval": 0}, "interval must be a positive number"),
        ({"timeout": -1}, "timeout must be a positive number"),
        ({"start_period": -5}, "start_period must be zero or a positive"),
        ({"healthy_threshold": 0}, "healthy_threshold must be an integer >= 1"),
        ({"unhealthy_threshold": 1.5}, "unhealthy_threshold must be an integer >= 1"),
        ({"expected_status": 42}, "expected_status must be an HTTP status"),
        ({"scheme": "ftp"}, "scheme must be 'http' or 'https'"),
        ({"interval": True}, "interval must be a positive number"),
        ({"start_interval": 0}, "start_interval must be a positive number of seconds"),
        ({"interval": 1, "start_interval": 2}, "at most interval (1)"),
    ],
)
def test_invalid_settings_are_refused_by_name(settings: dict[str, object], named: str) -> None:
    with pytest.raises(HealthCheckInvalid, match="invalid health check") as caught:
        HealthCheck(**settings)  # type: ignore[arg-type]
    assert named in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, DeliveryError)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(HealthCheckInvalid) as caught:
        HealthCheck(path="x", interval=0, healthy_threshold=0)
    message = str(caught.value)
    assert "path" in message and "interval" in message and "healthy_threshold" in message


def test_addresses() -> None:
    assert parse_addresses("127.0.0.1:8080") == ["127.0.0.1:8080"]
    assert parse_addresses("a:1, b:2 c") == ["a:1", "b:2", "c"]
    assert parse_addresses("['a:1', 'b:2']") == ["a:1", "b:2"]
    assert parse_addresses(["[::1]:80"]) == ["[::1]:80"]
    assert HealthCheck(port=9000).url("10.0.0.5") == "http://10.0.0.5:9000/health"
    assert HealthCheck().url("127.0.0.1:32768") == "http://127.0.0.1:32768/health"
    assert HealthCheck(scheme="https").url("[::1]:8443") == "https://[::1]:8443/health"
    for bad in ("", [], "http://a:1", "a:b", "a:0"):
        with pytest.raises(HealthCheckInvalid):
            parse_addresses(bad)


# -- probing a real app ----------------------------------------------------------------------


def test_a_healthy_app_passes_after_threshold_probes(demo_app: StartApp) -> None:
    app = demo_app("blue")
    check = fast(interval=0.25, healthy_threshold=3)
    lines: list[str] = []

    report = asyncio.run(wait_healthy(app.address, check, deadline=10, log=lines.append))

    assert report == HealthReport(app.address, True, 3, report.elapsed_s, 200, "got 200")
    # (threshold - 1) x interval at best; loose upper bound for a busy machine.
    assert check.min_time_to_healthy() - 0.05 <= report.elapsed_s < 2.0
    assert any("healthy after 3 probe(s)" in line for line in lines)
    assert health_requests(app, at_least=3) == 3


def test_one_probe_is_enough_with_a_threshold_of_one(demo_app: StartApp) -> None:
    app = demo_app("blue")
    report = asyncio.run(
        wait_healthy(app.address, fast(healthy_threshold=1), deadline=5, log=lambda _: None)
    )
    assert report.healthy and report.probes == 1 and report.elapsed_s < 0.5


def test_a_never_healthy_app_fails_naming_the_check(demo_app: StartApp) -> None:
    app = demo_app("broken", FAIL_HEALTH="1")
    check = fast(unhealthy_threshold=3)
    started = time.monotonic()

    with pytest.raises(Unhealthy) as caught:
        asyncio.run(wait_healthy(app.address, check, deadline=30, log=lambda _: None))

    error = caught.value
    message = str(error)
    assert check.describe() in message
    assert app.address in message
    assert "got 503" in message
    assert "failed 3 times in a row" in message
    assert error.reason == "unhealthy" and error.check == check
    assert error.report.healthy is False and error.report.probes == 3
    assert error.report.last_status == 503
    assert isinstance(error, DeliveryError)
    # Three failures a fifth of a second apart: about 0.4 s, far from the 30 s deadline.
    assert time.monotonic() - started < 3


def test_a_closed_port_is_named_connection_refused() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(Unhealthy, match="last: connection refused") as caught:
        asyncio.run(
            wait_healthy(address, fast(unhealthy_threshold=2), deadline=10, log=lambda _: None)
        )
    assert caught.value.report.last_status is None


def test_a_slow_answer_is_named_timed_out(demo_app: StartApp) -> None:
    app = demo_app("blue")
    check = fast(timeout=0.3, unhealthy_threshold=2, interval=0.3)
    check = HealthCheck(**{**check.to_dict(), "path": "/slow?ms=2000"})
    with pytest.raises(Unhealthy, match=r"last: timed out after 0\.3s"):
        asyncio.run(wait_healthy(app.address, check, deadline=10, log=lambda _: None))
    assert probe(app.address, check).detail == "timed out after 0.3s"


def test_an_exited_instance_ends_the_wait_at_once(demo_app: StartApp) -> None:
    port = free_port()
    app = demo_app("bad", port=port, wait=False, EXIT_ON_START="1")
    # Nothing but the exit can end this wait early: failures never count during start_period.
    check = fast(unhealthy_threshold=10, start_period=60)

    async def is_alive() -> str | None:
        code = app.exit_code()
        return None if code is None else f"exited with code {code}"

    started = time.monotonic()
    with pytest.raises(Unhealthy) as caught:
        asyncio.run(
            wait_healthy(app.address, check, deadline=30, is_alive=is_alive, log=lambda _: None)
        )

    assert time.monotonic() - started < 5
    assert caught.value.reason == "exited"
    assert "the instance exited (exited with code 3)" in str(caught.value)
    assert check.describe() in str(caught.value)
    assert app.address in str(caught.value)


def test_is_alive_must_not_answer_a_bool(demo_app: StartApp) -> None:
    app = demo_app("blue")

    async def is_alive() -> bool:
        return True

    with pytest.raises(TypeError, match="reason string"):
        asyncio.run(
            wait_healthy(
                app.address,
                fast(),
                deadline=5,
                is_alive=is_alive,  # type: ignore[arg-type]
                log=lambda _: None,
            )
        )


def test_start_period_forgives_failures_while_the_app_starts(demo_app: StartApp) -> None:
    port = free_port()
    app = demo_app("slow", port=port, wait=False, START_DELAY_S="2")
    started = time.monotonic()

    # Without a start period, two refused connections in a row fail the wait (~0.2 s) ...
    with pytest.raises(Unhealthy, match="connection refused"):
        asyncio.run(
            wait_healthy(app.address, fast(unhealthy_threshold=2), deadline=10, log=lambda _: None)
        )
    assert time.monotonic() - started < 1.5

    # ... with one, the same failures do not count, and the app passes once it listens.
    check = fast(unhealthy_threshold=2, start_period=8)
    report = asyncio.run(wait_healthy(app.address, check, deadline=15, log=lambda _: None))
    assert report.healthy
    assert report.probes >= 4  # refused a few times first
    assert time.monotonic() - started >= 1.9


def test_a_start_interval_sees_an_app_as_soon_as_it_listens(demo_app: StartApp) -> None:
    # The app listens a moment (~0.3 s) after it starts. Probed every 2 s, its passes are at 2 s
    # and 4 s; probed every 50 ms until the first pass, at ~0.3 s and ~2.3 s.
    slow_check = fast(interval=2.0, healthy_threshold=2)
    quick_check = fast(interval=2.0, healthy_threshold=2, start_interval=0.05)
    assert "start interval 0.05s" in quick_check.describe()
    assert HealthCheck.from_dict(quick_check.to_dict()) == quick_check
    reports = {}
    for name, check in (("interval", slow_check), ("start_interval", quick_check)):
        app = demo_app("slow", port=free_port(), wait=False, START_DELAY_S="0.2")
        reports[name] = asyncio.run(
            wait_healthy(app.address, check, deadline=20, log=lambda _: None)
        )
    slow, quick = reports["interval"], reports["start_interval"]
    assert slow.healthy and quick.healthy
    assert slow.elapsed_s >= 3.95 and slow.probes >= 3  # refused at 0, passed at 2 and 4
    assert quick.probes >= 4  # refused a few times, 50 ms apart
    assert 2.0 <= quick.elapsed_s < slow.elapsed_s - 0.4, (quick, slow)


def test_a_start_interval_counts_failures_no_faster_than_the_interval() -> None:
    # Nothing listens: probed every 50 ms, but the 3 failures that fail it are 0.5 s apart.
    check = fast(interval=0.5, unhealthy_threshold=3, start_interval=0.05)
    started = time.monotonic()
    with pytest.raises(Unhealthy, match="failed 3 times in a row") as caught:
        asyncio.run(
            wait_healthy(f"127.0.0.1:{free_port()}", check, deadline=10, log=lambda _: None)
        )
    assert 0.95 <= time.monotonic() - started < 3
    assert caught.value.report.probes >= 10


def test_the_deadline_ends_a_wait_that_cannot_pass_in_time(demo_app: StartApp) -> None:
    app = demo_app("blue")
    check = fast(interval=0.1, healthy_threshold=50)
    with pytest.raises(Unhealthy, match=r"was not healthy within 1s") as caught:
        asyncio.run(wait_healthy(app.address, check, deadline=1, log=lambda _: None))
    assert caught.value.reason == "deadline"
    assert 0.8 <= caught.value.report.elapsed_s <= 1.5
    with pytest.raises(HealthCheckInvalid, match="deadline"):
        asyncio.run(wait_healthy(app.address, check, deadline=0, log=lambda _: None))


def test_a_runtime_fault_makes_a_healthy_app_fail(demo_app: StartApp) -> None:
    import httpx

    app = demo_app("blue")
    assert probe(app.address, fast()).ok
    httpx.post(f"{app.url}/admin/fault", json={"unhealthy": True}, trust_env=False)
    assert probe(app.address, fast()).detail == "got 503"


# -- several instances ---------------------------------------------------------------------------


def test_all_healthy_reports_each_address_in_order(demo_app: StartApp) -> None:
    apps = [demo_app("blue"), demo_app("green")]
    addresses = [app.address for app in apps]
    reports = asyncio.run(wait_all_healthy(addresses, fast(), deadline=10, log=lambda _: None))
    assert [r.address for r in reports] == addresses
    assert all(r.healthy and r.probes == 2 for r in reports)
    # Concurrently: about one interval in all, not one per address.
    assert max(r.elapsed_s for r in reports) < 1.5


def test_the_first_failure_cancels_the_other_waits(demo_app: StartApp) -> None:
    good, bad = demo_app("blue"), demo_app("broken", FAIL_HEALTH="1")
    # The good one would need 100 passes (10 s); the bad one fails after two probes.
    check = fast(interval=0.1, healthy_threshold=100, unhealthy_threshold=2)
    started = time.monotonic()
    with pytest.raises(Unhealthy) as caught:
        asyncio.run(
            wait_all_healthy([good.address, bad.address], check, deadline=20, log=lambda _: None)
        )
    assert caught.value.address == bad.address
    assert time.monotonic() - started < 3
    # A probe sent just before the cancellation may reach the app's log a moment later (a loaded
    # machine); after that, at one probe per 0.1 s, a wait still running would add about 5.
    time.sleep(0.3)
    probes_then = health_requests(good)
    time.sleep(0.5)
    assert health_requests(good) == probes_then  # nobody probes the good one any more


def test_a_probe_cancelled_as_its_answer_arrives_is_still_cancelled() -> None:
    # What made a wait go on after its neighbour failed: the answer and the cancellation came
    # in the same loop iteration, and asyncio.wait_for (3.11) returned the answer instead.
    from docker_delivery.health import _within

    async def main() -> None:
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiting = asyncio.ensure_future(_within(answer, 5))
        await asyncio.sleep(0)  # the probe now waits for its answer
        answer.set_result(200)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())


def test_the_sync_wrapper_runs_from_a_plain_thread_and_inside_a_loop(demo_app: StartApp) -> None:
    app = demo_app("blue")
    results: list[list[HealthReport]] = []
    thread = threading.Thread(
        target=lambda: results.append(
            wait_all_healthy_sync([app.address], fast(), deadline=10, log=lambda _: None)
        )
    )
    thread.start()
    thread.join(15)
    assert results and results[0][0].healthy

    async def from_async_code() -> list[HealthReport]:
        return wait_all_healthy_sync(app.address, fast(), deadline=10, log=lambda _: None)

    assert asyncio.run(from_async_code())[0].healthy
    with pytest.raises(Unhealthy):
        wait_all_healthy_sync(
            [f"127.0.0.1:{free_port()}"],
            fast(unhealthy_threshold=1),
            deadline=5,
            log=lambda _: None,
        )


def test_an_instance_without_an_address_is_reported_by_its_exit() -> None:
    """A container that exited before it got an address was probed as ':8080' and reported as
    a spec error ("address ':8080' has no host"); the gate reports its exit first."""
    from docker_delivery.strategies.base import DeployAborted, health_gate
    from docker_delivery.targets.base import Instance

    gone = Instance("c1", "web-test-1-abc", "web", "test", "sha256:" + "a" * 64, 1, "", 8080, False)
    gate = health_gate(
        fast(),
        lambda i: f"{i.name} exited with code 3; its last output: boom",
        deadline=5,
        log=lambda _: None,
    )
    with pytest.raises(DeployAborted) as caught:
        gate([gone])
    assert str(caught.value) == "web-test-1-abc exited with code 3; its last output: boom"


def test_a_failed_wait_does_not_carry_the_event_loop_check_as_its_context() -> None:
    """Errors raised by wait_all_healthy_sync had "RuntimeError: no running event loop" at the
    top of their traceback (the check for a running loop, as their context)."""
    with pytest.raises(Unhealthy) as caught:
        wait_all_healthy_sync([f"127.0.0.1:{free_port()}"], fast(unhealthy_threshold=1), deadline=2)
    chain, error = [], caught.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    assert not [e for e in chain if isinstance(e, RuntimeError)], chain
