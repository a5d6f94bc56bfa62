"""ServiceHealthyTrigger and ServiceHealthySensor, against the demo app run as a local process.

The sensor runs inside real DAG runs (``dag.test()`` on the project's SQLite metadata DB). In this
Airflow (3.x), ``dag.test()`` runs a deferred task's trigger in line: when the task raises
TaskDeferred, ``_run_task`` rebuilds the trigger from its serialized kwargs
(``import_string(classpath)(**deserialize(kwargs))``), awaits the first event of ``run()`` with
``asyncio.run``, and resumes the task at ``method_name`` with ``event=payload``. No triggerer is
needed, and the deferral timeout is not enforced there (the trigger's own deadline is).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pendulum
import pytest
from kit.loadgen import DemoAppProcess, free_port

from docker_delivery.health import HealthCheck

pytestmark = pytest.mark.timeout(120)

CLASSPATH = "docker_delivery.triggers.health.ServiceHealthyTrigger"
CHECK = HealthCheck(interval=0.2, timeout=1, healthy_threshold=2, unhealthy_threshold=2)


@pytest.fixture
def healthy_app() -> Iterator[DemoAppProcess]:
    with DemoAppProcess("blue") as app:
        yield app


@pytest.fixture
def broken_app() -> Iterator[DemoAppProcess]:
    with DemoAppProcess("broken", env={"FAIL_HEALTH": "1"}) as app:
        yield app


def run_trigger(trigger: Any) -> list[Any]:
    async def collect() -> list[Any]:
        return [event async for event in trigger.run()]

    return asyncio.run(collect())


# -- the trigger ---------------------------------------------------------------------------------


def test_the_trigger_serializes_to_plain_kwargs_and_back() -> None:
    from airflow.sdk.serde import deserialize, serialize

    from docker_delivery.triggers.health import ServiceHealthyTrigger

    trigger = ServiceHealthyTrigger(
        addresses=["127.0.0.1:8081", "127.0.0.1:8082"],
        check=CHECK,
        deadline_s=30,
        started_at=1_800_000_000.5,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    assert kwargs == {
        "addresses": ["127.0.0.1:8081", "127.0.0.1:8082"],
        "check": CHECK.to_dict(),
        "deadline_s": 30.0,
        "started_at": 1_800_000_000.5,
    }
    json.dumps(kwargs)  # plain JSON
    # As Airflow stores it and rebuilds it (dag.test and the triggerer do the same).
    rebuilt = ServiceHealthyTrigger(**deserialize(serialize(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)
    assert rebuilt.check == CHECK


def test_the_trigger_fires_one_healthy_event(
    healthy_app: DemoAppProcess,
) -> None:
    from docker_delivery.triggers.health import ServiceHealthyTrigger

    with DemoAppProcess("green") as other:
        addresses = [healthy_app.address, other.address]
        events = run_trigger(ServiceHealthyTrigger(addresses, CHECK.to_dict(), deadline_s=10))

    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "healthy" and payload["reason"] is None
    assert CHECK.describe() in payload["message"]
    assert [r["address"] for r in payload["reports"]] == addresses
    assert all(r["healthy"] and r["last_status"] == 200 for r in payload["reports"])
    json.dumps(payload)


def test_the_trigger_fires_one_unhealthy_event_naming_the_check(
    broken_app: DemoAppProcess,
) -> None:
    from docker_delivery.triggers.health import ServiceHealthyTrigger

    started = time.monotonic()
    events = run_trigger(ServiceHealthyTrigger([broken_app.address], CHECK, deadline_s=30))

    assert time.monotonic() - started < 5
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "unhealthy" and payload["reason"] == "unhealthy"
    assert CHECK.describe() in payload["message"]
    assert broken_app.address in payload["message"] and "got 503" in payload["message"]
    assert payload["reports"][0]["healthy"] is False


def test_a_trigger_started_after_its_deadline_fails_without_probing() -> None:
    from docker_delivery.triggers.health import ServiceHealthyTrigger

    address = f"127.0.0.1:{free_port()}"
    trigger = ServiceHealthyTrigger([address], CHECK, deadline_s=10, started_at=time.time() - 60)
    [event] = run_trigger(trigger)
    assert event.payload["status"] == "unhealthy" and event.payload["reason"] == "deadline"
    assert CHECK.describe() in event.payload["message"]


# -- the sensor, on its own ------------------------------------------------------------------


def test_poke_answers_whether_every_address_is_healthy(
    healthy_app: DemoAppProcess, broken_app: DemoAppProcess
) -> None:
    from docker_delivery.sensors import ServiceHealthySensor

    def sensor(addresses: list[str] | str) -> ServiceHealthySensor:
        return ServiceHealthySensor(task_id="healthy", addresses=addresses, check=CHECK.to_dict())

    assert sensor([healthy_app.address]).poke({}) is True  # type: ignore[arg-type]
    assert sensor(f"{healthy_app.address},{broken_app.address}").poke({}) is False  # type: ignore[arg-type]
    assert sensor(f"['{healthy_app.address}']").poke({}) is True  # type: ignore[arg-type]
    assert sensor([healthy_app.address]).poke_interval == CHECK.interval


def test_the_sensor_refuses_a_bad_check_when_the_dag_is_parsed() -> None:
    from docker_delivery.health import HealthCheckInvalid
    from docker_delivery.sensors import ServiceHealthySensor

    with pytest.raises(HealthCheckInvalid, match="healthy_threshold"):
        ServiceHealthySensor(task_id="t", addresses="a:1", check={"healthy_threshold": 0})


# -- the sensor in real DAG runs -----------------------------------------------------------------


def dag_run(
    dag_id: str, errors: list[BaseException] | None = None, **sensor_kwargs: Any
) -> tuple[str, dict[str, Any]]:
    """Run a one-sensor DAG with ``dag.test()``; return the task's state and XComs."""
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.xcom import XComModel
    from airflow.sdk import DAG
    from airflow.utils.session import create_session

    from docker_delivery.sensors import ServiceHealthySensor

    def on_failure(context: Any) -> None:
        if errors is not None:
            errors.append(context["exception"])

    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False) as dag:
        ServiceHealthySensor(task_id="healthy", on_failure_callback=on_failure, **sensor_kwargs)
    # dag.test() needs the DAG serialized in the metadata DB as if its bundle held it.
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)

    run = dag.test()

    [ti] = run.get_task_instances()
    with create_session() as session:
        xcoms = {
            row.key: row.value
            for row in session.query(XComModel).filter_by(dag_id=dag_id, run_id=run.run_id)
        }
    return str(ti.state), xcoms


