"""DriftSensor refuses what it cannot compare when the DAG is parsed (no Docker needed)."""

from __future__ import annotations

import pytest

from docker_delivery.sensors import DriftSensor
from docker_delivery.spec import load_spec

SPEC = """
service: web
environments:
  staging: {router: {port: 18501}}
  prod: {replicas: 3, router: {port: 18502}}
"""


def test_two_known_environments_are_needed() -> None:
    spec = load_spec(SPEC)
    sensor = DriftSensor(task_id="drift", spec=spec, environments=["staging", "prod"])
    assert sensor.environments == ["staging", "prod"] and isinstance(sensor.spec, dict)
    with pytest.raises(ValueError, match="give two names"):
        DriftSensor(task_id="one", spec=spec, environments=["staging"])
    with pytest.raises(Exception, match="qa"):
        DriftSensor(task_id="unknown", spec=spec, environments=["staging", "qa"])
