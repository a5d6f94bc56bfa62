"""A deployment killed mid-batch (worker lost) and run again finishes with nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

from kit.deploy import LOOPBACK, local_router
from kit.loadgen import LoadGenerator, free_port

from docker_delivery.health import HealthCheck
from docker_delivery.routing.haproxy import RouterContainer
from docker_delivery.routing.service import router_name
from docker_delivery.strategies import MinimumInService
from docker_delivery.strategies.deploy import deploy
from docker_delivery.targets import EngineTarget, Release

SCRIPT = """
import sys
from docker_delivery.health import HealthCheck
from docker_delivery.routing.service import RouterSettings
from docker_delivery.strategies import MinimumInService
from docker_delivery.strategies.deploy import deploy
from docker_delivery.targets import Release
import docker
service, image, port, haproxy = sys.argv[1:5]
release = Release.of(service, "test", image, env={"APP_RELEASE": "v2", "START_DELAY_S": "2"},
                     stop_grace=10)
deploy(docker.from_env(), release, MinimumInService(4, 2),
       router=RouterSettings(port=int(port), image=haproxy, slots=8, check_interval_ms=500,
                             address="127.0.0.1"),
       check=HealthCheck(interval=0.25, start_period=10), owner="dag/run/deploy",
       log=lambda m: print(m, flush=True))
"""


def test_killed_deploy_run_again_completes_without_orphans(bed, docker_client, demo_images) -> None:  # type: ignore[no-untyped-def]
    service = f"kill{uuid.uuid4().hex[:6]}"
    router = local_router(port=free_port(), image=bed.haproxy_image, slots=8, check_interval_ms=500)
    check = HealthCheck(interval=0.25, start_period=10)
    v1 = Release.of(service, "test", demo_images["v1"], env={"APP_RELEASE": "v1"}, stop_grace=10)
    v2 = Release.of(
        service,
        "test",
        demo_images["v2"],
        env={"APP_RELEASE": "v2", "START_DELAY_S": "2"},
        stop_grace=10,
    )
    kw = dict(router=router, check=check, owner="dag/run/deploy", log=print)
    try:
        deploy(docker_client, v1, MinimumInService(4, 2), **kw)
        with LoadGenerator(router.url(LOOPBACK), rate=150, max_duration=120) as load:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    SCRIPT,
                    service,
                    demo_images["v2"],
                    str(router.port),
                    bed.haproxy_image,
                ],
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            assert worker.stdout is not None
            for line in worker.stdout:  # kill it while the first batch's new containers start
                if line.startswith("started "):
                    break
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            time.sleep(0.5)
            result = deploy(docker_client, v2, MinimumInService(4, 2), **kw)
            load.mark("after")
            time.sleep(1.0)
        assert load.report.failed == 0, load.report.failures
        assert load.report.by_phase["after"].get("v1", 0) == 0
        everything = EngineTarget(docker_client).instances(service, "test", include_stopped=True)
        assert len(everything) == 4, [i.name for i in everything]
        assert all(i.running and i.digest == result.digest for i in everything)
        assert not docker_client.containers.list(
            ignore_removed=True, all=True, filters={"name": f"dd-lock-{service}-test"}
        )
    finally:
        for c in docker_client.containers.list(
            ignore_removed=True,
            all=True,
            filters={"label": f"io.docker-delivery.service={service}"},
        ):
            c.remove(force=True)
        RouterContainer.remove(docker_client, router_name(service, "test"))
        for net in docker_client.networks.list(names=[f"dd-{service}-test"]):
            net.remove()
