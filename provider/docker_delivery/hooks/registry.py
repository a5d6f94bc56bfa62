"""RegistryHook: an Airflow connection of the docker provider's ``docker`` type -> RegistryClient.

The connection's host is the registry (``127.0.0.1:5000``, ``https://ghcr.io``), its login and
password the credentials. Airflow masks connection passwords in task logs; the client never logs
them, and nothing here puts them in XCom.

An Amazon ECR registry (``<account>.dkr.ecr.<region>.amazonaws.com``) needs no login: its tags
move through ECR's API and its OCI API takes ECR's authorization tokens, both through the ``aws``
connection the docker connection's extra names (``{"aws_conn_id": "..."}``), else
``aws_default``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from docker_delivery.images.registry import RegistryClient


class RegistryHook(BaseHook):
    conn_name_attr = "docker_conn_id"
    default_conn_name = "docker_default"
    conn_type = "docker"
    hook_name = "Docker registry (docker-delivery)"

    def __init__(self, docker_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.docker_conn_id = docker_conn_id

    def get_client(self, registry: str, **options: Any) -> RegistryClient:
        """A client for ``registry``; credentials from the connection when its host matches."""
        from docker_delivery.images.registry import RegistryClient
        from docker_delivery.images.registry.ecr import ecr_registry

        if (ecr := ecr_registry(registry)) is not None:
            return self._ecr_client(registry, ecr.account, ecr.region, **options)
        if self.docker_conn_id is None:
            return RegistryClient(registry, log=self.log.info, **options)
        conn = self.get_connection(self.docker_conn_id)
        host = (conn.host or "").split("://", 1)[-1].rstrip("/")
        if conn.port and ":" not in host:
            host = f"{host}:{conn.port}"
        scheme = conn.host.split("://", 1)[0] if conn.host and "://" in conn.host else None
        if host and host != registry:
            self.log.info(
                "connection %s is for %s, not %s: anonymous", self.docker_conn_id, host, registry
            )
            return RegistryClient(registry, log=self.log.info, **options)
        return RegistryClient(
            registry,
            username=conn.login or None,
            password=conn.password or None,
            scheme=scheme,
            log=self.log.info,
            **options,
        )

    def _ecr_client(
        self, registry: str, account: str, region: str, **options: Any
    ) -> RegistryClient:
        from docker_delivery.hooks.aws import DEFAULT_AWS_CONN_ID, aws_client, ecr_login
        from docker_delivery.images.registry.ecr import EcrRegistryClient

        aws_conn_id = DEFAULT_AWS_CONN_ID
        if self.docker_conn_id is not None:
            extra = self.get_connection(self.docker_conn_id).extra_dejson
            aws_conn_id = extra.get("aws_conn_id") or DEFAULT_AWS_CONN_ID
        self.log.info("registry %s is Amazon ECR: through connection %s", registry, aws_conn_id)
        return EcrRegistryClient(
            registry,
            aws_client("ecr", aws_conn_id, region),
            credentials=ecr_login(aws_conn_id, region, account),
            log=self.log.info,
            **options,
        )
