"""ABBakeTrigger: an A/B step's bake, run by the triggerer while ABDeployOperator holds no worker
slot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from docker_delivery.errors import DeliveryError
from docker_delivery.strategies.ab_analysis import (
    BakeReport,
    StepBake,
    judge,
    send_back_to_a,
    under_way,
)
from docker_delivery.strategies.settings import ABTest

if TYPE_CHECKING:
    from docker_delivery.routing.haproxy import HaproxyRouter

READ_ERRORS_TOLERATED = 5  # reads of the router in a row that may fail before the bake gives up


class ABBakeTrigger(BaseTrigger):
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

    def _router(self) -> tuple[HaproxyRouter, Any]:
        """The router and the engine client to close after (None for a connection's HAProxy)."""
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

    def _report(self, verdict: str, figures: dict[str, Any], message: str) -> TriggerEvent:
        report = BakeReport(verdict, self.bake, figures, message)  # type: ignore[arg-type]
        return TriggerEvent(report.as_dict())  # type: ignore[no-untyped-call]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        where = f"{self.service}/{self.environment}"
        step = f"step {self.bake.number} ({self.bake.weight}%)"
        try:
            router, client = await asyncio.to_thread(self._router)
        except Exception as exc:  # the engine or the connection: the task says what to do
            yield self._report("error", {}, f"{type(exc).__name__}: {exc}")
            return
        self.log.info("%s: baking %s for %gs", where, step, self.settings.bake_time)
        failures = 0
        try:
            while True:
                try:
                    if not await asyncio.to_thread(under_way, router):
                        routes = await asyncio.to_thread(router.routes)
                        message = f"public routes to {routes.get('public')!r}, not ab"
                        yield self._report("ended", {}, message)
                        return
                    stats = await asyncio.to_thread(router.stats, "ab")
                    failures = 0
                except Exception as exc:
                    failures += 1
                    self.log.warning("%s: reading the router failed (%d): %s", where, failures, exc)
                    if failures >= READ_ERRORS_TOLERATED:
                        yield self._report("error", {}, f"{type(exc).__name__}: {exc}")
                        return
                    await asyncio.sleep(self.settings.poll)
                    continue
                figures = judge(self.settings, self.bake, stats)
                if figures["verdict"] == "failed":
                    try:
                        await asyncio.to_thread(send_back_to_a, router, self.bake)
                    except Exception as exc:  # the resumed task's abort routes it again
                        self.log.warning("%s: routing public back to A failed: %s", where, exc)
                    self.log.info(
                        "%s: %s failed: %s; public -> %s", where, step, figures["failed"],
                        self.bake.home,
                    )  # fmt: skip
                    yield self._report("failed", figures, str(figures["failed"]))
                    return
                if figures["verdict"] == "passed":
                    self.log.info(
                        "%s: %s passed: B %d requests, %d 5xx", where, step,
                        figures["b_requests"], figures["b_5xx"],
                    )  # fmt: skip
                    yield self._report("passed", figures, "")
                    return
                await asyncio.sleep(self.settings.poll)
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