def test_poke_mode_succeeds_in_a_dag_run(airflow_db: None, healthy_app: DemoAppProcess) -> None:
    state, xcoms = dag_run(
        "dd_test_health_sensor_poke", addresses=[healthy_app.address], check=CHECK, timeout=10
    )
    assert state == "success"
    assert "return_value" not in xcoms


def test_poke_mode_times_out_in_a_dag_run(airflow_db: None, broken_app: DemoAppProcess) -> None:
    errors: list[BaseException] = []
    state, _ = dag_run(
        "dd_test_health_sensor_poke_timeout",
        errors,
        addresses=broken_app.address,
        check=CHECK,
        timeout=1,
    )
    assert state == "failed"
    assert type(errors[0]).__name__ == "AirflowSensorTimeout"


def test_deferred_mode_succeeds_and_returns_the_reports(
    airflow_db: None, healthy_app: DemoAppProcess
) -> None:
    state, xcoms = dag_run(
        "dd_test_health_sensor_deferred",
        addresses=[healthy_app.address],
        check=CHECK,
        deferrable=True,
        timeout=30,
    )
    assert state == "success"
    [report] = xcoms["return_value"]
    assert report["address"] == healthy_app.address
    assert report["healthy"] is True and report["probes"] == 2 and report["last_status"] == 200


def test_deferred_mode_fails_the_task_naming_the_check(
    airflow_db: None, broken_app: DemoAppProcess
) -> None:
    errors: list[BaseException] = []
    started = time.monotonic()
    state, xcoms = dag_run(
        "dd_test_health_sensor_deferred_unhealthy",
        errors,
        addresses=[broken_app.address],
        check=CHECK,
        deferrable=True,
        timeout=600,
    )
    assert state == "failed"
    assert "return_value" not in xcoms
    [error] = errors
    assert type(error).__name__ == "AirflowException"
    assert CHECK.describe() in str(error)
    assert broken_app.address in str(error) and "got 503" in str(error)
    # unhealthy_threshold failures end it, long before the 600 s timeout.
    assert time.monotonic() - started < 60


def test_deferred_mode_times_out_as_a_sensor(airflow_db: None, healthy_app: DemoAppProcess) -> None:
    errors: list[BaseException] = []
    slow_to_pass = HealthCheck(interval=0.2, healthy_threshold=100)
    state, _ = dag_run(
        "dd_test_health_sensor_deferred_deadline",
        errors,
        addresses=[healthy_app.address],
        check=slow_to_pass,
        deferrable=True,
        timeout=1,
    )
    assert state == "failed"
    [error] = errors
    assert type(error).__name__ == "AirflowSensorTimeout"
    assert "was not healthy within" in str(error) and slow_to_pass.describe() in str(error)
