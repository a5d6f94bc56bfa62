"""The one model of what runs, decoded from what the engine lists (no Docker here)."""

from __future__ import annotations

from docker_delivery.targets.inventory import Instance

DIGEST = "sha256:" + "a" * 64
LABELS = {
    "io.docker-delivery.managed": "true",
    "io.docker-delivery.service": "web",
    "io.docker-delivery.environment": "prod",
    "io.docker-delivery.digest": DIGEST,
    "io.docker-delivery.image": f"registry/web@{DIGEST}",
    "io.docker-delivery.config": "abcdef012345",
    "io.docker-delivery.role": "app",
    "io.docker-delivery.env-keys": "LOG_LEVEL,MODE",
}


def summary(labels: dict[str, str], **raw: object) -> dict[str, object]:
    return {
        "Id": "c0ffee",
        "Names": ["/web-prod-2-abcdef012345"],
        "Labels": labels,
        "State": "running",
        "Status": "Up 3 minutes",
        "NetworkSettings": {"Networks": {"dd-web-prod": {"IPAddress": "10.0.3.7"}}},
        **raw,
    }


def test_a_container_of_the_engine() -> None:
    labels = {**LABELS, "io.docker-delivery.slot": "2", "io.docker-delivery.port": "9090"}
    instance = Instance.of_summary(summary(labels), port=8080)
    assert (instance.slot, instance.address, instance.running) == (2, "10.0.3.7:9090", True)
    assert (instance.digest, instance.config, instance.kind) == (DIGEST, "abcdef012345", "engine")
    assert instance.group == "live" and instance.env_keys == ("LOG_LEVEL", "MODE")
    assert instance.image == f"registry/web@{DIGEST}" and instance.previous_digest == ""


def test_a_swarm_task_and_its_slot() -> None:
    labels = {
        **LABELS,
        "io.docker-delivery.slot-group": "blue",
        "com.docker.swarm.service.name": "web-prod-blue-abcdef012345",
        "com.docker.swarm.task.name": "web-prod-blue-abcdef012345.3.x1y2z3",
    }
    instance = Instance.of_summary(summary(labels), port=8080)  # started before the port label
    assert (instance.slot, instance.port, instance.kind) == (3, 8080, "swarm")
    assert instance.swarm_service == "web-prod-blue-abcdef012345" and instance.group == "blue"


def test_a_stopped_container_keeps_its_exit_code_and_has_no_address() -> None:
    stopped = summary(
        {**LABELS, "io.docker-delivery.slot": "1"},
        State="exited",
        Status="Exited (3) 2 seconds ago",
        NetworkSettings={"Networks": {"dd-web-prod": {"IPAddress": ""}}},
    )
    instance = Instance.of_summary(stopped, port=8080)
    assert (instance.running, instance.exit_code, instance.ip) == (False, 3, "")
