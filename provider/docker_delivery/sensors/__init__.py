"""Sensors of docker-delivery: ``from docker_delivery.sensors import ServiceHealthySensor``."""

from __future__ import annotations

from docker_delivery.sensors.drift import DriftSensor
from docker_delivery.sensors.health import ServiceHealthySensor
from docker_delivery.sensors.rollout import RolloutCompleteSensor

__all__ = ["DriftSensor", "RolloutCompleteSensor", "ServiceHealthySensor"]
