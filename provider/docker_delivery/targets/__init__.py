"""Where releases run: Docker Engine containers and Docker Swarm services."""

from docker_delivery.targets.base import (
    Instance,
    Limits,
    Release,
    SecretMount,
    SlotTarget,
    TargetError,
)
from docker_delivery.targets.engine import EngineTarget
from docker_delivery.targets.swarm import SwarmService, SwarmTarget, UpdatePolicy

__all__ = [
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
