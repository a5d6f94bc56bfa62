"""Faults found under load (what the tool said and left behind), each against the real bed:
too few router slots, a container that exits at once, two deliveries that must wait for each
other, a redeploy's previous digest, and an environment tag that must follow what serves."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest
from kit.deploy import CHECK, release, router_settings

from docker_delivery.images.ref import ImageRef
from docker_delivery.images.registry import RegistryClient
from docker_delivery.infra import apply_spec
from docker_delivery.spec import load_spec
from docker_delivery.strategies.ab import ABTest, ab_deploy
from docker_delivery.strategies.base import DeployAborted, DeploySettingsInvalid
from docker_delivery.strategies.deploy import deploy
from docker_delivery.strategies.lock import DeploymentLock
from docker_delivery.strategies.min_in_service import MinimumInService
from docker_delivery.strategies.release_tag import Superseded, promote_serving
from docker_delivery.targets import EngineTarget

SERVICE_PREFIX = "fault"


def labelled(docker_client: Any, service: str) -> list[Any]:
    return list(
        docker_client.containers.list(
            ignore_removed=True,
            all=True,
            filters={"label": f"io.docker-delivery.service={service}"},
        )
    )


def test_too_few_router_slots_are_refused_before_anything_changes(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str
) -> None:
    """10 replicas behind 8 slots failed half-way ("HAProxy has no server live/s9") and left
    containers outside the router; now nothing starts, the router included."""
    router = router_settings(bed, preview=False)
    with pytest.raises(DeploySettingsInvalid, match="needs 10 router slots; the router has 8"):
        deploy(
            docker_client,
            release(demo_images["v1"], service),
            MinimumInService(10, 5),
            router=router,
            check=CHECK,
            owner="test",
        )
    assert labelled(docker_client, service) == []


def test_an_ab_test_that_outgrows_a_running_router_is_refused_before_anything_changes(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str
) -> None:
    """A and B side by side need 2 x 5 slots in the ab backend of a router with 8."""
    router = router_settings(bed)
    kw: dict[str, Any] = {"router": router, "check": CHECK, "owner": "test"}
    deploy(docker_client, release(demo_images["v1"], service), MinimumInService(5, 3), **kw)
    before = {c.id for c in labelled(docker_client, service)}
    with pytest.raises(DeploySettingsInvalid, match="needs 10 router slots; the router has 8"):
        ab_deploy(docker_client, release(demo_images["v2"], service), ABTest(), **kw)
    assert {c.id for c in labelled(docker_client, service)} == before


def test_a_container_that_exits_at_once_is_reported_by_its_exit(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str
) -> None:
    """It was reported as "address ':8080' has no host" (a spec error), with "no running event
    loop" at the top of the traceback; now the exit code and its last output come first."""
    router = router_settings(bed, preview=False)
    kw: dict[str, Any] = {"router": router, "check": CHECK, "owner": "test"}
    deploy(docker_client, release(demo_images["v1"], service), MinimumInService(2, 1), **kw)
    bad = release(demo_images["v2"], service, EXIT_ON_START="1")
    with pytest.raises(DeployAborted) as caught:
        deploy(docker_client, bad, MinimumInService(2, 1), **kw)
    message = str(caught.value)
    assert "code 3" in message, message
    assert "EXIT_ON_START is set: simulating a bad release" in message, message
    assert "has no host" not in message
    chain, error = [], caught.value.__cause__
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert not [e for e in chain if isinstance(e, RuntimeError)], chain
    running = EngineTarget(docker_client).instances(service, "test", include_stopped=True)
    assert len(running) == 2 and all(i.running for i in running)
    assert {i.digest for i in running} == {ImageRef.parse(demo_images["v1"]).digest}


def test_two_deliveries_three_seconds_apart_both_succeed_with_lock_wait(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str
) -> None:
    """Each delivery applies the environment's infrastructure, then deploys. The second started
    while the first deployed: its infrastructure step read what ran before it waited for the
    lock and failed ("InfraConflict: ... runs several digests"). Now every step takes the lock
    first and waits for it (lock_wait), logging who holds it."""
    router = router_settings(bed, preview=False)
    spec = load_spec(
        {
            "service": service,
            "defaults": {
                "replicas": 4,
                "stop_grace": 10,
                "env": {"START_DELAY_S": "1", "EXIT_ON_SIGTERM_IMMEDIATELY": "1"},
                "health_check": {"interval": 0.25, "timeout": 1.0, "start_period": 10},
                "router": {"image": bed.haproxy_image, "slots": 8, "check_interval_ms": 500},
                "rollout": {"min_in_service": 2},
            },
            "environments": {"test": {"router": {"port": router.port}}},
        }
    )
    settings = MinimumInService(4, 2)
    routed = spec.router_for("test")
    check = spec.health_check_for("test")
    deploy(
        docker_client,
        spec.release_for("test", demo_images["v1"]),
        settings,
        router=routed,
        check=check,
        owner="first-ever",
    )
    logs: dict[str, list[str]] = {"A": [], "B": []}
    errors: dict[str, BaseException] = {}

    def deliver(name: str, image: str) -> None:
        owner, log = f"delivery-{name}", logs[name].append
        try:
            apply_spec(docker_client, spec, "test", owner=owner, lock_wait=300, log=log)
            target = spec.release_for("test", image)
            deploy(
                docker_client,
                target,
                settings,
                router=routed,
                check=check,
                owner=owner,
                lock_wait=300,
                log=log,
            )
        except BaseException as exc:  # reported below
            errors[name] = exc

    first = threading.Thread(target=deliver, args=("A", demo_images["v2"]))
    second = threading.Thread(target=deliver, args=("B", demo_images["v3"]))
    first.start()
    deadline = time.monotonic() + 60
    while not any("batch 1/" in line for line in logs["A"]):  # A is deploying
        assert time.monotonic() < deadline and first.is_alive(), logs["A"]
        time.sleep(0.05)
    time.sleep(1)
    second.start()
    first.join(300)
    second.join(300)
    assert errors == {}, errors
    waiting = [line for line in logs["B"] if line.startswith(f"waiting for lock dd-lock-{service}")]
    assert waiting and "held by delivery-A since" in waiting[0], logs["B"]
    assert "waited 0s of 300s" in waiting[0]
    running = EngineTarget(docker_client).instances(service, "test")
    assert {i.digest for i in running} == {ImageRef.parse(demo_images["v3"]).digest}
    assert len(running) == 4


