"""Benchmark: blue/green, A/B and rollbacks under load, on the test bed's engine and HAProxy.

Each part runs a service of 3 instances of the demo app (which exits at once on SIGTERM) behind
its own router, under one continuous load (RATE req/s from SHARDS processes; no slow requests so
that shares count per request; no cookies unless said), and prints the figures of its bar:

1. blue/green: deploy_idle + switch (+ post-switch check) + retire, back and forth (v1 -> v2 ->
   v1 ...), until >= 5,000 requests were sent during deployments: failed requests (bar: 0);
2. A/B rollout 5 -> 25 -> 50 -> 100 % then promotion, with cookie-less clients (the shares) and
   a cookie-keeping client (sticky): per-step share of B seen by the clients vs the weight (bar:
   within 5 points, >= 1,000 requests per step), failed requests (bar: 0), >= 5,000 requests;
3. fault injection: B with ERROR_RATE=0.2, steps 5 -> 50 -> 100, RUNS times: the step at which
   it is aborted (bar: the first), failed requests seen by the clients vs weight x fault rate x
   requests during the step, and after the abort (bar: 0);
4. switch-back rollback: v1 warm in blue, v2 live in green; roll_back, again and again (each one
   switches back to the other colour), until >= 5,000 requests were sent during rollbacks: time
   from the call until every new request is answered by the old release (bar: <= 1 s), failed
   requests (bar: 0);
5. redeploy rollback: nothing warm (retired); roll_back redeploys the previous digest (min
   in-service), again and again (it goes forward then back), until >= 5,000 requests: failed
   requests (bar: 0), duration.

With ``--swarm`` every part runs on the bed's Swarm (a Swarm service per colour and variant;
the redeploy of part 5 is a staged rollout) instead of containers of the engine. With
``--remote`` it runs on the bed's remote machine (its engine over TLS, through a
``docker_engine`` connection; the load goes to the router published there), and each rollback
of part 4 makes a new client, as a RollbackOperator's task does: nothing is kept warm.

Prints figures, asserts nothing; removes what it created. Needs the test bed (tests/bed/up).
Usage: ``.venv/bin/python scripts/bench_bluegreen_ab.py [--swarm | --remote] [part ...]``
(parts 1-5; default all).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import docker

from docker_delivery.health import HealthCheck
from docker_delivery.images.build import BuildSpec, ImageBuilder
from docker_delivery.images.registry import RegistryClient
from docker_delivery.routing.service import RouterSettings
from docker_delivery.strategies.ab import ABTest, ABTestAborted, StepEvent, ab_deploy
from docker_delivery.strategies.bluegreen import BlueGreen, deploy_idle, retire, switch_traffic
from docker_delivery.strategies.rollback import RollbackResult, roll_back
from docker_delivery.targets.base import Release

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from kit.cleanup import remove_service  # noqa: E402
from kit.deploy import LOOPBACK  # noqa: E402
from kit.loadgen import (  # noqa: E402
    ALLOWED_NETWORKS,
    LoadGenerator,
    LoadReport,
    RequestResult,
    allow_network,
    free_port,
)

RATE, SHARDS, TARGET, RUNS = 150, 2, 5000, 3
MIX = {"get": 0.6, "get_new_conn": 0.2, "post": 0.2}
CHECK = HealthCheck(
    interval=0.25, healthy_threshold=2, unhealthy_threshold=3, timeout=1.0, start_period=10
)
APP_ENV = {"EXIT_ON_SIGTERM_IMMEDIATELY": "1"}
REMOTE_PEMS = {"tls_ca": "ca.pem", "tls_cert": "cert.pem", "tls_key": "key.pem"}
QUIET: Callable[[str], None] = lambda _: None  # noqa: E731


def bed_values() -> dict[str, str]:
    root = os.environ.get("DOCKER_DELIVERY_BED_DIR") or (
        "/var/lib/docker-delivery-bed"
        if os.geteuid() == 0
        else str(Path.home() / ".local/state/docker-delivery-bed")
    )
    env_file = Path(root) / "bed.env"
    if not env_file.exists():
        sys.exit(f"the test bed is not up ({env_file} is missing): run tests/bed/up")
    lines = env_file.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def remote_engine(bed: Mapping[str, str]) -> Callable[[], docker.DockerClient]:
    """New clients of the bed's remote engine, each from a ``docker_engine`` connection holding
    the bed's CA and client PEM texts, as operators make them."""
    import json

    from docker_delivery.hooks.engine import engine_client

    tls = Path(bed["DOCKER_DELIVERY_BED_REMOTE_TLS"])
    extra = {k: (tls / f).read_text() for k, f in REMOTE_PEMS.items()}
    conn = {"conn_type": "docker_engine", "host": bed["DOCKER_DELIVERY_BED_REMOTE_URL"]}
    os.environ["AIRFLOW_CONN_DD_BENCH_REMOTE"] = json.dumps({**conn, "extra": extra})
    allow_network(bed["DOCKER_DELIVERY_BED_REMOTE_NET"])
    return lambda: engine_client(engine_conn_id="dd_bench_remote")


