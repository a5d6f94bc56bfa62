"""HaproxyHook: an Airflow connection of type ``haproxy`` -> HaproxyRouter.

For an HAProxy that runs already (not started by docker-delivery): the connection's host and port
are its Runtime API, a stats socket on TCP with ``level admin``
(``stats socket ipv4@0.0.0.0:9999 level admin``). The Runtime API has no authentication: reach it
over a trusted network only. URI form: ``haproxy://10.0.0.5:9999``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from docker_delivery.routing.haproxy import HaproxyRouter

DEFAULT_PORT = 9999


class HaproxyHook(BaseHook):
    conn_name_attr = "haproxy_conn_id"
    default_conn_name = "haproxy_default"
    conn_type = "haproxy"
    hook_name = "HAProxy Runtime API"

    def __init__(self, haproxy_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.haproxy_conn_id = haproxy_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The form of the provider's info (HAPROXY_FORM), for Airflow before 3.2."""
        from docker_delivery.get_provider_info import HAPROXY_FORM

        return {key.replace("-", "_"): value for key, value in HAPROXY_FORM.items()}

    def get_router(self, **options: Any) -> HaproxyRouter:
        """A HaproxyRouter on the connection's host and port (9999 when the port is empty).

        ``options`` go to HaproxyRouter (``timeout``, ``map_path``, ``slot_prefix``).
        """
        from docker_delivery.routing.haproxy import HaproxyRouter, RouterError

        conn = self.get_connection(self.haproxy_conn_id)
        host = (conn.host or "").split("://", 1)[-1].rstrip("/")
        if not host:
            raise RouterError(
                f"connection {self.haproxy_conn_id!r} has no host: set it to the HAProxy "
                "Runtime API's address"
            )
        return HaproxyRouter(host, int(conn.port or DEFAULT_PORT), log=self.log.info, **options)

    def get_conn(self) -> HaproxyRouter:
        return self.get_router()

    def test_connection(self) -> tuple[bool, str]:
        """For the UI's Test button: ``show info`` answers."""
        from docker_delivery.errors import DeliveryError

        try:
            router = self.get_router()
            info = router.info()
        except DeliveryError as exc:
            return False, str(exc)
        return True, f"HAProxy {info.get('Version', '?')} answers at {router.admin_host}:" + str(
            router.admin_port
        )
