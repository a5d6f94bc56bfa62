"""The sensors, and the retire step's wait, run in the triggerer when Airflow's ``[operators]
default_deferrable`` says so, as Airflow's own deferrable operators do; a DAG may still say
otherwise per task."""

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
from docker_delivery.operators.deploy import RetireOperator
retire = RetireOperator(task_id="x", service="web", environment="staging", router_port=18080)
print(health.deferrable, rollout.deferrable, forced.deferrable, retire.deferrable)
"""


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("True", "True True False True"), ("False", "False False False False")],
)
def test_sensors_take_default_deferrable(setting: str, expected: str) -> None:
    import os

    env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": setting}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == expected


def test_retire_before_its_time_defers_until_then_and_looks_again() -> None:
    """Before ``scale_down_delay`` has passed, the retire step hands the wait to the triggerer
    (a DateTimeTrigger at the time the domain gives) and, resumed, runs the step again."""
    import datetime as dt
    from typing import Any

    from airflow.providers.standard.triggers.temporal import DateTimeTrigger
    from airflow.sdk.exceptions import TaskDeferred

    from docker_delivery.errors import RetireNotDue
    from docker_delivery.operators.deploy import RetireOperator

    due = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    calls: list[bool] = []

    retire = RetireOperator(
        task_id="x", service="web", environment="s", router_port=18080, deferrable=True
    )

    def not_due(client: Any, spec: Any, context: Any) -> Any:  # the domain's answer, no engine
        calls.append(True)
        raise RetireNotDue("web/s: blue may be retired at 2030-01-01", due=due)

    retire.deliver = not_due  # type: ignore[method-assign]
    import docker_delivery.operators.deploy as deploy

    engine = deploy.engine_client
    deploy.engine_client = lambda *a, **k: type("C", (), {"close": lambda self: None})()  # type: ignore[assignment]
    try:
        with pytest.raises(TaskDeferred) as deferred:
            retire.execute({"ti": None})
        assert isinstance(deferred.value.trigger, DateTimeTrigger)
        assert deferred.value.trigger.moment == due
        assert deferred.value.method_name == "execute_complete"
        with pytest.raises(TaskDeferred):  # resumed: it looks again (not due yet: again)
            retire.execute_complete({"ti": None}, {})
        assert len(calls) == 2
    finally:
        deploy.engine_client = engine
