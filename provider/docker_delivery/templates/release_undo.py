"""Going back by a release's id, with its release file: what ``docker-delivery rollback
--release ID`` and RollbackReleaseOperator share.

The ledger gives the release's records (which services, which digests, what ran before); the
release file gives how each service is reached in that environment (engine connection, router,
health check) and its migrations (for the contract check). Airflow is imported only for the
connections the specs name (engines, databases). The rollback is recorded in the ledger: one
unplanned ``rollback`` record per service moved, with the release id ``<ID>.rollback``; each
service's environment tag moves back with it (it names what serves there).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from docker_delivery.errors import RollbackImpossible
from docker_delivery.images.ref import ImageRef
from docker_delivery.ledger import DeploymentRecord, Ledger
from docker_delivery.strategies.base import Log
from docker_delivery.templates.pipeline_spec import PipelineSpec
from docker_delivery.templates.release_spec import ReleaseSpec

__all__ = ["undo_release"]


def undo_release(
    rs: ReleaseSpec,
    release_id: str,
    ledger: Ledger,
    *,
    owner: str,
    dag_id: str,
    run_id: str,
    docker_url: str | None = None,
    lock_wait: float = 0.0,
    dry_run: bool = False,
    log: Log = print,
    client_for: Callable[[str | None], Any] | None = None,
) -> list[dict[str, Any]]:
    """Every service of the release ``release_id`` back to what served before it, the last
    first; RollbackImpossible (nothing changed) when one cannot go back. ``client_for(conn_id)``
    makes an engine client (default: the ``docker_engine`` connection, else ``docker_url``)."""
    from docker_delivery.strategies.release_rollback import roll_back_release
    from docker_delivery.strategies.rollback import roll_back
    from docker_delivery.strategies.state import list_running

    records = ledger.release(release_id)
    specs = {p.service: p for p in rs.pipelines.values()}
    missing = sorted({r.service for r in records} - set(specs))
    if missing:
        raise RollbackImpossible(
            f"the release {release_id} has {', '.join(missing)}, which the release file "
            f"{rs.origin} does not name: give the release file it was delivered from"
        )
    if client_for is None:

        def client_for(conn_id: str | None) -> Any:
            from docker_delivery.hooks.engine import engine_client

            if conn_id:
                return engine_client(docker_url, engine_conn_id=conn_id, timeout=60)
            import docker

            if docker_url:
                return docker.DockerClient(base_url=docker_url, timeout=60)
            return docker.from_env(timeout=60)

    with ExitStack() as stack:
        clients: dict[str | None, Any] = {}

        def client(r: DeploymentRecord) -> Any:
            conn = specs[r.service].environments[r.environment].engine
            if conn not in clients:
                clients[conn] = client_for(conn)
                stack.callback(clients[conn].close)
            return clients[conn]

        def wiring(r: DeploymentRecord) -> dict[str, Any]:
            spec = specs[r.service]
            return {
                "router": spec.router_for(r.environment),
                "check": spec.health_check_for(r.environment),
                "owner": owner,
            }

        def live_digest(r: DeploymentRecord) -> str | None:
            try:
                plan = roll_back(
                    client(r), r.service, r.environment, dry_run=True, log=lambda _: None,
                    **wiring(r),
                )  # fmt: skip
                return plan.from_digest
            except RollbackImpossible:  # nothing ran before what serves: read what serves
                port = specs[r.service].health_check_for(r.environment).port
                running = list_running(client(r), r.service, r.environment, port)
                digests = {x.digest for x in running}
                return digests.pop() if len(digests) == 1 else None

        def check_contract(r: DeploymentRecord) -> None:
            _check_contract(specs[r.service], r, client(r), owner, log)

        def roll_back_one(r: DeploymentRecord) -> Any:
            started = dt.datetime.now(dt.timezone.utc)
            result = roll_back(
                client(r), r.service, r.environment, lock_wait=lock_wait, log=log,
                to_digest=r.previous_digest, **wiring(r),
            )  # fmt: skip
            back = ImageRef.parse(specs[r.service].repository).with_digest(result.to_digest)
            _tag_back(specs[r.service], client(r), back, r.environment, owner, lock_wait, log)
            ledger.record(
                DeploymentRecord(
                    service=r.service, environment=r.environment,
                    digest=result.to_digest, previous_digest=result.from_digest,
                    image=str(back), deployment_type="rollback", outcome="success",
                    started_at=started, finished_at=dt.datetime.now(dt.timezone.utc),
                    revision=None, committed_at=None, dag_id=dag_id, run_id=run_id,
                    approved_by=None, approval=None,
                    detail=f"the release {release_id} rolled back by {owner}"[:500],
                    release_id=f"{release_id}.rollback",
                )
            )  # fmt: skip
            return result

        return roll_back_release(
            release_id,
            records,
            live_digest=live_digest,
            roll_back_one=roll_back_one,
            check_contract=check_contract,
            dry_run=dry_run,
            log=log,
        )


def _tag_back(
    spec: PipelineSpec,
    client: Any,
    image: ImageRef,
    environment: str,
    owner: str,
    lock_wait: float,
    log: Log,
) -> None:
    """The environment tag moved back to ``image``, which serves again (it names what serves
    there; the next environment's require_previous reads it)."""
    from docker_delivery.images.registry import RegistryClient
    from docker_delivery.strategies.release_tag import promote_serving

    if spec.pipeline.docker_conn_id:  # the registry's credentials: an Airflow connection
        from docker_delivery.hooks.registry import RegistryHook

        store = RegistryHook(spec.pipeline.docker_conn_id).get_client(image.registry)
    else:
        store = RegistryClient(image.registry, log=log)
    with store:
        promote_serving(
            client, store, image, environment, service=spec.service,
            port=spec.health_check_for(environment).port, owner=owner, lock_wait=lock_wait,
            log=log,
        )  # fmt: skip


def _check_contract(
    spec: PipelineSpec, record: DeploymentRecord, client: Any, owner: str, log: Log
) -> None:
    """RollbackPastContract when the service's previous release predates a contract migration
    its database has (only for services with ``pipeline.migrations``)."""
    m = spec.pipeline.migrations
    if m is None or record.previous_digest is None:
        return
    from docker_delivery.hooks.database import database_from_connection
    from docker_delivery.migrations import MigrationRunner, MigrationSpec

    image = ImageRef.parse(spec.repository).with_digest(record.previous_digest)
    kwargs: dict[str, Any] = {"image": str(image), "phase": "expand"}
    if m.status_command is not None:
        kwargs["status_command"] = tuple(m.status_command)
    MigrationRunner(client, log, owner=owner).check_rollback(
        MigrationSpec(**kwargs), database_from_connection(m.database_conn_id)
    )
