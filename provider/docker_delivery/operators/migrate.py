"""MigrateDatabaseOperator: migrate a database with the release image, by digest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from docker_delivery.hooks.database import database_from_connection
from docker_delivery.hooks.engine import engine_client
from docker_delivery.migrations import (
    DEFAULT_COMMAND,
    DEFAULT_STATUS_COMMAND,
    Database,
    MigrationRunner,
    MigrationSpec,
    Phase,
)
from docker_delivery.targets.engine_errors import engine_calls


class MigrateDatabaseOperator(BaseOperator):
    """Run the migration ``command`` of the digest-pinned ``image`` against a database.

    ``database_conn_id``: a postgres connection (schema = database name; extras = URL options
    such as sslmode). Its URL reaches the container as a file, never as an environment
    variable, a label or a log line. ``phase``: ``expand`` before the deploy, ``contract``
    after it. Returns the ``MigrationResult`` as a dict (versions before and after, migrations
    applied, phase, digest). See ``docker_delivery.migrations``.
    """

    template_fields: Sequence[str] = ("image", "phase", "command", "env", "database_conn_id")

    def __init__(
        self,
        *,
        image: str,
        database_conn_id: str,
        phase: Phase = "expand",
        command: Sequence[str] = DEFAULT_COMMAND,
        status_command: Sequence[str] = DEFAULT_STATUS_COMMAND,
        env: Mapping[str, str] | None = None,
        timeout: float = 1800,
        lock_wait: float = 600,
        network: str | None = None,
        extra_hosts: Mapping[str, str] | None = None,
        docker_url: str | None = None,
        engine_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.image, self.database_conn_id, self.phase = image, database_conn_id, phase
        self.command, self.status_command = list(command), list(status_command)
        self.env, self.extra_hosts = dict(env or {}), dict(extra_hosts or {})
        self.timeout, self.lock_wait, self.network = timeout, lock_wait, network
        self.docker_url = docker_url
        self.engine_conn_id = engine_conn_id
        self._runner: MigrationRunner | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        spec = MigrationSpec(  # refuses a tag-only image before anything else happens
            image=self.image,
            phase=self.phase,
            command=tuple(self.command),
            status_command=tuple(self.status_command),
            env={str(key): str(value) for key, value in self.env.items()},
            timeout=self.timeout,
            lock_wait=self.lock_wait,
            network=self.network,
            extra_hosts=self.extra_hosts,
        )
        database = self._database()
        ti = context["ti"]
        map_index = ti.map_index if ti.map_index is not None else -1
        owner = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{map_index}"
        self._runner = MigrationRunner(
            engine_client(self.docker_url, engine_conn_id=self.engine_conn_id),
            self.log.info,
            owner=owner,
        )
        with engine_calls(f"migrating with {self.image}"):
            return self._runner.migrate(spec, database).as_dict()

    def _database(self) -> Database:
        return database_from_connection(self.database_conn_id)

    def on_kill(self) -> None:
        if self._runner is not None:
            self._runner.cleanup()
            self._runner.release_lock()
