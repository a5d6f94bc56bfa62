"""DriftSensor: two environments of a service compared with each other and with their spec."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import closing
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue

from docker_delivery.hooks.engine import engine_client
from docker_delivery.spec import SecretRef, ServiceSpec, load_spec


class DriftSensor(BaseSensorOperator):
    """Succeed when ``environments`` (two names) differ only as their spec declares ("keep your
    environments similar"), and each runs as its own spec says (docker_delivery.infra.drift).

    Each poke logs the report (secret values never appear: they are compared by fingerprint);
    the task returns it (XCom). Drift that lasts until ``timeout`` fails the task with the
    report; give a short ``timeout`` to use it as a check, ``soft_fail=True`` to only warn.
    Nothing is changed: ApplyInfraOperator puts an environment back to its spec.
    """

    template_fields: Sequence[str] = ("spec", "environments")
    ui_color = "#fde2e4"

    def __init__(
        self,
        *,
        spec: str | ServiceSpec | Mapping[str, Any],
        environments: Sequence[str],
        docker_url: str | None = None,
        engine_conn_id: str | None = None,
        aws_conn_id: str = "aws_default",
        poke_interval: timedelta | float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        if len(environments) != 2:
            raise ValueError(f"environments: give two names to compare, not {environments!r}")
        if not isinstance(spec, str):
            loaded = load_spec(spec)
            for name in environments:
                loaded.environment(name)  # validates now, at parse time
        if isinstance(spec, ServiceSpec):  # plain data, as DAG serialization wants
            spec = spec.model_dump(by_alias=True, exclude_unset=True)
        self.spec = spec
        self.environments = list(environments)
        self.docker_url = docker_url
        self.engine_conn_id = engine_conn_id
        self.aws_conn_id = aws_conn_id

    def _secret(self, ref: SecretRef) -> str:
        from docker_delivery.hooks.secrets import read_secret

        return read_secret(ref, aws_conn_id=self.aws_conn_id)

    def poke(self, context: Context) -> PokeReturnValue:
        from docker_delivery.infra import drift

        env_a, env_b = self.environments
        with closing(engine_client(self.docker_url, engine_conn_id=self.engine_conn_id)) as client:
            report = drift(client, load_spec(self.spec), env_a, env_b, resolve_secret=self._secret)
        self.log.info("%s", report.describe())
        return PokeReturnValue(not report.drifted, report.as_dict())
