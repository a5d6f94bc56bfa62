"""ABBakeTrigger: an A/B step's bake, run by the triggerer while ABDeployOperator holds no worker
slot."""

from __future__ import annotations

import contextlib
from typing import Any

from airflow.triggers.base import TriggerEvent

from docker_delivery.errors import DeliveryError
from docker_delivery.strategies.ab_analysis import (
    BakeReport,
    StepBake,
    judge,
    send_back_to_a,
    under_way,
)
from docker_delivery.strategies.settings import ABTest
from docker_delivery.triggers.watching import WatchingTrigger


class ABBakeTrigger(WatchingTrigger):
    """Read the service's router (``ab`` backend) every ``settings.poll`` seconds and judge the
    step (:func:`docker_delivery.strategies.ab_analysis.judge`) until it passes or fails; on a
    failure route every client back to A at once (the resumed task removes B). One event: a
    :class:`~docker_delivery.strategies.ab_analysis.BakeReport` as a dict.

    The router is the one the deployment drove: the ``haproxy`` connection ``haproxy_conn_id``,
    or else the service's router container, found through the engine (``docker_url`` /
    ``engine_conn_id``). The bake's clock runs from when its weights were set (``bake``), so a
    trigger re-created on another triggerer keeps it."""

    def __init__(
        self,
        service: str,
        environment: str,
        settings: ABTest | dict[str, Any],
        bake: StepBake | dict[str, Any],
        *,
        docker_url: str | None = None,
        engine_conn_id: str | None = None,
        haproxy_conn_id: str | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.service = service
        self.environment = environment
        self.settings = settings if isinstance(settings, ABTest) else ABTest.of(settings)
        self.bake = bake if isinstance(bake, StepBake) else StepBake.from_dict(bake)
        self.docker_url = docker_url
        self.engine_conn_id = engine_conn_id
        self.haproxy_conn_id = haproxy_conn_id
        self.poll_s = self.settings.poll
        self.what = (
            f"{service}/{environment}: the bake of step {self.bake.number} ({self.bake.weight}%)"
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "docker_delivery.triggers.ab.ABBakeTrigger",
            {
                "service": self.service,
                "environment": self.environment,
                "settings": self.settings.model_dump(mode="json"),
                "bake": self.bake.as_dict(),
                "docker_url": self.docker_url,
                "engine_conn_id": self.engine_conn_id,
                "haproxy_conn_id": self.haproxy_conn_id,
            },
        )

    def open(self) -> tuple[Any, Any]:
        """The router, and the engine client to close after (None for a connection's HAProxy)."""
        if self.haproxy_conn_id:
            from docker_delivery.hooks.haproxy import HaproxyHook

            return HaproxyHook(self.haproxy_conn_id).get_router(), None
        from docker_delivery.hooks.engine import engine_client
        from docker_delivery.routing.service import find_router
        from docker_delivery.targets.engine import network_name

        client = engine_client(self.docker_url, engine_conn_id=self.engine_conn_id)
        network = network_name(self.service, self.environment)
        router = find_router(client, self.service, self.environment, network, log=self.log.info)
        if router is None:
            client.close()
            raise DeliveryError(f"{self.service}/{self.environment} has no router running")
        return router, client

    def close(self, opened: tuple[Any, Any]) -> None:
        if opened[1] is not None:
            with contextlib.suppress(Exception):
                opened[1].close()

    def ended(self, opened: tuple[Any, Any]) -> str | None:
        router = opened[0]
        if under_way(router):
            return None
        return f"public routes to {router.routes().get('public')!r}, not ab"

    def look(self, opened: tuple[Any, Any]) -> tuple[str | None, dict[str, Any], str]:
        figures = judge(self.settings, self.bake, opened[0].stats("ab"))
        return figures["verdict"], figures, str(figures["failed"] or "")

    def send_back(self, opened: tuple[Any, Any]) -> None:
        send_back_to_a(opened[0], self.bake)

    def since(self) -> float:
        return self.bake.elapsed()

    def report(self, verdict: str, figures: dict[str, Any], message: str) -> TriggerEvent:
        report = BakeReport(verdict, self.bake, figures, message)  # type: ignore[arg-type]
        return TriggerEvent(report.as_dict())  # type: ignore[no-untyped-call]
