"""RegistryHook: an Airflow connection of the docker provider's ``docker`` type -> RegistryClient.

The connection's host is the registry (``127.0.0.1:5000``, ``https://ghcr.io``), its login and
password the credentials. Airflow masks connection passwords in task logs; the client never logs
them, and nothing here puts them in XCom.
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