def test_the_lock_is_reentrant_for_its_owner_and_freed_by_the_outermost_holder(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str
) -> None:
    """An infrastructure change re-releases through a deployment, both under the lock: the
    inner release used to free the lock while the outer step still worked under it."""
    name = f"dd-lock-{service}-test"
    image = demo_images["v1"]
    EngineTarget(docker_client).ensure_image(release(image, service))
    with DeploymentLock(docker_client, service, "test", owner="me", image=image, log=print):
        with DeploymentLock(docker_client, service, "test", owner="me", image=image, log=print):
            pass
        assert docker_client.containers.get(name).labels["io.docker-delivery.lock-owner"] == "me"
        lines: list[str] = []
        with (
            pytest.raises(Exception, match="another delivery \\(me, since"),
            DeploymentLock(
                docker_client,
                service,
                "test",
                owner="other",
                image=image,
                wait=0.3,
                log=lines.append,
            ),  # fmt: skip
        ):
            pass
        assert lines and lines[0].startswith(f"waiting for lock {name}: held by me since")
    assert not docker_client.containers.list(all=True, filters={"name": name})


def test_a_kept_lock_stays_its_owners_until_taken_over_and_a_failure_frees_it(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str
) -> None:
    """A step that goes on elsewhere (a trigger, a pause) keeps the lock; its next try, the same
    owner, takes it over; a kept lock whose step fails is freed."""
    name = f"dd-lock-{service}-test"
    image = demo_images["v1"]
    EngineTarget(docker_client).ensure_image(release(image, service))

    def lock(owner: str, lines: list[str] | None = None) -> DeploymentLock:
        log = print if lines is None else lines.append
        return DeploymentLock(docker_client, service, "test", owner=owner, image=image, log=log)

    with lock("d/r/deploy") as held:
        held.keep()
    assert docker_client.containers.get(name).labels["io.docker-delivery.lock-owner"] == (
        "d/r/deploy"
    )
    with pytest.raises(Exception, match="another delivery \\(d/r/deploy"), lock("d/r2/deploy"):
        pass
    lines: list[str] = []
    with pytest.raises(RuntimeError, match="the step failed"), lock("d/r/deploy", lines) as again:
        again.keep()
        raise RuntimeError("the step failed")
    assert "already held by this task (d/r/deploy): taking it over" in lines[0]
    assert not docker_client.containers.list(all=True, filters={"name": name})


def test_a_redeploy_of_the_running_digest_names_it_as_the_previous_one(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str
) -> None:
    """The ledger recorded ``previous_digest: None`` for a redeploy of what already ran."""
    router = router_settings(bed, preview=False)
    kw: dict[str, Any] = {"router": router, "check": CHECK, "owner": "test"}
    first = deploy(docker_client, release(demo_images["v1"], service), MinimumInService(2, 1), **kw)
    assert first.previous_digest is None  # nothing ran before
    again = deploy(docker_client, release(demo_images["v1"], service), MinimumInService(2, 1), **kw)
    assert again.replaced == 0
    assert again.previous_digest == first.digest
    assert again.as_dict()["previous_digest"] == first.digest


def test_the_environment_tag_moves_only_to_what_serves(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str
) -> None:
    """Under the deployment lock, the tag moves to a release that serves, and stays where it is
    for one that does not (a delivery another one replaced since)."""
    environment = f"t{service[-6:]}"  # the tag's name: this test's own in the shared repository
    router = router_settings(bed, preview=False)
    v1, v2 = ImageRef.parse(demo_images["v1"]), ImageRef.parse(demo_images["v2"])
    deploy(
        docker_client,
        dataclasses.replace(release(demo_images["v1"], service), environment=environment),
        MinimumInService(2, 1),
        router=router,
        check=CHECK,
        owner="test",
    )
    args: dict[str, Any] = {"service": service, "port": 8080, "owner": "test", "log": print}
    with RegistryClient(bed.registry) as registry:
        with pytest.raises(Superseded, match=f"serves {v1.digest}, not {v2.digest}"):
            promote_serving(docker_client, registry, v2, environment, **args)
        assert environment not in registry.list_tags(v1.without_tag())
        moved = promote_serving(docker_client, registry, v1, environment, **args)
        assert moved.digest == v1.digest
        assert registry.resolve(v1.with_tag(environment)) == v1.digest
