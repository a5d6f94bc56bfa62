"""Benchmark: deployments under load of an app that exits at once on SIGTERM.

1. Minimum in-service (4 replicas, min_in_service=2, engine) and staged rolling (4 replicas,
   stages 1, 50%, 100%, Swarm) through the service's router: deploys v1 -> v2 -> v1 ... under one
   load run per strategy (200 req/s, default mix, 1 s slow requests), each deploy a phase, until
   >= 5,000 requests were sent during deploys.
2. Baseline: ``docker service update --image`` (Swarm's defaults) of a 4-replica dnsrr service,
   through an HAProxy with our router's global/defaults/check that finds the tasks in Docker's
   DNS (``resolvers docker``, ``server-template s 1-8 tasks.<service>``), on an attachable overlay:
   Docker's DNS does not answer ``tasks.<service>`` on a swarm-scoped bridge network.
3. Wall time per deploy vs the least the health check allows: per batch (stage), start-up time
   (median of 3, EngineTarget.start / SwarmTarget.scale until /health answers) +
   healthy_threshold x interval; ratios with and without the time spent draining. Start-up is
   measured at rest and under the same load, just before the deploys (the table's least uses
   the latter: the deploys start their containers under that load). For min in-service also
   against the start-up of its batches (two containers started side by side). With the 1 s
   requests, also against the least plus, per stage, the drain no deployment that drops no
   request can skip (the longest request in flight, 1 s). "drain" is, per stage, the time from
   its first drain to its last slot drained, summed.

The load runs in SHARDS processes (tests/loadgen.py's LoadGenerator, RATE/SHARDS each, merged):
one generator next to the deploy falls behind on a busy machine and, with hundreds of
connections in httpcore's pool, never catches up. The router's own counters tell its errors from
the generator's. Prints figures, asserts nothing; removes what it made (io.docker-delivery.service
label). Needs the test bed (tests/bed/up). Usage: ``.venv/bin/python scripts/bench_deploy.py
[--short-requests]`` (the load without its 1 s requests: no drain to wait for).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx

from docker_delivery.errors import DeliveryError
from docker_delivery.health import HealthCheck
from docker_delivery.images.build import BuildSpec, ImageBuilder
from docker_delivery.images.registry import RegistryClient
from docker_delivery.routing.haproxy import HaproxyRouter, RouterContainer, parse_stat_csv
from docker_delivery.routing.haproxy.config import CONTAINER_LOOPBACK, DEFAULT_ADMIN_PORT
from docker_delivery.routing.service import RouterSettings, render_service_config, router_name
from docker_delivery.strategies.base import in_parallel
from docker_delivery.strategies.deploy import deploy
from docker_delivery.strategies.min_in_service import MinimumInService
from docker_delivery.strategies.rolling import Rolling
from docker_delivery.targets import EngineTarget, Release, SwarmTarget
from docker_delivery.targets.relay import RuntimeRelay

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from kit.deploy import LOOPBACK  # noqa: E402
from kit.loadgen import LoadGenerator, LoadReport, free_port  # noqa: E402

RATE, SHARDS, TARGET, IDLE_S, MAX_LOAD_S, MAX_DEPLOYS, MAX_NATIVE = 200, 4, 5000, 2.0, 420, 10, 4
# start_interval: probed every 50 ms until the first pass (as Docker's --start-interval); the
# passes after it, and the failures counted, are still 0.25 s apart.
# --short-requests: no slow requests in the load, so nothing is in flight long enough to drain.
SHORT = "--short-requests" in sys.argv[1:]
SLOW_S = 1.0  # LoadGenerator's slow requests (slow_ms=1000)
SHORT_MIX = {"get": 0.6, "get_new_conn": 0.2, "post": 0.2}
CHECK = HealthCheck(
    interval=0.25, healthy_threshold=2, unhealthy_threshold=3, timeout=1.0, start_interval=0.05
)
ROUTER_CHECK_MS, LABEL = 500, "io.docker-delivery.service"
APP_ENV = {"EXIT_ON_SIGTERM_IMMEDIATELY": "1"}
DRAINED = re.compile(r"drained in ([0-9.]+)s")
STEP = re.compile(r"(batch|stage) (\d+/\d+|end)")
RESOLVERS = (  # as usual for HAProxy with Docker's DNS: answers held 1 s
    "resolvers docker\n    nameserver dns 127.0.0.11:53\n    resolve_retries 3\n"
    "    timeout resolve 1s\n    timeout retry 1s\n    hold valid 1s\n    hold other 1s\n"
    "    hold refused 1s\n    hold nx 1s\n    hold timeout 1s\n    hold obsolete 1s\n"
    "    accepted_payload_size 8192\n"
)
COLUMNS = ("deploys", "requests", "failed", "unsent", "5xx", "idle", "wall", "drain", "least")
HEADER = f"{'strategy':<22}" + "".join(f"{c:>9}" for c in (*COLUMNS, "ratio", "-drain"))
quiet: Callable[[str], None] = lambda _: None  # noqa: E731


def build_images(client: docker.DockerClient) -> tuple[dict[str, str], str]:
    """The demo app as v1 and v2 (as tests/conftest.py demo_images), and the HAProxy image."""
    home = Path(os.environ.get("DOCKER_DELIVERY_BED_DIR", "/var/lib/docker-delivery-bed"))
    if not (home / "bed.env").exists():
        sys.exit(f"the test bed is not up ({home / 'bed.env'} is missing): run tests/bed/up")
    bed = dict(line.split("=", 1) for line in (home / "bed.env").read_text().split() if "=" in line)
    app, source = ROOT / "dags" / "demo_app", hashlib.sha1()
    for path in sorted(p for p in app.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        source.update(path.read_bytes())
    registry, refs = bed["DOCKER_DELIVERY_BED_REGISTRY"], {}
    with RegistryClient(registry) as reg:
        for name in ("v1", "v2"):
            args = {"BASE_IMAGE": bed["DOCKER_DELIVERY_BED_PYTHON_IMAGE"], "RELEASE": name}
            revision, repository = source.hexdigest()[:32] + name, f"{registry}/dd-test/demo-app"
            spec = BuildSpec(repository, revision, str(app), build_args=args)
            refs[name] = str(ImageBuilder(client, reg, log=quiet).build(spec).ref)
    return refs, bed["DOCKER_DELIVERY_BED_HAPROXY_IMAGE"]


def answers_after(ip: str, start: float) -> float:
    """Seconds from ``start`` until the app on ``ip`` answers /health (polled, <= 60 s)."""
    while time.monotonic() - start < 60:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://{ip}:8080/health", timeout=0.5).is_success:
                return time.monotonic() - start
        time.sleep(0.01)
    raise TimeoutError(f"{ip}:8080 did not answer within 60s")


def engine_startup(client: docker.DockerClient, bench: str, image: str) -> tuple[float, float]:
    """Median of 3 start-ups of a container (docker run) and of two containers started side by
    side as a min-in-service batch of 2 is (until both answer /health)."""
    release = Release.of(bench, "probe", image, env=APP_ENV, stop_grace=1)
    engine = EngineTarget(client, log=quiet)
    one: list[float] = []
    pair: list[float] = []
    for _ in range(3):
        t = time.monotonic()
        instance = engine.start(release, 1)
        one.append(answers_after(instance.ip, t))
        engine.remove(instance)
    for _ in range(3):
        t = time.monotonic()
        both = in_parallel(lambda slot: engine.start(release, slot), [1, 2])
        pair.append(max(answers_after(i.ip, t) for i in both))
        for instance in both:
            engine.remove(instance)
    return statistics.median(one), statistics.median(pair)


def swarm_startup(client: docker.DockerClient, bench: str, image: str) -> float:
    """Median of 3 start-ups of a Swarm task (scale 0 -> 1, until it answers /health)."""
    release = Release.of(bench, "probe", image, env=APP_ENV, stop_grace=1)
    swarm, took = SwarmTarget(client, log=quiet), []
    name = swarm.create(release, 0).name
    for _ in range(3):
        t = time.monotonic()
        swarm.scale(name, 1)
        took.append(answers_after(swarm.wait_tasks(name, 1, timeout=60)[0].ip, t))
        swarm.scale(name, 0)
        while swarm.tasks(name) and time.monotonic() - t < 90:
            time.sleep(0.1)
    swarm.remove(name)
    return statistics.median(took)


def load_worker(conn: Connection, url: str, mix: dict[str, float] | None) -> None:
    """One shard of the load, in a process of its own (its own GIL, a small connection pool)."""
    with contextlib.suppress(PermissionError):  # measure, even while other work runs here
        os.nice(-10)
    t0, rate, most = time.monotonic(), RATE / SHARDS, 400 // SHARDS
    load = LoadGenerator(
        url, rate=rate, max_in_flight=most, max_duration=MAX_LOAD_S, **({"mix": mix} if mix else {})
    ).start()
    conn.send(t0)
    while (msg := conn.recv())[0] == "mark":
        load.mark(msg[1])
    conn.send(load.stop())


def drain_time(lines: list[tuple[float, str]]) -> float:
    """Seconds a deploy waited for requests in flight: per batch (stage), from its first drain
    to its last slot drained (slots drain side by side in a batch, one after another in a
    stage), summed."""
    total, began, ended = 0.0, None, None
    for t, text in [*lines, (0.0, "batch end")]:
        if STEP.match(text):
            total += ended - began if began is not None and ended is not None else 0.0
            began = ended = None
        elif "-> drain" in text:
            began = t if began is None else began
        elif DRAINED.search(text):
            ended = t
    return total


class Run:
    """One continuous load run; deploy log lines are kept on the load's clock (seconds)."""

    def __init__(self, url: str, logfile: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        pipes = [ctx.Pipe() for _ in range(SHARDS)]
        self.conns = [parent for parent, _ in pipes]
        mix = SHORT_MIX if SHORT else None
        self.procs = [
            ctx.Process(target=load_worker, args=(c, url, mix), daemon=True) for _, c in pipes
        ]
        self.lines: list[tuple[float, str]] = []
        self.t0, self.logfile, self.router_5xx = time.monotonic(), logfile, 0

    def log(self, text: str) -> None:
        self.lines.append((time.monotonic() - self.t0, text))
        with self.logfile.open("a") as f:
            f.write(f"{self.lines[-1][0]:8.3f} {text}\n")

    def mark(self, label: str) -> None:
        for conn in self.conns:
            conn.send(("mark", label))
        self.log(f"=== {label}")

    def start(self) -> None:
        for proc in self.procs:
            proc.start()
        self.starts = [conn.recv() for conn in self.conns]
        self.t0, self.loadavg = min(self.starts), os.getloadavg()[0]
        time.sleep(IDLE_S)

    def series(self, phase: str, most: int, step: Callable[[str], None]) -> list[dict[str, Any]]:
        """``step`` v2, v1, v2 ... each a phase, until TARGET requests were sent during them."""
        done: list[dict[str, Any]] = []
        while len(done) < most and sum(d["wall"] for d in done) * RATE < TARGET * 1.05:
            n, name, first = len(done) + 1, ("v2", "v1")[len(done) % 2], len(self.lines)
            self.mark(f"{phase} {n}")
            t = time.monotonic()
            try:
                step(name)
            except (DeliveryError, subprocess.SubprocessError) as exc:
                self.log(f"{phase} {n} FAILED: {exc}")
                print(f"  {phase} {n} failed: {exc}")
                break
            wall = time.monotonic() - t
            self.mark(f"idle {n}")
            drain = drain_time(self.lines[first:])
            done.append({"n": n, "release": name, "wall": wall, "drain": drain})
            time.sleep(IDLE_S)
        return done

    def finish(self, client: docker.DockerClient, router: str) -> LoadReport:
        self.mark("after")
        time.sleep(3)
        for conn in self.conns:
            conn.send(("stop", ""))
        parts = [conn.recv() for conn in self.conns]
        for proc in self.procs:
            proc.join(10)
        shifted = [
            (r, t - self.t0) for p, t in zip(parts, self.starts, strict=True) for r in p.results
        ]
        results = sorted(
            (dataclasses.replace(r, start=r.start + dt) for r, dt in shifted), key=lambda r: r.start
        )
        kw = dict(phases=list(parts[0].by_phase), duration_s=max(p.duration_s for p in parts))
        report = LoadReport.build(results, target_rate=RATE, stopped_by="stop()", **kw)
        # The router's own counters (frontend public, backend live); its log, for timelines.
        c = client.containers.get(router)
        Path(f"{self.logfile}.{router}.log").write_bytes(c.logs(timestamps=True))
        relay = RuntimeRelay(client, router, host=CONTAINER_LOOPBACK, port=DEFAULT_ADMIN_PORT)
        admin = HaproxyRouter.through(relay, log=quiet)
        rows = {r["pxname"]: r for r in parse_stat_csv(admin.command("show stat -1 3 -1"))}
        fe, be, dropped = rows["public"], rows["live"], admin.info().get("DroppedLogs")
        self.router_5xx = int(fe["hrsp_5xx"] or 0)
        failed = [r for r in report.results if r.failed]
        with self.logfile.open("a") as f:
            f.writelines(f"FAIL {r.start:8.3f} [{r.phase}] {r.kind} {r.error}\n" for r in failed)
        print(f"  load average {self.loadavg:.1f} -> {os.getloadavg()[0]:.1f}; {report.summary()}")
        print(
            f"  router {router}: {fe['req_tot']} requests, {self.router_5xx} 5xx, aborted by "
            f"server {be['srv_abrt']}, by client {be['cli_abrt']}; {dropped} log lines dropped"
        )
        for r in failed[:6]:
            t, line = ([(t, s) for t, s in self.lines if t <= r.start][-1:] or [(0.0, "-")])[0]
            print(f"  fail {r.start:.3f}s [{r.phase}] {r.kind}: {r.error} ({r.latency:.2f}s)")
            print(f"    last deploy log line before it, {t:.3f}s: {line[:90]}")
        if len(failed) > 6:
            print(f"  ... {len(failed) - 6} more: FAIL lines in {self.logfile}")
        return report


def run_ours(client, haproxy, bench, env, strategy, images, logfile, measure):  # type: ignore[no-untyped-def]
    """Deploys under one load run; ``measure`` (start-ups) runs under the same load first."""
    router = RouterSettings(
        free_port(), image=haproxy, slots=8, check_interval_ms=ROUTER_CHECK_MS, address=LOOPBACK
    )
    run = Run(router.url(LOOPBACK), logfile)

    def step(name: str) -> None:
        app_env = {"APP_RELEASE": name, **APP_ENV}
        release = Release.of(bench, env, images[name], env=app_env, stop_grace=10)
        deploy(client, release, strategy, router=router, check=CHECK, owner="bench", log=run.log)

    step("v1")
    run.start()
    loaded = measure()
    run.mark("measured")
    time.sleep(IDLE_S)
    done = run.series("deploy", MAX_DEPLOYS, step)
    return run, run.finish(client, router_name(bench, env)), done, loaded


def native_config(service: str) -> str:
    """Our router's global + defaults and health check; its 8 slots filled from Docker's DNS."""
    settings = RouterSettings(1, slots=8, check_interval_ms=ROUTER_CHECK_MS)
    ours = render_service_config(settings, 8080, "/health")
    head, live = ours.split("\nfrontend ")[0], ours.split("\nbackend live\n")[1].split("\n\n")[0]
    dns = f"tasks.{service}:8080 check resolvers docker init-addr none"
    live = live.replace("0.0.0.0:8080 disabled check", dns)
    frontend = "frontend public\n    bind :8080\n    default_backend live\n"
    return f"{head}\n{RESOLVERS}\n{frontend}\nbackend live\n{live}\n"


def run_native(client, haproxy, bench, images, logfile):  # type: ignore[no-untyped-def]
    labels = {LABEL: bench, "io.docker-delivery.environment": "native"}
    net, svc, port = f"dd-{bench}-native", f"{bench}-native", free_port()
    client.networks.create(net, driver="overlay", attachable=True, labels=labels)
    cli = ["docker", "service", "create", "--quiet", "--name", svc, "--replicas=4"]
    cli += [f"--network={net}", "--endpoint-mode=dnsrr", "--env=EXIT_ON_SIGTERM_IMMEDIATELY=1"]
    cli += [f"--{kind}label={k}={v}" for k, v in labels.items() for kind in ("", "container-")]
    subprocess.run([*cli, images["v1"]], check=True, capture_output=True, timeout=240)
    name, config, publish = router_name(bench, "native"), native_config(svc), {8080: port}
    kw: dict[str, Any] = dict(
        network=net, image=haproxy, publish=publish, bind=LOOPBACK, labels=labels
    )
    admin = RouterContainer.ensure(client, name=name, config=config, log=quiet, **kw).router
    run, tasks = Run(f"http://{LOOPBACK}:{port}/", logfile), f"com.docker.swarm.service.name={svc}"

    def settle() -> None:  # until the router sees the service's 4 current tasks up (<= 60 s)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            cs = client.containers.list(filters={"label": tasks}, ignore_removed=True)
            ips = {c.attrs["NetworkSettings"]["Networks"][net]["IPAddress"] for c in cs}
            if len(ips) == 4 and ips == {
                s.address for s in admin.servers("live") if s.operational == "up"
            }:
                return
            time.sleep(0.2)
        run.log("the router did not see the 4 new tasks up within 60s")

    def step(release: str) -> None:
        update = ["docker", "service", "update", "--quiet", "--image", images[release], svc]
        subprocess.run(update, check=True, capture_output=True, timeout=240)
        for task in sorted(client.services.get(svc).tasks(), key=lambda t: t["CreatedAt"]):
            image, status = task["Spec"]["ContainerSpec"]["Image"][-12:], task["Status"]
            run.log(f"task {task['Slot']} {image} {status['State']} at {status['Timestamp']}")
        settle()

    settle()
    run.start()
    done = run.series("update", MAX_NATIVE, step)
    return run, run.finish(client, name), done


def summarize(title, run, report, done, phase, least):  # type: ignore[no-untyped-def]
    """Prints one line per deploy; returns the table's row."""
    during = [report.by_phase.get(f"{phase} {d['n']}", {}) for d in done]
    for d, p in zip(done, during, strict=True):
        ratio = f" = {d['wall'] / least:.2f}x the least" if least else ""
        print(
            f"  #{d['n']} -> {d['release']}: {p.get('total', 0)} requests, "
            f"{p.get('failed', 0)} failed; wall {d['wall']:.2f}s{ratio}, drain {d['drain']:.2f}s"
        )
    total, failed = (sum(p.get(k, 0) for p in during) for k in ("total", "failed"))
    fails = [r for r in report.results if r.failed]
    unsent = sum(r.phase.startswith(phase) and r.error.startswith("not sent") for r in fails)
    idle = sum(not r.phase.startswith(phase) for r in fails)  # between deploys
    wall, drain = (statistics.mean([d[k] for d in done] or [0]) for k in ("wall", "drain"))
    after = {k: v for k, v in report.by_phase.get("after", {}).items() if k[0] == "v"}
    shares = " ".join(f"{k} {v / sum(after.values()):.0%}" for k, v in sorted(after.items()))
    ratios = f"{wall / least:>9.2f}{(wall - drain) / least:>9.2f}" if least else " " * 18
    return (
        f"{title:<22}{len(done):>9}{total:>9}{failed:>9}{unsent:>9}{run.router_5xx:>9}{idle:>9}"
        f"{wall:>9.2f}{drain:>9.2f}{least or 0:>9.2f}{ratios}  {shares}"
    )


def cleanup(client: docker.DockerClient, bench: str) -> None:
    flt = {"label": f"{LABEL}={bench}"}
    for svc in client.services.list(filters=flt):
        svc.remove()
    for f in (flt, {"name": f"dd-lock-{bench}-mis"}, {"name": f"dd-lock-{bench}-roll"}):
        for c in client.containers.list(all=True, filters=f, ignore_removed=True):
            c.remove(force=True)
    deadline = time.monotonic() + 60
    while (nets := client.networks.list(filters=flt)) and time.monotonic() < deadline:
        for net in nets:
            try:
                net.remove()
            except docker.errors.APIError:  # tasks still detaching from it
                time.sleep(0.5)
    left = client.networks.list(filters=flt)
    left += client.containers.list(all=True, filters=flt, ignore_removed=True)
    print(f"cleanup of {bench}: {f'LEFT {left}' if left else 'done'}")


def readings(title: str, done: list[dict[str, Any]], stages: int, startups: dict[str, float]):  # type: ignore[no-untyped-def]
    """The deploys' mean wall time against the least, for each reading of a stage's start-up:
    as the issue's formula has it, and with the drain no deployment that drops no request can
    skip (per stage, the longest request in flight: the load's slow requests, SLOW_S)."""
    hc = CHECK.healthy_threshold * CHECK.interval
    wall, drain = (statistics.mean([d[k] for d in done] or [0]) for k in ("wall", "drain"))
    floor = 0.0 if SHORT else SLOW_S
    for reading, startup in startups.items():
        least = stages * (startup + hc)
        text = (
            f"{title}, start-up {reading} ({startup:.2f}s): least {least:.2f}s, wall {wall:.2f}s "
            f"= {wall / least:.2f}x, without the drain ({drain:.2f}s) {(wall - drain) / least:.2f}x"
        )
        if floor:
            with_drain = stages * (floor + startup + hc)
            text += f"; least with {floor:g}s drains {with_drain:.2f}s: {wall / with_drain:.2f}x"
        print(text)


def main() -> None:
    client, bench, started = docker.from_env(), f"bench{uuid.uuid4().hex[:6]}", time.monotonic()
    logfile = Path(f"/tmp/bench_deploy-{bench}.log")
    print(f"bench service {bench}; deploy logs, failures, router logs: {logfile}*")
    try:
        images, haproxy = build_images(client)
        v1 = images["v1"]
        one, pair = engine_startup(client, bench, v1)
        swarm_s = swarm_startup(client, bench, v1)
        print(
            f"start-up at rest (median of 3): container {one:.2f}s, two containers side by side "
            f"{pair:.2f}s, Swarm task {swarm_s:.2f}s"
        )
        print(f"health check: {CHECK.describe()}; router check every {ROUTER_CHECK_MS} ms")
        mix = f"mix {SHORT_MIX} (no slow requests)" if SHORT else "default mix, 1 s slow requests"
        print(f"load: {RATE}/s, {mix}, in {SHARDS} processes")
        rows, lines = [], []
        for title, env, strategy, stages, at_rest, measure in (
            (
                "min-in-service 4/2",
                "mis",
                MinimumInService(4, 2),
                2,
                {"container": one, "two side by side": pair},
                lambda: engine_startup(client, bench, v1),
            ),
            (
                "rolling 1,50%,100%",
                "roll",
                Rolling(4, (1, "50%", "100%")),
                3,
                {"Swarm task": swarm_s},
                lambda: (swarm_startup(client, bench, v1),),
            ),
        ):
            print(f"{title}:")
            run, report, done, loaded = run_ours(
                client, haproxy, bench, env, strategy, images, logfile, measure
            )
            under_load = {f"{k} under load": v for k, v in zip(at_rest, loaded, strict=True)}
            least = stages * (
                next(iter(under_load.values())) + CHECK.healthy_threshold * CHECK.interval
            )
            rows.append(summarize(title, run, report, done, "deploy", least))
            lines.append(
                (
                    title,
                    done,
                    stages,
                    {**{f"{k} at rest": v for k, v in at_rest.items()}, **under_load},
                )
            )
        print("native docker service update:")
        run, report, done = run_native(client, haproxy, bench, images, logfile)
        rows.append(summarize("native service update", run, report, done, "update", None))
        print("\n" + "\n".join([f"{HEADER}  share after last", *rows]))
        print(
            "requests, failed: sent during deploys, of them failed (unsent: never sent, 400 in "
            "flight); 5xx: the router's count, whole run; idle: failures between deploys (the "
            "machine's doing, not a deploy's); wall, drain: s, mean per deploy; "
            "least = stages x (start-up under the load + healthy_threshold x interval); "
            "ratio = wall / least; -drain: (wall - drain) / least"
        )
        for line in lines:
            readings(*line)
    finally:
        cleanup(client, bench)
        print(f"run time {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
