"""ApplyInfraOperator: an environment's replicas, env variables, secrets, networks and limits made
to match its spec (docker_delivery.infra); the plan is logged and returned masked. Secrets are read
at run time (Airflow connections, variables, AWS Secrets Manager) and masked in logs at once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import closing
from typing import Any

from airflow.sdk import BaseOperator, Context

from docker_delivery.hooks.engine import engine_client
from docker_delivery.hooks.secrets import read_secret
from docker_delivery.operators.common import lock_owner, says_when_nothing_changed
from docker_delivery.spec import SecretRef, ServiceSpec, load_spec
from docker_delivery.targets.engine_errors import engine_calls


class ApplyInfraOperator(BaseOperator):
    """Plan, then apply, ``environment``'s spec (a YAML path or text, a mapping, or a
    ServiceSpec); the running digest never changes. Returns ``{"plan": ..., "result": ...}``."""

    template_fields: Sequence[str] = ("spec", "environment")
    ui_color = "#c7d2fe"

    def __init__(
        self,
        *,
        spec: str | ServiceSpec | Mapping[str, Any],
        environment: str,
        plan_only: bool = False,
        docker_url: str | None = None,
        engine_conn_id: str | None = None,
        lock_wait: float = 0.0,
        aws_conn_id: str = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(spec, str) and "{{" not in environment:
            load_spec(spec).environment(environment)  # validates now, at parse time
        if isinstance(spec, ServiceSpec):  # plain data, as DAG serialization wants
            spec = spec.model_dump(by_alias=True, exclude_unset=True)
        self.spec = spec
        self.environment = environment
        self.plan_only = plan_only
        self.docker_url = docker_url
        self.engine_conn_id = engine_conn_id
        self.lock_wait = lock_wait
        self.aws_conn_id = aws_conn_id

    def resolve_secret(self, ref: SecretRef) -> str:
        return read_secret(ref, aws_conn_id=self.aws_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        from docker_delivery.infra import apply_spec

        spec = load_spec(self.spec)
        engine = self.engine_conn_id or spec.environment(self.environment).engine
        with (
            closing(engine_client(self.docker_url, engine_conn_id=engine)) as client,
            says_when_nothing_changed(context),
            engine_calls(f"applying the infrastructure of {self.environment}"),
        ):
            planned, result = apply_spec(
                client,
                spec,
                self.environment,
                owner=lock_owner(context),
                resolve_secret=self.resolve_secret,
                lock_wait=self.lock_wait,
                plan_only=self.plan_only,
                log=self.log.info,
            )
        out: dict[str, Any] = {"plan": planned.as_dict()}
        if result is not None:
            out["result"] = result.as_dict()
        return out
