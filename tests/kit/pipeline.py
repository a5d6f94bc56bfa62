"""Test helper: running a pipeline DAG in Airflow as its services would, within the test
process: register it as the DAG processor does, read its task states, fail a task as a lost
worker's heartbeat timeout does, clear it as the UI's "Clear" does, and carry the run on as the
scheduler does."""

from __future__ import annotations

import time
from typing import Any


def register(dag: Any) -> None:
    """Write ``dag`` to the metadata database as the DAG processor would (its bundle first)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


def states(dag_id: str, run_id: str) -> dict[str, tuple[str, int]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id).all()
        return {ti.task_id: (str(ti.state), ti.try_number) for ti in tis}


def heartbeat_timeout(dag_id: str, run_id: str, task_id: str) -> None:
    """What the scheduler does to a running task whose worker stopped heartbeating (after
    ``task_instance_heartbeat_timeout``): the task fails (a deploy has no automatic retry)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id)
        ti.one().state = TaskInstanceState.FAILED


def clear_like_the_ui(dag_id: str, run_id: str, task_id: str) -> list[str]:
    """What POST /dags/{dag_id}/clearTaskInstances does for the UI's Clear of one task
    instance of a run, with its downstream tasks (airflow.api_fastapi...task_instances)."""
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import clear_task_instances, find_relevant_relatives
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        dag_run = session.query(DagRun).filter_by(dag_id=dag_id, run_id=run_id).one()
        dag = DBDagBag().get_dag_for_run(dag_run, session=session)
        assert dag is not None
        task_ids = {task_id}
        task_ids.update(
            str(t)
            for t in find_relevant_relatives(
                task_ids, set(), dag=dag, run_id=run_id, direction="downstream", session=session
            )
        )
        tis = dag.clear(dry_run=True, task_ids=list(task_ids), run_id=run_id, session=session)
        clear_task_instances(list(tis), session, DagRunState.QUEUED)
        return sorted(ti.task_id for ti in tis)


def carry_on(dag: Any, run_id: str, timeout: float = 600) -> str:
    """Run the run's schedulable tasks until it ends: the loop of ``dag.test()``, on an existing
    run (what the scheduler does with a run a Clear set back to queued)."""
    from airflow.models.dagrun import DagRun
    from airflow.sdk.definitions.dag import _run_task
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState

    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    deadline = time.monotonic() + timeout
    with create_session() as session:
        dr = session.query(DagRun).filter_by(dag_id=dag.dag_id, run_id=run_id).one()
        dr.dag = scheduler_dag
        dr.state = DagRunState.RUNNING
        session.commit()
        while dr.state == DagRunState.RUNNING and time.monotonic() < deadline:
            session.expire_all()
            schedulable, _ = dr.update_state(session=session)
            for ti in schedulable:
                if ti.state != TaskInstanceState.UP_FOR_RESCHEDULE:
                    ti.try_number += 1
                ti.state = TaskInstanceState.SCHEDULED
            session.commit()
            scheduled = [
                ti
                for ti in dr.get_task_instances(session=session)
                if ti.state == TaskInstanceState.SCHEDULED
            ]
            if not scheduled:
                time.sleep(0.5)
            for ti in scheduled:
                _run_task(ti=ti, task=dag.task_dict[ti.task_id], run_triggerer=True)
        return str(dr.state)


def one_stage_pipeline(
    bed: Any, service: str, env: str, ledger: Any, *, dag_id: str, **environment: Any
) -> dict[str, Any]:
    """A pipeline spec of the demo app with one stage, ``env``: minimum in-service or (the run's
    choice) blue/green, then a smoke test that /version serves the digest. ``environment``: what
    the environment adds (e.g. ``engine``); its router gets free ports."""
    from pathlib import Path

    from kit.loadgen import free_port

    health = {"interval": 0.25, "unhealthy_threshold": 2, "timeout": 1.0, "start_period": 5}
    return {
        "service": service,
        "image": f"{bed.registry}/dd-test/demo-app",
        "defaults": {
            "replicas": 2,
            "stop_grace": 5,
            "env": {"EXIT_ON_SIGTERM_IMMEDIATELY": "1"},
            "health_check": health,
            "router": {"image": bed.haproxy_image, "check_interval_ms": 500, "slots": 4},
        },
        "environments": {
            env: {"router": {"port": free_port(), "preview_port": free_port()}, **environment}
        },
        "pipeline": {
            "dag_id": dag_id,
            "mode": "continuous_deployment",
            "ledger": str(ledger),
            "build": {"context": str(Path(__file__).resolve().parents[2] / "dags" / "demo_app")},
            "stages": [
                {
                    "environment": env,
                    "deploy": {"type": "min_in_service", "min_in_service": 1},
                    "alternatives": [{"type": "blue_green", "scale_down_delay": 0}],
                    "verify": {
                        "smoke": [
                            {"name": "version", "http": {"path": "/version", "expect_digest": True}}
                        ]
                    },
                }
            ],
        },
    }


def pipeline_dag_file(folder: Any, name: str, data: dict[str, Any]) -> Any:
    """``data`` written as ``<name>.yaml`` in ``folder`` (made if missing), beside a DAG file
    ``<name>_delivery.py`` that builds it with ``delivery_pipeline``, as a user's DAG folder
    holds them ("airflow" and "dag" in its text: Airflow's safe mode reads it). The DAG file."""
    from pathlib import Path

    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    dag = folder / f"{name}_delivery.py"
    dag.write_text(
        f'"""Airflow DAG of the pipeline spec {name}.yaml."""\n\n'
        "from pathlib import Path\n\n"
        "from docker_delivery.templates import delivery_pipeline\n\n"
        f'dag = delivery_pipeline(Path(__file__).parent / "{name}.yaml")\n'
    )
    return dag


RELEASE_HEALTH = {"interval": 0.25, "unhealthy_threshold": 2, "timeout": 1.0, "start_period": 5}


def release_service(
    bed: Any,
    name: str,
    where: str,
    deploy: dict[str, Any],
    /,
    *,
    replicas: int = 2,
    smoke: bool = True,
    pipeline: dict[str, Any] | None = None,
    **environment: Any,
) -> dict[str, Any]:
    """A pipeline spec of the demo app as ``name``, one stage ``where`` delivered by ``deploy``
    (what a release's service file holds); its router on this machine's loopback.
    ``environment``: what the environment sets (router ports, env, networks); ``pipeline``:
    what the pipeline section adds (migrations)."""
    from pathlib import Path

    stage: dict[str, Any] = {"environment": where, "deploy": deploy}
    if smoke:
        stage["verify"] = {
            "smoke": [{"name": "version", "http": {"path": "/version", "expect_digest": True}}]
        }
    router = {"image": bed.haproxy_image, "check_interval_ms": 500, "slots": 4,
              "address": "127.0.0.1"}  # fmt: skip
    return {
        "service": name,
        "image": f"{bed.registry}/dd-test/demo-app",
        "defaults": {
            "replicas": replicas,
            "stop_grace": 5,
            "health_check": RELEASE_HEALTH,
            "router": router,
        },
        "environments": {where: environment},
        "pipeline": {
            "mode": "continuous_deployment",
            "build": {"context": str(Path(__file__).resolve().parents[2] / "dags" / "demo_app")},
            "stages": [stage],
            **(pipeline or {}),
        },
    }
