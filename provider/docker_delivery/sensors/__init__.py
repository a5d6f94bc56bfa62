"""Sensors of docker-delivery: ``from docker_delivery.sensors import ServiceHealthySensor``."""

from __future__ import annotations

from docker_delivery.sensors.health import ServiceHealthySensor
from docker_delivery.sensors.rollout import RolloutCompleteSensor

__all__ = ["RolloutCompleteSensor", "ServiceHealthySensor"]
