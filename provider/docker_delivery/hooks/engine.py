"""Docker Engines as Airflow connections (type ``docker_engine``) -> docker SDK clients.

An environment names its engine by connection id (``engine: <conn_id>`` in the environment spec);
without one, operators use ``docker_url``, else DOCKER_HOST or the local socket, as before. The
connection's host says how the engine is reached:

* ``10.0.0.5`` or ``tcp://10.0.0.5`` (port 2376 unless the connection has one): TCP with mutual
  TLS, verified. The extras ``tls_ca``, ``tls_cert`` and ``tls_key`` hold the PEM texts of the CA
  that signed the engine's certificate, and of the client's certificate and key; an engine on TCP
  without them is refused (an open TCP socket is root on that machine for anyone who reaches it).
* ``ssh://user@host``: through ``ssh`` (the worker's ssh client, keys and known_hosts).
* ``unix:///var/run/docker.sock``: a local socket.

The PEM texts go to files in a private folder (mode 0700) for the client's life and are removed
when it closes; the key is masked in task logs. None of them is logged, put in XCom or a label.

A Swarm manager's connection may name the engines of the Swarm's other nodes, in the extra
``swarm_nodes``: ``{"<node address, hostname or id>": "<docker_engine connection id>"}``. Everything
is read and changed through the manager; a node's own engine is used for one thing, stopping a
drained task there (:mod:`docker_delivery.targets.nodes`), which rolling deployments and
scaling in need on a Swarm of several nodes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook

from docker_delivery.errors import TargetError
from docker_delivery.targets.address import LOCAL_HOST as LOCAL_HOST
from docker_delivery.targets.address import engine_host as engine_host

if TYPE_CHECKING:
    import docker

    from docker_delivery.targets.nodes import NodeEngines

CONN_TYPE = "docker_engine"
TLS_PORT = 2376
TLS_FIELDS = ("tls_ca", "tls_cert", "tls_key")
MIN_API_VERSION = "1.24"  # docker's own minimum


def _removing_on_close(client: docker.DockerClient, folder: Path) -> docker.DockerClient:
    """``client``, whose ``close`` also removes ``folder`` (the connection's PEM files)."""
    close = client.close

    def close_and_forget() -> None:
        try:
            close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    client.close = close_and_forget
    return client


class DockerEngineHook(BaseHook):
    """A Docker Engine reached through the connection ``engine_conn_id`` (module docstring).
    Its form fields are declared in the provider info (``get_provider_info``)."""

    conn_name_attr = "engine_conn_id"
    default_conn_name = "docker_engine_default"
    conn_type = CONN_TYPE
    hook_name = "Docker Engine"

    def __init__(self, engine_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine_conn_id = engine_conn_id

    def base_url(self) -> str:
        """The engine's URL as docker expects it (``https://h:2376``, ``ssh://u@h``, ``unix://``)."""
        conn = self.get_connection(self.engine_conn_id)
        where = f"connection {self.engine_conn_id!r}"
        host = (conn.host or "").strip()
        if not host:
            raise TargetError(f"{where} has no host: set it to the engine (module docs)")
        if host.startswith(("unix://", "npipe://")):
            return host
        if host.startswith("ssh://"):
            if conn.login and "@" not in host:
                host = f"ssh://{conn.login}@{host[len('ssh://') :]}"
            return host + (f":{conn.port}" if conn.port and host.count(":") < 2 else "")
        split = urlsplit(host if "://" in host else f"tcp://{host}")
        if split.scheme not in ("tcp", "https") or not split.hostname:
            raise TargetError(
                f"{where}: host {host!r} is neither an address, tcp://, ssh:// nor unix://"
            )
        port = split.port or conn.port or TLS_PORT
        return f"https://{split.hostname}:{port}"

    def tls_texts(self) -> dict[str, str]:
        """The connection's PEM texts (tls_ca, tls_cert, tls_key); the key is masked in logs."""
        extra = self.get_connection(self.engine_conn_id).extra_dejson
        texts = {name: str(extra.get(name) or "").strip() for name in TLS_FIELDS}
        if texts["tls_key"]:
            from airflow.sdk.log import mask_secret

            mask_secret(texts["tls_key"])
        return texts

    def get_client(self, *, timeout: int = 120, version: str = "auto") -> docker.DockerClient:
        """A docker SDK client for the engine; close it (the certificate folder goes with it).
        ``version``: the Engine API version (``auto`` asks the engine at once)."""
        import docker
        import requests
        from docker.tls import TLSConfig

        url = self.base_url()
        where = f"connection {self.engine_conn_id!r}"
        if url.startswith("ssh://"):
            return docker.DockerClient(
                base_url=url, timeout=timeout, version=version, use_ssh_client=True
            )
        if not url.startswith("https://"):
            return docker.DockerClient(base_url=url, timeout=timeout, version=version)
        texts = self.tls_texts()
        missing = [name for name, text in texts.items() if not text]
        if missing:
            raise TargetError(
                f"{where}: an engine on tcp needs mutual TLS; the extras {', '.join(missing)} are "
                "empty (PEM texts of the CA, the client certificate and its key)"
            )
        folder = Path(tempfile.mkdtemp(prefix="dd-engine-"))
        try:
            paths = {}
            for name, text in texts.items():
                path = folder / f"{name}.pem"
                path.touch(mode=0o600)
                path.write_text(text + "\n")
                paths[name] = str(path)
            tls = TLSConfig(
                ca_cert=paths["tls_ca"],
                client_cert=(paths["tls_cert"], paths["tls_key"]),
                verify=True,
            )
            # No request before trust_env is off: requests lets REQUESTS_CA_BUNDLE (or
            # CURL_CA_BUNDLE) replace a session's CA, which would verify the engine against the
            # system's CAs instead of the connection's. Then the API version, as "auto" does.
            client = docker.DockerClient(
                base_url=url, tls=tls, timeout=timeout, version=MIN_API_VERSION
            )
            client.api.trust_env = False
            if version == "auto":
                try:
                    client.api._version = client.api.version(api_version=False)["ApiVersion"]
                except requests.RequestException as exc:
                    raise TargetError(
                        f"{where}: the engine at {url} did not answer over TLS: {exc}"
                    ) from exc
            else:
                client.api._version = version
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return _removing_on_close(client, folder)

    def node_engines(self, *, timeout: int = 120) -> NodeEngines | None:
        """The engines of the Swarm's other nodes the extra ``swarm_nodes`` names (module
        docstring), each made on first use; None without the extra."""
        from docker_delivery.targets.nodes import NodeEngines

        raw = self.get_connection(self.engine_conn_id).extra_dejson.get("swarm_nodes")
        if raw is None:
            return None
        where = f"connection {self.engine_conn_id!r}, extra swarm_nodes"
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError as exc:
                raise TargetError(f"{where}: not JSON ({exc})") from None
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and v for k, v in raw.items()
        ):
            raise TargetError(
                f"{where}: must map each node (address, hostname or id) to a docker_engine "
                'connection id, e.g. {"10.0.0.6": "swarm_node_2"}'
            )
        if self.engine_conn_id in raw.values():
            raise TargetError(f"{where}: names the manager's own connection for another node")

        def factory(conn_id: str) -> Callable[[], docker.DockerClient]:
            return lambda: DockerEngineHook(conn_id).get_client(timeout=timeout)

        return NodeEngines({node: factory(conn_id) for node, conn_id in raw.items()})

    def get_conn(self) -> docker.DockerClient:
        return self.get_client()

    def test_connection(self) -> tuple[bool, str]:
        """For the UI's Test button: the engine answers its version."""
        try:
            client = self.get_client(timeout=10)
            try:
                version = client.version().get("Version", "?")
            finally:
                client.close()
        except Exception as exc:  # the button shows any failure as text
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"Docker Engine {version} answers at {self.base_url()}"


def engine_client(
    docker_url: str | None = None, *, engine_conn_id: str | None = None, timeout: int = 120
) -> docker.DockerClient:
    """A docker SDK client: the engine of connection ``engine_conn_id`` when given, else
    ``docker_url``, else DOCKER_HOST or the default socket."""
    import docker

    if engine_conn_id:
        from docker_delivery.targets.nodes import attach_nodes

        hook = DockerEngineHook(engine_conn_id)
        nodes = hook.node_engines(timeout=timeout)  # bad extras refused before any client
        client = hook.get_client(timeout=timeout)
        return client if nodes is None else attach_nodes(client, nodes)
    if docker_url:
        return docker.DockerClient(base_url=docker_url, timeout=timeout)
    return docker.from_env(timeout=timeout)


def engine_url(docker_url: str | None = None, *, engine_conn_id: str | None = None) -> str | None:
    """The URL :func:`engine_client` connects to (None: DOCKER_HOST or the default socket)."""
    import os

    if engine_conn_id:
        return DockerEngineHook(engine_conn_id).base_url()
    return docker_url or os.environ.get("DOCKER_HOST")
