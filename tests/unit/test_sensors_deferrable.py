"""The sensors wait in the triggerer when Airflow's ``[operators] default_deferrable`` says so,
as Airflow's own deferrable operators do; a DAG may still say otherwise per sensor."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
from docker_delivery.sensors import RolloutCompleteSensor, ServiceHealthySensor
health = ServiceHealthySensor(task_id="h", addresses=["10.0.0.5:8080"])
rollout = RolloutCompleteSensor(task_id="r", service="web", environment="staging",
                                image="sha256:" + "a" * 64, replicas=2)
forced = RolloutCompleteSensor(task_id="f", service="web", environment="staging",
                               image="sha256:" + "a" * 64, replicas=2, deferrable=False)
print(health.deferrable, rollout.deferrable, forced.deferrable)
"""


@pytest.mark.parametrize(("setting", "expected"), [("True", "True True False"),
                                                   ("False", "False False False")])  # fmt: skip
def test_sensors_take_default_deferrable(setting: str, expected: str) -> None:
    import os

    env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": setting}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == expected
