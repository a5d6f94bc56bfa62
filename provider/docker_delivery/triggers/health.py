"""ServiceHealthyTrigger: the deferred wait of ServiceHealthySensor, run by Airflow's triggerer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from docker_delivery.errors import DeliveryError
from docker_delivery.health import HealthCheck, Unhealthy, wait_all_healthy


class ServiceHealthyTrigger(BaseTrigger):
    """Wait until every address passes ``check``; fire one event and finish.

    ``deadline_s`` counts from ``started_at`` (Unix time, when the task deferred), so a trigger
    that is re-created on another triggerer keeps the original deadline. The event payload is
    ``{"status": "healthy" | "unhealthy", "reason": ..., "message": ..., "reports": [...]}``;
    ``reason`` is None when healthy, else ``"unhealthy"``, ``"exited"`` or ``"deadline"``.
    """

    def __init__(
        self,
        addresses: list[str],
        check: HealthCheck | dict[str, Any],
        deadline_s: float,
        started_at: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.addresses = list(addresses)
        self.check = check if isinstance(check, HealthCheck) else HealthCheck.from_dict(check)
        self.deadline_s = float(deadline_s)
        self.started_at = time.time() if started_at is None else float(started_at)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "docker_delivery.triggers.health.ServiceHealthyTrigger",
            {
                "addresses": self.addresses,
                "check": self.check.to_dict(),
                "deadline_s": self.deadline_s,
                "started_at": self.started_at,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        remaining = self.deadline_s - (time.time() - self.started_at)
        if remaining <= 0:
            yield self._event(
                "unhealthy",
                "deadline",
                f"{', '.join(self.addresses)}: the deadline of {self.deadline_s:g}s passed before "
                f"the health check could run: {self.check.describe()}",
                [],
            )
            return
        try:
            reports = await wait_all_healthy(
                self.addresses, self.check, deadline=remaining, log=self.log.info
            )
        except Unhealthy as exc:
            yield self._event("unhealthy", exc.reason, str(exc), [exc.report.to_dict()])
            return
        except DeliveryError as exc:  # invalid addresses or settings
            yield self._event("unhealthy", "invalid", str(exc), [])
            return
        message = f"{len(reports)} address(es) healthy: {self.check.describe()}"
        yield self._event("healthy", None, message, [r.to_dict() for r in reports])

    @staticmethod
    def _event(
        status: str, reason: str | None, message: str, reports: list[dict[str, Any]]
    ) -> TriggerEvent:
        payload = {"status": status, "reason": reason, "message": message, "reports": reports}
        return TriggerEvent(payload)  # type: ignore[no-untyped-call]
