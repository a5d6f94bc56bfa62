"""RolloutCompleteSensor on the real Swarm and HAProxy: "k/N updated" while a rolling deploy is
held at a stage, complete once it is continued; its deferred wait in the trigger."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kit.deploy import CHECK, local_router
from kit.loadgen import free_port

from docker_delivery.errors import DeliveryError, InvalidReference
from docker_delivery.images.ref import ImageRef
from docker_delivery.sensors import RolloutCompleteSensor
from docker_delivery.strategies import Rolling
from docker_delivery.strategies.deploy import deploy
from docker_delivery.strategies.rollout import rollout_status
from docker_delivery.targets import Release
from docker_delivery.triggers.rollout import RolloutCompleteTrigger

pytestmark = pytest.mark.timeout(300)

SERVICE_PREFIX = "ro"  # the service fixture's names (tests/conftest.py)


def sensor(service: str, image: str, **kw: Any) -> RolloutCompleteSensor:
    return RolloutCompleteSensor(
        task_id="rollout_complete", service=service, environment="test", image=image, **kw
    )


def trigger_event(service: str, digest: str, deadline_s: float) -> dict[str, Any]:
    trigger = RolloutCompleteTrigger(service, "test", digest, 4, poll_s=0.2, deadline_s=deadline_s)
    name, kwargs = trigger.serialize()
    assert name == "docker_delivery.triggers.rollout.RolloutCompleteTrigger"
    again = RolloutCompleteTrigger(**kwargs)  # as the triggerer re-creates it

    async def first() -> dict[str, Any]:
        async for event in again.run():
            return dict(event.payload)
        raise AssertionError("no event")

    return asyncio.run(first())


def test_held_rollout_reports_k_of_n_then_completes(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str
) -> None:
    v1, v2 = demo_images["v1"], demo_images["v2"]
    d1, d2 = ImageRef.parse(v1).digest, ImageRef.parse(v2).digest
    assert d1 and d2
    before = rollout_status(docker_client, service, "test", v2, replicas=4)
    assert not before.complete and before.backend == "" and "no router" in before.describe()

    router = local_router(
        port=free_port(), image=bed.haproxy_image, slots=10, check_interval_ms=500
    )
    kw: dict[str, Any] = dict(router=router, check=CHECK, owner="test", log=print)
    rel = {
        n: Release.of(service, "test", img, env={"APP_RELEASE": n}, stop_grace=10)
        for n, img in (("v1", v1), ("v2", v2))
    }
    deploy(docker_client, rel["v1"], Rolling(replicas=4), **kw)
    assert sensor(service, v1, replicas=4).poke({}).is_done  # type: ignore[arg-type]

    held = Rolling(replicas=4, stages=(1, "50%", "100%"), until_stage=2)
    deploy(docker_client, rel["v2"], held, **kw)
    status = rollout_status(docker_client, service, "test", d2, replicas=4)
    assert (status.updated, status.others, status.complete) == (2, {d1: 2}, False)
    assert f"2/4 updated to {d2[7:19]} in live; still serving: 2 of {d1[7:19]}" in status.describe()
    poke = sensor(service, v2, replicas="4").poke({})  # type: ignore[arg-type]
    assert not poke.is_done and poke.xcom_value is None
    incomplete = trigger_event(service, d2, deadline_s=1.0)
    assert incomplete["status"] == "incomplete" and "2/4 updated" in incomplete["message"]

    deploy(docker_client, rel["v2"], Rolling(replicas=4, stages=(1, "50%", "100%")), **kw)
    done = sensor(service, v2, replicas=4).poke({})  # type: ignore[arg-type]
    assert done.is_done and done.xcom_value["updated"] == 4 and done.xcom_value["complete"]
    complete = trigger_event(service, d2, deadline_s=30)
    assert complete["status"] == "complete" and complete["rollout"]["others"] == {}


def test_bad_input_is_refused(docker_client: Any) -> None:
    with pytest.raises(InvalidReference, match="64 lower-case hex"):
        rollout_status(docker_client, "web", "test", "sha256:abc", replicas=1)
    with pytest.raises(DeliveryError, match="not pinned to a digest"):
        rollout_status(docker_client, "web", "test", "registry/app:v1", replicas=1)
    with pytest.raises(DeliveryError, match="at least 1"):
        rollout_status(docker_client, "web", "test", "sha256:" + "a" * 64, replicas=0)
