"""Deployment operators: thin adapters over docker_delivery.strategies.

Every operator deploys a digest-pinned image (usually the build task's XCom) to one service in
one environment, health-gated, behind the service's HAProxy router (started on first use, or an
existing HAProxy given by a ``haproxy`` connection). Settings are validated when the DAG is
parsed; the image and environment variables when the task runs, before anything changes. A
retry (or a cleared task) looks at the running containers and the router and carries on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from typing import Any

from airflow.sdk import BaseOperator, Context

from docker_delivery.health import HealthCheck
from docker_delivery.hooks.engine import engine_client
from docker_delivery.routing.service import RouterSettings
from docker_delivery.strategies.min_in_service import MinimumInService
from docker_delivery.strategies.rolling import Rolling
from docker_delivery.targets.swarm import UpdatePolicy


class _DeployOperator(BaseOperator):
    template_fields: Sequence[str] = ("image", "service", "environment", "env", "router_port")
    ui_color = "#fde68a"

    def __init__(
        self,
        *,
        service: str,
        environment: str,
        image: str,
        env: Mapping[str, str] | None = None,
        app_port: int = 8080,
        health_check: HealthCheck | Mapping[str, Any] | None = None,
        router_port: int | str | None = None,
        router_image: str = "haproxy:lts",
        router_slots: int = 16,
        haproxy_conn_id: str | None = None,
        stop_grace: float = 30.0,
        lock_wait: float = 0.0,
        plan_only: bool = False,
        docker_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.service = service
        self.environment = environment
        self.image = image
        self.env = dict(env or {})
        self.app_port = app_port
        check = health_check or HealthCheck(port=app_port)
        self.health_check = check if isinstance(check, HealthCheck) else HealthCheck(**check)
        if router_port is None and haproxy_conn_id is None:
            raise ValueError("give router_port (a router is started) or haproxy_conn_id")
        self.router_port = router_port
        self.router_image = router_image
        self.router_slots = router_slots
        if isinstance(router_port, int):
            self._router_settings()  # validates now, at parse time
        self.haproxy_conn_id = haproxy_conn_id
        self.stop_grace = stop_grace
        self.lock_wait = lock_wait
        self.plan_only = plan_only
        self.docker_url = docker_url

    def _router_settings(self) -> RouterSettings | None:
        if self.router_port is None:
            return None
        return RouterSettings(
            port=int(self.router_port), image=self.router_image, slots=self.router_slots
        )

    def strategy(self) -> Any:
        raise NotImplementedError

    def hold(self, stage: int) -> None:
        """Between stages; rolling deployments may wait for a continue here."""

    def execute(self, context: Context) -> dict[str, Any]:
        from docker_delivery.hooks.haproxy import HaproxyHook
        from docker_delivery.strategies.deploy import deploy
        from docker_delivery.targets.base import Release

        release = Release.of(
            self.service,
            self.environment,
            self.image,
            port=self.app_port,
            env=self.env,
            stop_grace=self.stop_grace,
        )
        settings = self._router_settings()
        router = settings or HaproxyHook(self.haproxy_conn_id or "haproxy_default").get_router()
        ti = context["ti"]
        owner = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}"
        with closing(engine_client(self.docker_url)) as client:
            result = deploy(
                client,
                release,
                self.strategy(),
                router=router,
                check=self.health_check,
                owner=owner,
                lock_wait=self.lock_wait,
                dry_run=self.plan_only,
                hold=self.hold,
                log=self.log.info,
            )
        out = result.as_dict()
        if settings is not None:
            out["url"] = settings.url
            self.log.info("%s/%s answers at %s", self.service, self.environment, out["url"])
        return out


class MinimumInServiceDeployOperator(_DeployOperator):
    """Replace ``replicas`` containers on one engine in batches, keeping ``min_in_service``."""

    def __init__(
        self,
        *,
        replicas: int,
        min_in_service: int,
        batch_sizes: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = MinimumInService(
            replicas, min_in_service, tuple(batch_sizes) if batch_sizes else None
        )

    def strategy(self) -> MinimumInService:
        return self.settings


class RollingDeployOperator(_DeployOperator):
    """Staged rolling deployment on Docker Swarm (see docker_delivery.strategies.rolling).

    ``pause``: seconds between stages. ``continue_variable``: between stages, wait until that
    Airflow Variable holds a number >= the next stage (a human or another task sets it).
    ``until_stage``: stop after that stage; a later run of this operator carries on.
    """

    def __init__(
        self,
        *,
        replicas: int,
        stages: Sequence[int | str] = ("100%",),
        pause: float = 0.0,
        failure_action: str = "rollback",
        until_stage: int | None = None,
        continue_variable: str | None = None,
        update_config: Mapping[str, Any] | None = None,
        rollback_config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = Rolling(
            replicas,
            tuple(stages),
            pause,
            failure_action,  # type: ignore[arg-type]
            until_stage,
            UpdatePolicy(**(update_config or {})),
            UpdatePolicy(**(rollback_config or {})),
        )
        self.continue_variable = continue_variable

    def strategy(self) -> Rolling:
        return self.settings

    def hold(self, stage: int) -> None:
        if self.continue_variable is None:
            return
        from airflow.sdk import Variable

        self.log.info(
            "holding after stage %d: set Variable %s to %d to continue",
            stage,
            self.continue_variable,
            stage + 1,
        )
        while int(Variable.get(self.continue_variable, default="0") or 0) < stage + 1:
            time.sleep(5)
