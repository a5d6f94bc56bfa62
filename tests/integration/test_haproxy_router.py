"""HaproxyRouter and RouterContainer on the real bed: HAProxy 2.6 in a container, demo-app
instances on a swarm-scoped attachable bridge network, traffic through the published frontend."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from docker_delivery.routing import (
    BackendSpec,
    FrontendSpec,
    HaproxyRouter,
    RouterContainer,
    RouterError,
    render_config,
)
from docker_delivery.routing.haproxy import RouterHandle
from docker_delivery.routing.haproxy.config import CONTAINER_LOOPBACK
from docker_delivery.targets.labels import LABEL_CONFIG_HASH, LABEL_ROLE

pytestmark = pytest.mark.integration
LOOPBACK = "127.0.0.1"

ROOT = Path(__file__).resolve().parents[2]
DEMO_IMAGE = "dd-test/demo-app:haproxy-router"
RELEASES = ("a", "b", "c")

CONFIG = render_config(
    {
        "web": FrontendSpec(8080, "live"),
        "sticky-web": FrontendSpec(8081, "sticky", switchable=False),
    },
    {
        "live": BackendSpec(slots=4, check_interval_ms=1000),
        "green": BackendSpec(slots=2, check_interval_ms=1000),
        "sticky": BackendSpec(slots=2, cookie="DDSRV", cookie_key="test-key"),
    },
)


@dataclass
class Bed:
    uid: str
    network: str
    handle: RouterHandle
    apps: dict[str, str]  # release -> IP on the network
    log: list[str]

    @property
    def router(self) -> HaproxyRouter:
        return self.handle.router

    def url(self, port: int = 8080) -> str:
        return f"http://{LOOPBACK}:{self.handle.ports[port]}"


def _wait_healthy(ip: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://{ip}:8080/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"demo app at {ip} did not become healthy")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def rbed(bed, docker_client) -> Iterator[Bed]:  # type: ignore[no-untyped-def]
    docker_client.images.build(
        path=str(ROOT / "dags" / "demo_app"),
        tag=DEMO_IMAGE,
        buildargs={"BASE_IMAGE": bed.python_image},
        rm=True,
    )
    uid = uuid.uuid4().hex[:8]
    network = docker_client.networks.create(
        f"dd-test-{uid}", driver="bridge", scope="swarm", attachable=True
    )
    containers: list[Any] = []
    router_name = f"dd-test-router-{uid}"
    log: list[str] = []
    try:
        handle = RouterContainer.ensure(
            docker_client,
            name=router_name,
            network=network.name,
            image=bed.haproxy_image,
            config=CONFIG,
            publish={8080: 0, 8081: 0},
            bind=LOOPBACK,
            labels={"io.docker-delivery.test": uid},
            log=log.append,
        )
        apps = {}
        for release in RELEASES:
            container = docker_client.containers.run(
                DEMO_IMAGE,
                name=f"dd-test-app-{uid}-{release}",
                environment={"APP_RELEASE": release},
                network=network.name,
                detach=True,
            )
            containers.append(container)
            container.reload()
            apps[release] = container.attrs["NetworkSettings"]["Networks"][network.name][
                "IPAddress"
            ]
        for ip in apps.values():
            _wait_healthy(ip)
        yield Bed(uid=uid, network=network.name, handle=handle, apps=apps, log=log)
    finally:
        for container in containers:
            container.remove(force=True)
        RouterContainer.remove(docker_client, router_name, log=log.append)
        network.remove()


@pytest.fixture
def rb(rbed: Bed) -> Bed:
    """The module's bed with every slot released, weights 1 and the default route."""
    router = rbed.router
    for backend in ("live", "green", "sticky"):
        for server in router.servers(backend):
            if server.assigned or server.admin_state != "maint":
                router.release(backend, server.slot)
            if server.weight != 1:
                router.set_weight(backend, server.slot, 1)
    router.route("web", "live")
    rbed.log.clear()
    return rbed


def _releases(client: httpx.Client, url: str, n: int, path: str = "/version") -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        response = client.get(url + path)
        assert response.status_code == 200, response.text
        counts[response.headers["x-release"]] += 1
    return counts


