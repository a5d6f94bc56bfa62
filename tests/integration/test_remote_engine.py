"""Delivering to a remote engine: the bed's second machine (its own network namespace), reached
over TLS through a ``docker_engine`` connection, under load from this machine on the router's
published port. This machine has no route to the remote containers (the bed's `unreachable`
routes): every check goes through the router container, and the Runtime API through the engine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import statistics
import time
from contextlib import closing
from pathlib import Path

import pytest
from kit.connections import outgoing_connections
from kit.deploy import CHECK, SLOW_FEW_MIX, release
from kit.remote import RELEASES, REMOTE_CONN_ID, remote_router, under_load

from docker_delivery.hooks.engine import engine_client
from docker_delivery.strategies.bluegreen import BlueGreen, deploy_idle, switch_traffic
from docker_delivery.strategies.deploy import deploy
from docker_delivery.strategies.min_in_service import MinimumInService
from docker_delivery.strategies.rollback import roll_back
from docker_delivery.targets import EngineTarget

SERVICE_PREFIX = "rm"  # the remote_service fixture's names (tests/conftest.py)


def test_minimum_in_service_on_a_remote_engine_drops_no_request_and_never_touches_an_instance(
    bed, remote_engine, demo_images, remote_service
) -> None:  # type: ignore[no-untyped-def]
    router = remote_router(bed)
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    settings = MinimumInService(replicas=4, min_in_service=2)
    deploy(remote_engine, release(demo_images["v1"], remote_service), settings, **kw)
    url = router.url(bed.remote_host)
    with outgoing_connections() as opened:
        under_load(
            url,
            lambda n: deploy(
                remote_engine,
                release(demo_images[RELEASES[(n + 1) % 3]], remote_service),
                settings,
                **kw,
            ),
            mix=SLOW_FEW_MIX,
        )
    running = EngineTarget(remote_engine).instances(remote_service, "test")
    assert len(running) == 4 and all(i.running for i in running)
    instances = {i.ip for i in running}
    # What this process connected to: the engine (TLS) and the router's public port, nothing else.
    private = [ipaddress.ip_network(n) for n in bed.remote_private_nets]
    engine_port = int(bed.remote_url.rsplit(":", 1)[1])
    wanted = {(bed.remote_host, engine_port), (bed.remote_host, router.port)}
    assert opened and set(opened) <= wanted, sorted(set(opened) - wanted)
    assert not [h for h, _ in opened if h in instances]
    assert not [h for h, _ in opened if any(ipaddress.ip_address(h) in net for net in private)]
    assert all(port != 9999 for _, port in opened)  # no Runtime API port, anywhere


def test_switch_back_on_a_remote_engine_within_a_second(
    bed, remote_engine, demo_images, remote_service
) -> None:  # type: ignore[no-untyped-def]
    """Switch-back rollbacks through the engine (relay), again and again: each one takes the
    lock, finds the router, reads what runs and switches; the clients see the old release."""
    router = remote_router(bed)
    kw = dict(router=router, check=CHECK, owner="deployer", log=print)
    for name in ("v1", "v2"):
        settings = BlueGreen(replicas=3, scale_down_delay=600, post_switch_check=1)
        deploy_idle(remote_engine, release(demo_images[name], remote_service), settings, **kw)
        switch_traffic(remote_engine, release(demo_images[name], remote_service), settings, **kw)
    took: list[float] = []

    def switch_back(n: int) -> None:
        # A new client each time, as a RollbackOperator's task makes one: nothing kept warm
        # (the engine's TLS session, the relay into the router, the probes' streams).
        with closing(engine_client(engine_conn_id=REMOTE_CONN_ID)) as client:
            result = roll_back(
                client, remote_service, "test", router=router, check=CHECK, owner="rb"
            )
        assert result.kind == "switch-back"
        took.append(float(result.switch_s or 0.0))
        time.sleep(1.0)

    under_load(router.url(bed.remote_host), switch_back, mix={"get": 0.8, "post": 0.2})
    print(
        f"switch-back through the engine, each from a new client: {len(took)} runs, "
        f"median {statistics.median(took):.3f}s,"
        f" max {max(took):.3f}s"
    )
    assert len(took) >= 10  # the figures (bar: under 1 s): scripts/bench_bluegreen_ab.py --remote 4


def test_the_remote_engine_is_verified_and_verifies_the_worker(bed, remote_engine) -> None:  # type: ignore[no-untyped-def]
    """TLS both ways: a connection whose CA did not sign the engine's certificate is refused,
    and so is a client without a certificate of the engine's CA."""
    import requests

    from docker_delivery.errors import TargetError
    from docker_delivery.hooks.engine import DockerEngineHook

    tls = bed.remote_tls
    wrong_ca = {
        "conn_type": "docker_engine",
        "host": bed.remote_url,
        "extra": {
            "tls_ca": Path("/etc/ssl/certs/ca-certificates.crt").read_text(),
            "tls_cert": (tls / "cert.pem").read_text(),
            "tls_key": (tls / "key.pem").read_text(),
        },
    }
    os.environ["AIRFLOW_CONN_DD_BED_REMOTE_WRONG_CA"] = json.dumps(wrong_ca)
    try:
        with pytest.raises(
            TargetError, match=r"did not answer over TLS: .*CERTIFICATE_VERIFY_FAILED"
        ):
            DockerEngineHook("dd_bed_remote_wrong_ca").get_client(timeout=10)
    finally:
        del os.environ["AIRFLOW_CONN_DD_BED_REMOTE_WRONG_CA"]
    with pytest.raises(requests.exceptions.RequestException):  # no client certificate
        requests.get(f"{bed.remote_url}/version", verify=str(tls / "ca.pem"), timeout=10)
    assert remote_engine.version()["Version"]
