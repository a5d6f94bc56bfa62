"""Blue/green and A/B on a remote engine (the bed's second machine, over TLS), under load from
this machine on the router's published port (see test_remote_engine.py)."""

from __future__ import annotations

from kit.deploy import CHECK, SLOW_FEW_MIX, release
from kit.remote import RELEASES, remote_router, under_load

from docker_delivery.strategies.ab import ABTest, ab_deploy
from docker_delivery.strategies.bluegreen import BlueGreen, deploy_idle, retire, switch_traffic
from docker_delivery.strategies.deploy import deploy
from docker_delivery.strategies.min_in_service import MinimumInService

SERVICE_PREFIX = "rg"  # the remote_service fixture's names (tests/conftest.py)


def test_blue_green_on_a_remote_engine_drops_no_request(
    bed, remote_engine, demo_images, remote_service
) -> None:  # type: ignore[no-untyped-def]
    router = remote_router(bed)
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    bg = BlueGreen(replicas=3, scale_down_delay=0, post_switch_check=1)

    def blue_green(n: int) -> None:
        r = release(demo_images[RELEASES[n % 3]], remote_service)
        deploy_idle(remote_engine, r, bg, **kw)
        switch_traffic(remote_engine, r, bg, **kw)
        retire(remote_engine, remote_service, "test", bg, **kw)

    blue_green(0)
    under_load(router.url(bed.remote_host), lambda n: blue_green(n + 1), mix=SLOW_FEW_MIX)


def test_a_b_on_a_remote_engine_drops_no_request(
    bed, remote_engine, demo_images, remote_service
) -> None:  # type: ignore[no-untyped-def]
    router = remote_router(bed)
    kw = dict(router=router, check=CHECK, owner="test", log=print)
    deploy(remote_engine, release(demo_images["v1"], remote_service), MinimumInService(3, 2), **kw)
    ab = ABTest(steps=(25, 100), bake_time=2, poll=0.5)

    def a_b(n: int) -> None:
        r = release(demo_images[RELEASES[(n + 1) % 3]], remote_service)
        ab_deploy(remote_engine, r, ab, **kw)

    # Cookie-less clients: each request a new client, shared out by the weights.
    under_load(router.url(bed.remote_host), a_b, mix=SLOW_FEW_MIX, cookies=False)