def build_images(client: docker.DockerClient, bed: Mapping[str, str]) -> dict[str, str]:
    """The demo app as v1 and v2 (as tests/conftest.py demo_images builds them)."""
    app, source = ROOT / "dags" / "demo_app", hashlib.sha1()
    for path in sorted(p for p in app.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        source.update(path.read_bytes())
    registry, refs = bed["DOCKER_DELIVERY_BED_REGISTRY"], {}
    with RegistryClient(registry) as reg:
        for name in ("v1", "v2"):
            spec = BuildSpec(
                repository=f"{registry}/dd-test/demo-app",
                revision=source.hexdigest()[:32] + name,
                context=str(app),
                build_args={"BASE_IMAGE": bed["DOCKER_DELIVERY_BED_PYTHON_IMAGE"], "RELEASE": name},
            )
            refs[name] = str(ImageBuilder(client, reg, log=QUIET).build(spec).ref)
    return refs


# -- load from child processes (neither the deployment's threads nor other shards hold the GIL)


def load_worker(
    conn: Connection, url: str, rate: float, cookies: bool, allowed: tuple[str, ...]
) -> None:
    with contextlib.suppress(OSError):  # ahead of other work on a busy machine (needs root)
        os.nice(-10)
    for network in allowed:  # the parent's (a spawned child starts without them)
        allow_network(network)
    t0 = time.monotonic()
    load = LoadGenerator(
        url,
        rate=rate,
        mix=MIX,
        cookies=cookies,
        max_in_flight=200,
        max_duration=900,
        phase="warm-up",
    ).start()
    conn.send(t0)
    while (msg := conn.recv())[0] == "mark":
        load.mark(msg[1])
    conn.send(load.stop())


class Load:
    """One continuous load run over ``shards`` processes, on one clock (seconds since start)."""

    def __init__(
        self, url: str, *, rate: float = RATE, shards: int = SHARDS, cookies: bool = False
    ):
        ctx = multiprocessing.get_context("spawn")
        pipes = [ctx.Pipe() for _ in range(shards)]
        self.conns = [parent for parent, _ in pipes]
        self.procs = [
            ctx.Process(
                target=load_worker,
                args=(child, url, rate / shards, cookies, tuple(map(str, ALLOWED_NETWORKS))),
                daemon=True,
            )
            for _, child in pipes
        ]
        self.rate = rate

    def __enter__(self) -> Load:
        for proc in self.procs:
            proc.start()
        self.starts = [conn.recv() for conn in self.conns]
        self.t0 = min(self.starts)
        self.loadavg = os.getloadavg()[0]
        time.sleep(1.0)
        return self

    def __exit__(self, *exc: object) -> None:
        if not hasattr(self, "report"):
            self.stop()

    def now(self) -> float:
        return time.monotonic() - float(self.t0)

    def mark(self, label: str) -> None:
        for conn in self.conns:
            conn.send(("mark", label))

    def stop(self) -> LoadReport:
        self.mark("after")
        time.sleep(1.5)
        for conn in self.conns:
            conn.send(("stop", ""))
        parts = [conn.recv() for conn in self.conns]
        for proc in self.procs:
            proc.join(10)
        results = [
            dataclasses.replace(r, start=r.start + t - self.t0)
            for part, t in zip(parts, self.starts, strict=True)
            for r in part.results
        ]
        self.report = LoadReport.build(
            sorted(results, key=lambda r: r.start),
            phases=list(parts[0].by_phase),
            duration_s=max(p.duration_s for p in parts),
            target_rate=self.rate,
            stopped_by=parts[0].stopped_by,
        )
        self.loadavg_end = os.getloadavg()[0]
        return self.report


def in_phases(report: LoadReport, prefix: str) -> dict[str, int]:
    total = failed = 0
    for label, counts in report.by_phase.items():
        if label.startswith(prefix):
            total += counts["total"]
            failed += counts["failed"]
    return {"total": total, "failed": failed}


def failures(report: LoadReport, prefix: str) -> str:
    found: dict[str, int] = {}
    for r in report.results:
        if r.failed and r.phase.startswith(prefix):
            found[r.error or "?"] = found.get(r.error or "?", 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in found.items()) or "none"


# -- a service of its own per part --------------------------------------------------------------


class Bench:
    def __init__(
        self,
        client: docker.DockerClient,
        bed: Mapping[str, str],
        images: dict[str, str],
        target: str = "engine",
        remote: Callable[[], docker.DockerClient] | None = None,
    ):
        self.client = client
        self.images = images
        self.remote = remote  # makes a new client of the remote engine
        self.service = f"bn{uuid.uuid4().hex[:6]}"
        self.router = RouterSettings(
            port=free_port(),
            image=bed["DOCKER_DELIVERY_BED_HAPROXY_IMAGE"],
            slots=8,
            check_interval_ms=500,
            address="0.0.0.0" if remote else LOOPBACK,
        )
        self.host = bed["DOCKER_DELIVERY_BED_REMOTE_HOST"] if remote else LOOPBACK
        self.rollback_kw: dict[str, Any] = dict(
            router=self.router, check=CHECK, owner="bench", log=QUIET
        )
        self.kw: dict[str, Any] = dict(
            router=self.router, check=CHECK, owner="bench", target=target, log=QUIET
        )

    def release(self, name: str, **env: str) -> Release:
        return Release.of(
            self.service, "bench", self.images[name], env={**APP_ENV, **env}, stop_grace=10
        )

    def blue_green(self, name: str, settings: BlueGreen, *, retire_after: bool = True) -> None:
        deploy_idle(self.client, self.release(name), settings, **self.kw)
        switch_traffic(self.client, self.release(name), settings, **self.kw)
        if retire_after:
            retire(self.client, self.service, "bench", settings, **self.kw)

    def roll_back(self) -> RollbackResult:
        """A rollback as a RollbackOperator's task runs it: on the remote engine, from a new
        client (nothing kept warm); on the local one, with the bench's client."""
        if self.remote is None:
            return roll_back(self.client, self.service, "bench", **self.rollback_kw)
        with contextlib.closing(self.remote()) as client:
            return roll_back(client, self.service, "bench", **self.rollback_kw)

    def cleanup(self) -> None:
        remove_service(self.client, self.service, "bench")


def header(title: str) -> None:
    print(f"\n== {title}", flush=True)


def context(load: Load) -> str:
    return f"load average {load.loadavg:.1f} at start, {load.loadavg_end:.1f} at end"


# -- the parts -------------------------------------------------------------------------------------


def part_blue_green(b: Bench) -> None:
    header("1. blue/green switch under load (deploy_idle + switch + check + retire)")
    settings = BlueGreen(replicas=3, scale_down_delay=0, post_switch_check=2)
    b.blue_green("v1", settings)
    times: list[float] = []
    with Load(b.router.url(b.host)) as load:
        name, n = "v2", 0
        while True:
            n += 1
            load.mark(f"deploy {n}")
            t = time.monotonic()
            b.blue_green(name, settings)
            times.append(time.monotonic() - t)
            name = "v1" if name == "v2" else "v2"
            if (load.now() - 1.0) * RATE >= TARGET:
                break
        report = load.stop()
    during = in_phases(report, "deploy")
    print(f"  {n} blue/green deployments, {statistics.median(times):.1f}s each (median)")
    print(
        f"  requests during deployments: {during['total']}, failed: {during['failed']} "
        f"({failures(report, 'deploy')}); whole run: {report.summary()}"
    )
    print(f"  ({context(load)})")


def part_ab(b: Bench) -> None:
    header("2. A/B rollout 5 -> 25 -> 50 -> 100 %, then promotion")
    b.blue_green("v1", BlueGreen(replicas=3, scale_down_delay=0, post_switch_check=0))
    settings = ABTest(steps=(5, 25, 50, 100), bake_time=8, poll=0.5)
    with (
        Load(b.router.url(b.host)) as load,
        Load(b.router.url(b.host), rate=20, shards=1, cookies=True) as sticky,
    ):

        def on_step(step: StepEvent) -> None:
            label = f"{step.event} {step.weight}"
            load.mark(label)
            sticky.mark(label)

        result = ab_deploy(b.client, b.release("v2"), settings, on_step=on_step, **b.kw)
        load.mark("promoted")
        sticky.mark("promoted")
        time.sleep(2.0)
        report, sticky_report = load.stop(), sticky.stop()
    print(
        f"  {'step':>5} {'requests':>9} {'B share':>8} {'off by':>7} {'failed':>7}   router: B "
        "requests / 5xx / rtime"
    )
    for figures in result.figures:
        w = figures["weight"]
        phase = report.by_phase.get(f"start {w}", {"total": 0, "failed": 0})
        share = 100 * report.share("v2", f"start {w}")
        print(
            f"  {w:>4}% {phase['total']:>9} {share:>7.1f}% {share - w:>+6.1f} "
            f"{phase['failed']:>7}   {figures['b_requests']} / {figures['b_5xx']} / "
            f"{figures['b_rtime_ms']} ms"
        )
    after = report.by_phase.get("promoted", {})
    print(
        f"  after promotion: {after.get('total', 0)} requests, "
        f"{after.get('v2', 0)} on v2, {after.get('failed', 0)} failed; "
        f"promoted={result.promoted}"
    )
    print(f"  cookie-less clients: {report.summary()}")
    print(f"  sticky client:       {sticky_report.summary()}")
    print(f"  ({context(load)}; A/B took {result.duration_s:.1f}s)")


def part_fault(b: Bench) -> None:
    header(f"3. fault injection: B with ERROR_RATE=0.2, steps 5 -> 50 -> 100, {RUNS} runs")
    b.blue_green("v1", BlueGreen(replicas=3, scale_down_delay=0, post_switch_check=0))
    settings = ABTest(steps=(5, 50, 100), bake_time=20, poll=0.5)
    with Load(b.router.url(b.host)) as load:
        rows = []
        for run in range(1, RUNS + 1):
            aborted: dict[str, Any] = {}

            def on_step(step: StepEvent, run: int = run) -> None:
                load.mark(f"run {run} {step.event} {step.weight}")

            try:
                ab_deploy(
                    b.client, b.release("v2", ERROR_RATE="0.2"), settings, on_step=on_step, **b.kw
                )
            except ABTestAborted as exc:
                aborted = exc.figures
            rows.append((run, aborted))
            time.sleep(1.0)
        report = load.stop()
    print(
        f"  {'run':>3} {'aborted at':>10} {'requests in step':>16} {'failed':>7} "
        f"{'expected':>9} {'after abort':>12}   router: B requests / 5xx / "
        "decided after"
    )
    total_failed = total_expected = 0.0
    for run, figures in rows:
        if not figures:
            print(f"  {run:>3} NOT ABORTED")
            continue
        w = figures["weight"]
        in_step = [r for r in report.results if r.phase == f"run {run} start {w}"]
        errors = sum(1 for r in in_step if r.error == "status 500")
        other = sum(1 for r in in_step if r.failed) - errors
        step = {"total": len(in_step), "failed": errors}
        after = report.by_phase.get(f"run {run} end {w}", {"total": 0, "failed": 0})
        expected = w / 100 * 0.2 * step["total"]
        total_failed += step["failed"]
        total_expected += expected
        if other:
            print(f"      (run {run}: {other} other failure(s) in the step, not counted)")
        print(
            f"  {run:>3} step {figures['step']} ({w}%) {step['total']:>16} {step['failed']:>7} "
            f"{expected:>9.1f} {after['failed']:>5} of {after['total']:<5}  "
            f"{figures['b_requests']} / {figures['b_5xx']} / {figures['seconds']}s"
        )
    print(
        f"  total: {total_failed:.0f} answered 500 at the clients vs {total_expected:.1f} "
        "expected (weight x fault rate x requests in the step until the abort)"
    )
    print(f"  whole run: {report.summary()}")
    print(f"  ({context(load)})")


def switch_time(results: list[RequestResult], called_at: float, old: str, new: str) -> float:
    after = [r for r in results if r.start >= called_at and r.release is not None]
    last_new = max((r.start for r in after if r.release == new), default=called_at)
    first_old = min(r.start for r in after if r.release == old and r.start >= last_new)
    return float(first_old - called_at)


def part_switch_back(b: Bench) -> None:
    header("4. switch-back rollback (blue/green, old colour warm)")
    b.blue_green("v1", BlueGreen(replicas=3, post_switch_check=0))
    b.blue_green("v2", BlueGreen(replicas=3, post_switch_check=0), retire_after=False)
    calls: list[tuple[float, str, str, float]] = []  # (called at, old, new, switch_s)
    with Load(b.router.url(b.host)) as load:
        live, n = "v2", 0
        while True:
            n += 1
            time.sleep(1.0)
            load.mark(f"rollback {n}")
            called = load.now()
            result = b.roll_back()
            old = "v1" if live == "v2" else "v2"
            calls.append((called, old, live, result.switch_s or float("nan")))
            live = old
            if (load.now() - 1.0) * RATE >= TARGET:
                break
        time.sleep(1.0)
        report = load.stop()
    seen = []
    for i, (called, old, new, switch_s) in enumerate(calls):
        until = calls[i + 1][0] if i + 1 < len(calls) else float("inf")
        window = [r for r in report.results if r.start < until]
        seen.append((switch_time(window, called, old, new), switch_s))
    client_times = [s for s, _ in seen]
    print(f"  {len(calls)} rollbacks (each a switch back to the other colour)")
    print(
        f"  call -> every new request on the old release, seen by the clients: median "
        f"{statistics.median(client_times):.3f}s, max {max(client_times):.3f}s "
        f"(<= 1 s: {sum(t <= 1 for t in client_times)}/{len(client_times)})"
    )
    print(
        f"  call -> route switched (roll_back's own figure): median "
        f"{statistics.median(s for _, s in seen):.3f}s, "
        f"max {max(s for _, s in seen):.3f}s"
    )
    during = in_phases(report, "rollback")
    print(
        f"  requests during rollbacks: {during['total']}, failed: {during['failed']} "
        f"({failures(report, 'rollback')})"
    )
    print(f"  ({context(load)})")


def part_redeploy(b: Bench) -> None:
    header("5. redeploy rollback (nothing warm: previous digest, in batches)")
    b.blue_green("v1", BlueGreen(replicas=3, scale_down_delay=0, post_switch_check=0))
    b.blue_green("v2", BlueGreen(replicas=3, scale_down_delay=0, post_switch_check=0))
    durations = []
    with Load(b.router.url(b.host)) as load:
        n = 0
        while True:
            n += 1
            load.mark(f"rollback {n}")
            result = b.roll_back()
            durations.append((result.kind, result.duration_s))
            if (load.now() - 1.0) * RATE >= TARGET:
                break
        report = load.stop()
    kinds = {k for k, _ in durations}
    print(
        f"  {n} rollbacks (kinds: {', '.join(sorted(kinds))}), "
        f"{statistics.median(d for _, d in durations):.1f}s each (median)"
    )
    during = in_phases(report, "rollback")
    print(
        f"  requests during rollbacks: {during['total']}, failed: {during['failed']} "
        f"({failures(report, 'rollback')}); releases: {report.by_release}"
    )
    print(f"  ({context(load)})")


PARTS: dict[str, Callable[[Bench], None]] = {
    "1": part_blue_green,
    "2": part_ab,
    "3": part_fault,
    "4": part_switch_back,
    "5": part_redeploy,
}


def main() -> None:
    args = sys.argv[1:]
    target = "swarm" if "--swarm" in args else "engine"
    wanted = [a for a in args if a not in ("--swarm", "--remote")] or list(PARTS)
    client = docker.from_env()
    bed = bed_values()
    images = build_images(client, bed)
    remote = remote_engine(bed) if "--remote" in args else None
    print(
        f"target {target}{' on the remote engine' if remote else ''}; "
        f"rate {RATE} req/s from {SHARDS} processes, mix {MIX}; "
        "3 instances per colour; "
        f"load average {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs"
    )
    for key in wanted:
        bench = Bench(remote() if remote else client, bed, images, target, remote)
        try:
            PARTS[key](bench)
        finally:
            bench.cleanup()


if __name__ == "__main__":
    main()
