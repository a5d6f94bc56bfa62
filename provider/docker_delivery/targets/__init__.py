"""Where releases run: Docker Engine containers, Docker Swarm services, Amazon ECS services."""

from docker_delivery.targets.base import (
    Instance,
    Limits,
    Release,
    SecretMount,
    SlotTarget,
    TargetError,
)
from docker_delivery.targets.ecs import EcsRelease, EcsTarget
from docker_delivery.targets.engine import EngineTarget
from docker_delivery.targets.swarm import SwarmService, SwarmTarget, UpdatePolicy

__all__ = [
    "EcsRelease",
    "EcsTarget",
    "EngineTarget",
    "Instance",
    "Limits",
    "Release",
    "SecretMount",
    "SlotTarget",
    "SwarmService",
    "SwarmTarget",
    "TargetError",
    "UpdatePolicy",
]