def _releases_parallel(url: str, n: int, workers: int = 10) -> Counter[str]:
    """n requests from ``workers`` threads (the demo app answers a kept-alive connection in
    ~40 ms here: sequential requests would take most of the file's time budget)."""
    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(workers) as pool:
        parts = pool.map(lambda k: _releases(client, url, k), [n // workers] * workers)
        return sum(parts, Counter())


def test_requests_reach_each_assigned_instance(rb: Bed) -> None:
    router = rb.router
    before = router.stats("live")
    router.assign("live", 1, rb.apps["a"], 8080, state="ready")
    router.assign("live", 2, rb.apps["b"], 8080, state="ready")
    assert f"router: live/s1 -> {rb.apps['a']}:8080 ready" in rb.log

    with httpx.Client(timeout=5) as client:
        counts = _releases(client, rb.url(), 40)
    assert counts == {"a": 20, "b": 20}

    s1, s2, s3, _s4 = router.servers("live")
    assert (s1.address, s1.port, s1.admin_state, s1.operational) == (
        rb.apps["a"],
        8080,
        "ready",
        "up",
    )
    assert (s2.address, s2.admin_state) == (rb.apps["b"], "ready")
    assert (s3.assigned, s3.admin_state, s3.operational) == (False, "maint", "stopped")
    assert router.free_slots("live") == [3, 4]

    after = router.stats("live")
    assert after.requests - before.requests == 40
    assert after.hrsp_2xx - before.hrsp_2xx == 40
    assert after.server(1).hrsp_2xx - before.server(1).hrsp_2xx == 20
    assert after.server(2).requests - before.server(2).requests == 20


def test_weights_one_to_three(rb: Bed) -> None:
    router = rb.router
    router.assign("live", 1, rb.apps["a"], 8080, state="ready")
    router.assign("live", 2, rb.apps["b"], 8080, state="ready")
    router.set_weight("live", 2, 3)
    assert "router: live/s2 weight 1 -> 3" in rb.log
    assert router.server("live", 2).weight == 3

    counts = _releases_parallel(rb.url(), 400)
    assert sum(counts.values()) == 400
    share_b = counts["b"] / 400 * 100
    assert 67 <= share_b <= 83, counts


def test_drain_waits_for_the_request_in_flight(rb: Bed) -> None:
    router = rb.router
    router.assign("live", 1, rb.apps["a"], 8080, state="ready")
    router.assign("live", 2, rb.apps["b"], 8080)  # maint: the slow request can only go to a
    result: dict[str, Any] = {}

    def slow() -> None:
        response = httpx.get(rb.url() + "/slow?ms=1500", timeout=10)
        result.update(status=response.status_code, release=response.headers["x-release"])
        result["done"] = time.monotonic()

    slow_start = time.monotonic()
    worker = threading.Thread(target=slow)
    worker.start()
    deadline = time.monotonic() + 5
    while router.server("live", 1).current_sessions == 0:
        assert time.monotonic() < deadline, "the slow request never reached live/s1"
        time.sleep(0.02)

    router.set_state("live", 2, "ready")
    router.set_state("live", 1, "drain")
    assert router.server("live", 1).admin_state == "drain"
    drained_at_start = router.stats("live").server(1).sessions_total

    others: Counter[str] = Counter()
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                others.update(_releases(client, rb.url(), 1))

    background = threading.Thread(target=traffic)
    background.start()
    try:
        state = router.wait_drained("live", 1, timeout=10)
        returned = time.monotonic()
    finally:
        stop.set()
        background.join(10)
    worker.join(5)

    assert (state.current_sessions, state.queued) == (0, 0)
    assert returned - slow_start >= 1.4, "wait_drained returned before the slow request ended"
    assert result["status"] == 200 and result["release"] == "a"
    assert result["done"] - returned < 1.0
    assert others and set(others) == {"b"}, others  # nothing new reached the draining server
    assert router.stats("live").server(1).sessions_total == drained_at_start
    assert any(line.startswith("router: live/s1 drained in") for line in rb.log)


def test_wait_drained_times_out_naming_the_server(rb: Bed) -> None:
    router = rb.router
    router.assign("live", 1, rb.apps["a"], 8080, state="ready")
    worker = threading.Thread(target=lambda: httpx.get(rb.url() + "/slow?ms=1200", timeout=10))
    worker.start()
    deadline = time.monotonic() + 5
    while router.server("live", 1).current_sessions == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    router.set_state("live", 1, "drain")
    with pytest.raises(RouterError, match=r"live/s1 .* still has 1 session\(s\) .* after 0.3s"):
        router.wait_drained("live", 1, timeout=0.3)
    worker.join(5)


def test_route_switches_the_frontend_atomically(rb: Bed) -> None:
    router = rb.router
    router.assign("live", 1, rb.apps["a"], 8080, state="ready")
    router.assign("live", 2, rb.apps["b"], 8080, state="ready")
    router.assign("green", 1, rb.apps["c"], 8080, state="ready")
    with httpx.Client(timeout=5) as client:  # one kept-alive connection across the switch
        assert set(_releases(client, rb.url(), 10)) == {"a", "b"}
        router.route("web", "green")
        assert _releases(client, rb.url(), 30) == {"c": 30}
        assert router.routes() == {"web": "green"}
        router.route("web", "live")
        assert set(_releases(client, rb.url(), 10)) == {"a", "b"}
    assert "router: web -> green (was live)" in rb.log
    with pytest.raises(RouterError, match="no backend 'nope'"):
        router.route("web", "nope")
    with pytest.raises(RouterError, match="no frontend 'wbe'"):
        router.route("wbe", "green")


def test_sticky_backend_uses_dynamic_cookies(rb: Bed) -> None:
    router = rb.router
    router.assign("sticky", 1, rb.apps["a"], 8080, state="ready")
    router.assign("sticky", 2, rb.apps["b"], 8080, state="ready")
    url = rb.url(8081)
    first = httpx.get(url + "/version", timeout=5)
    cookie = first.cookies["DDSRV"]
    for _ in range(6):
        again = httpx.get(url + "/version", cookies={"DDSRV": cookie}, timeout=5)
        assert again.headers["x-release"] == first.headers["x-release"]
        assert "DDSRV" not in again.cookies  # indirect: not set again
    other = httpx.get(url + "/version", timeout=5)  # no cookie: round robin, the other server
    assert other.cookies["DDSRV"] != cookie
    assert other.headers["x-release"] != first.headers["x-release"]


def test_refused_commands_raise(rb: Bed) -> None:
    router = rb.router
    with pytest.raises(RouterError, match="no server live/s99"):
        router.set_state("live", 99, "ready")
    with pytest.raises(RouterError, match="No such server"):
        router.command("set server live/s99 state ready")
    with pytest.raises(RouterError, match="Absolute weight"):
        router.command("set server live/s1 weight 300")
    with pytest.raises(RouterError, match="Can't find backend"):
        router.servers("nope")
    with pytest.raises(RouterError, match="Unknown command"):
        router.command("frobnicate")
    with pytest.raises(RouterError, match="holds no instance"):
        router.set_state("live", 3, "ready")


def test_the_runtime_api_is_reached_through_the_engine_and_never_published(
    rb: Bed, docker_client
) -> None:  # type: ignore[no-untyped-def]
    container = docker_client.containers.get(rb.handle.container_id)
    published = {key for key, bound in container.attrs["NetworkSettings"]["Ports"].items() if bound}
    assert published == {"8080/tcp", "8081/tcp"}  # the frontends only
    assert set(rb.handle.ports) == {8080, 8081}
    assert "RuntimeRelay" in repr(rb.router)
    # The stats socket listens on the container's loopback: not on its network address.
    ip = container.attrs["NetworkSettings"]["Networks"][rb.network]["IPAddress"]
    with pytest.raises(OSError):
        socket.create_connection((ip, 9999), timeout=2).close()
    # Many commands over one stream: each is a round trip to the engine, not an exec.
    started = time.perf_counter()
    for _ in range(50):
        assert rb.router.info()["Name"] == "HAProxy"
    assert time.perf_counter() - started < 10


def test_an_existing_haproxy_by_address(
    rb: Bed, bed, docker_client, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """An HAProxy run by its users, with its Runtime API on TCP (the ``haproxy`` connection)."""
    lines: list[str] = []
    name = f"dd-test-router-tcp-{rb.uid}"
    config = CONFIG.replace(f"ipv4@{CONTAINER_LOOPBACK}:9999", "ipv4@0.0.0.0:9999")
    try:
        handle = RouterContainer.ensure(
            docker_client,
            name=name,
            network=rb.network,
            image=bed.haproxy_image,
            config=config,
            publish={8080: 0, 9999: 0},
            bind=LOOPBACK,
            log=rb.log.append,
        )
        existing = HaproxyRouter(LOOPBACK, handle.ports[9999], log=lines.append)
        existing.assign("live", 3, rb.apps["c"], 8080, state="ready")
        assert lines == [f"router: live/s3 -> {rb.apps['c']}:8080 ready"]
        assert existing.servers("live") == handle.router.servers("live")
        with httpx.Client(timeout=5) as client:
            assert _releases(client, f"http://{LOOPBACK}:{handle.ports[8080]}", 5) == {"c": 5}

        from docker_delivery.hooks.haproxy import HaproxyHook

        monkeypatch.setenv(
            "AIRFLOW_CONN_HAPROXY_TEST", f"haproxy://{LOOPBACK}:{handle.ports[9999]}"
        )
        hook = HaproxyHook("haproxy_test")
        assert hook.get_router().server("live", 3).address == rb.apps["c"]
        ok, message = hook.test_connection()
        assert ok and "HAProxy 2.6" in message
    finally:
        RouterContainer.remove(docker_client, name, log=rb.log.append)


def test_ensure_reuses_and_guards_a_live_router(rb: Bed, bed, docker_client) -> None:  # type: ignore[no-untyped-def]
    again = RouterContainer.ensure(
        docker_client,
        name=rb.handle.name,
        network=rb.network,
        image=bed.haproxy_image,
        config=CONFIG,
        publish={8080: 0, 8081: 0},
        bind=LOOPBACK,
        log=rb.log.append,
    )
    assert again.container_id == rb.handle.container_id
    assert again.ports == rb.handle.ports
    container = docker_client.containers.get(rb.handle.container_id)
    assert container.labels[LABEL_ROLE] == "router"
    assert container.labels["io.docker-delivery.managed"] == "true"
    assert container.labels[LABEL_CONFIG_HASH].startswith("sha256:")

    # A second router, serving one slot: another configuration is refused unless replace=True.
    name = f"dd-test-router2-{rb.uid}"
    small = render_config({"web": FrontendSpec(8080, "live")}, {"live": BackendSpec(slots=2)})
    try:
        first = RouterContainer.ensure(
            docker_client,
            name=name,
            network=rb.network,
            image=bed.haproxy_image,
            config=small,
            publish={8080: 0},
            log=rb.log.append,
        )
        first.router.assign("live", 1, rb.apps["a"], 8080, state="ready")
        changed = small + "# another revision\n"
        with pytest.raises(RouterError, match="serves live/s1: retire it first"):
            RouterContainer.ensure(
                docker_client,
                name=name,
                network=rb.network,
                image=bed.haproxy_image,
                config=changed,
                publish={8080: 0},
                log=rb.log.append,
            )
        replaced = RouterContainer.ensure(
            docker_client,
            name=name,
            network=rb.network,
            image=bed.haproxy_image,
            config=changed,
            publish={8080: 0},
            replace=True,
            log=rb.log.append,
        )
        assert replaced.container_id != first.container_id
        assert replaced.router.free_slots("live") == [1, 2]  # a new HAProxy starts empty

        # Not serving: replaced without replace=True; a broken config says why.
        with pytest.raises(RouterError, match=r"(?s)exited \(code 1\).*logs:.*bogus-directive"):
            RouterContainer.ensure(
                docker_client,
                name=name,
                network=rb.network,
                image=bed.haproxy_image,
                config=small + "bogus-directive\n",
                publish={8080: 0},
                log=rb.log.append,
            )
    finally:
        RouterContainer.remove(docker_client, name, log=rb.log.append)


def test_mark_up_puts_a_server_up_at_once_and_its_checks_go_on(rb: Bed) -> None:
    router = rb.router
    # Nothing listens on port 9: HAProxy's check keeps the server down...
    router.assign("green", 2, rb.apps["b"], 9, state="ready")
    deadline = time.monotonic() + 10
    while router.server("green", 2).operational != "down" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert router.server("green", 2).operational == "down"
    # ...until it is marked up (what a deployment does once its own health gate passed),
    up = router.mark_up("green", 2)
    assert up.operational == "up"
    assert f"router: green/s2 marked up ({rb.apps['b']}:9, its health gate passed)" in rb.log
    # and HAProxy's checks go on: it is down again after fall x inter.
    deadline = time.monotonic() + 10
    while router.server("green", 2).operational == "up" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert router.server("green", 2).operational == "down"
    rb.log.clear()
    router.assign("green", 1, rb.apps["a"], 8080, state="ready")
    deadline = time.monotonic() + 10
    while router.server("green", 1).operational != "up" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert router.mark_up("green", 1).operational == "up"  # already up: nothing to do
    assert not any("marked up" in line for line in rb.log)
    with pytest.raises(RouterError, match="maint"):
        router.mark_up("live", 3)  # holds no instance
