"""RolloutCompleteSensor: wait until a digest takes all of a service's public traffic."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import closing
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout

from docker_delivery.hooks.engine import engine_client


class RolloutCompleteSensor(BaseSensorOperator):
    """Succeed when ``replicas`` instances of ``image``'s digest are ready and up in the backend
    the service's public frontend routes to, and no other digest is ready there (see
    :mod:`docker_delivery.strategies.rollout`); Engine and Swarm targets alike.

    ``image`` (templated) is a digest-pinned reference or a bare ``sha256:`` digest, usually the
    build task's XCom. Each poke logs ``k/N updated``; the task returns the status (XCom). With
    ``deferrable=True`` (default: ``[operators] default_deferrable``) the wait runs in the
    triggerer until ``timeout``. Nothing is changed.
    """

    template_fields: Sequence[str] = ("service", "environment", "image", "replicas")
    ui_color = "#e0f2fe"

    def __init__(
        self,
        *,
        service: str,
        environment: str,
        image: str,
        replicas: int | str,
        app_port: int = 8080,
        docker_url: str | None = None,
        engine_conn_id: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: timedelta | float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.service = service
        self.environment = environment
        self.image = image
        self.replicas = replicas
        self.app_port = app_port
        self.docker_url = docker_url
        self.engine_conn_id = engine_conn_id
        self.deferrable = deferrable

    def poke(self, context: Context) -> PokeReturnValue:
        from docker_delivery.strategies.rollout import rollout_status

        with closing(engine_client(self.docker_url, engine_conn_id=self.engine_conn_id)) as client:
            status = rollout_status(
                client,
                self.service,
                self.environment,
                self.image,
                replicas=int(self.replicas),
                port=self.app_port,
                log=self.log.info,
            )
        self.log.info("%s", status.describe())
        return PokeReturnValue(status.complete, status.as_dict() if status.complete else None)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        from docker_delivery.strategies.rollout import check_digest
        from docker_delivery.triggers.rollout import RolloutCompleteTrigger

        trigger = RolloutCompleteTrigger(
            self.service,
            self.environment,
            check_digest(self.image),
            int(self.replicas),
            port=self.app_port,
            docker_url=self.docker_url,
            engine_conn_id=self.engine_conn_id,
            poll_s=self.poke_interval,
            deadline_s=self.timeout,
            started_at=time.time(),
        )
        backstop = timedelta(seconds=self.timeout + 60)  # the trigger ends at its own deadline
        self.defer(trigger=trigger, method_name="execute_complete", timeout=backstop)

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if not event:
            raise AirflowException("no event from the rollout trigger")
        if event.get("status") == "incomplete":
            raise AirflowSensorTimeout(str(event.get("message")))
        if event.get("status") != "complete":
            raise AirflowException(str(event.get("message")))
        self.log.info("%s", event.get("message"))
        return dict(event.get("rollout") or {})
