"""ServiceHealthySensor: wait until a service's instances (or its router frontend) are healthy."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, conf

# The same classes airflow.exceptions re-exports (it warns for AirflowSensorTimeout).
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout

from docker_delivery.health import HealthCheck, parse_addresses, probe


class ServiceHealthySensor(BaseSensorOperator):
    """Succeed when every address answers ``check``'s health endpoint with the expected status.

    ``addresses`` (templated) are ``host:port`` of instances or of a router frontend: a list, or a
    string with one address, several separated by commas, or a rendered list. ``check`` is a
    :class:`~docker_delivery.health.HealthCheck` or its dict form.

    Poke and reschedule modes probe each address once per poke (every ``poke_interval``, which
    defaults to ``check.interval``) and succeed on the first poke where all pass, until
    ``timeout``. With ``deferrable=True`` (default: ``[operators] default_deferrable``) the wait
    runs in the triggerer with the check's full
    semantics (``healthy_threshold`` passes in a row, ``unhealthy_threshold`` failures fail the
    task at once, deadline ``timeout``); the task then returns the reports (XCom).
    """

    template_fields: Sequence[str] = ("addresses",)
    ui_color = "#e0f2fe"

    def __init__(
        self,
        *,
        addresses: list[str] | str,
        check: HealthCheck | dict[str, Any] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: timedelta | float | None = None,
        **kwargs: Any,
    ) -> None:
        self.check = check if isinstance(check, HealthCheck) else HealthCheck.from_dict(check or {})
        interval = self.check.interval if poke_interval is None else poke_interval
        super().__init__(poke_interval=interval, **kwargs)
        self.addresses = addresses
        self.deferrable = deferrable

    def poke(self, context: Context) -> bool:
        addresses = parse_addresses(self.addresses)
        results = {address: probe(address, self.check) for address in addresses}
        failing = {a: r.detail for a, r in results.items() if not r.ok}
        if failing:
            self.log.info("Not healthy yet (%s): %s", self.check.describe(), failing)
        else:
            self.log.info("Healthy: %s (%s)", ", ".join(addresses), self.check.describe())
        return not failing

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        from docker_delivery.triggers.health import ServiceHealthyTrigger

        trigger = ServiceHealthyTrigger(
            addresses=parse_addresses(self.addresses),
            check=self.check,
            deadline_s=self.timeout,
            started_at=time.time(),
        )
        # The trigger ends at its own deadline; Airflow's timeout is a backstop for a lost trigger.
        backstop = timedelta(seconds=self.timeout + self.check.timeout + 60)
        self.defer(trigger=trigger, method_name="execute_complete", timeout=backstop)

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        if not event:
            raise AirflowException(f"no event from the health trigger ({self.check.describe()})")
        if event.get("status") != "healthy":
            message = str(event.get("message") or f"unhealthy: {self.check.describe()}")
            if event.get("reason") == "deadline":
                raise AirflowSensorTimeout(message)
            raise AirflowException(message)
        self.log.info("%s", event.get("message"))
        return list(event.get("reports") or [])
