"""RouterContainer: HAProxy as a container on the target's network. The configuration goes in
with ``put_archive`` (no bind mount); the frontends are published on the address the environment
gives; the Runtime API is never published: it is reached through the engine (a relay stream into
the container, :mod:`docker_delivery.targets.relay`). A running router with the same
configuration is reused; another one is replaced only while it serves nothing.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from docker_delivery.errors import RouterError as RouterError
from docker_delivery.targets.engine import start_container
from docker_delivery.targets.labels import LABEL_CONFIG_HASH, LABEL_MANAGED, LABEL_ROLE, ROLE_ROUTER
from docker_delivery.targets.relay import ProbeTransport, RuntimeRelay

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container
from docker_delivery.routing.haproxy.client import HaproxyRouter
from docker_delivery.routing.haproxy.config import (
    ADMIN_SOCKET_LINE,
    CONFIG_DIR,
    CONFIG_PATH,
    CONTAINER_LOOPBACK,
    DEFAULT_ADMIN_PORT,
    ROUTES_MAP,
    check_port,
    config_hash,
)


@dataclass(frozen=True)
class RouterHandle:
    """A running router container: its Runtime API client (through the engine), id, published
    host ports (container port -> host port on the bound address), and its address on the
    network."""

    router: HaproxyRouter
    container_id: str
    name: str
    ports: dict[int, int]
    address: str

    @property
    def probes(self) -> ProbeTransport:
        """An httpx transport probing instances from this router's container (its relay)."""
        assert self.router.relay is not None, "a router container is reached through its relay"
        return ProbeTransport(self.router.relay)


def _config_archive(config: str, routes_map: str) -> bytes:
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        directory = tarfile.TarInfo(CONFIG_DIR.lstrip("/"))
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        directory.mtime = int(now)
        tar.addfile(directory)
        for path, text in ((CONFIG_PATH, config), (ROUTES_MAP, routes_map)):
            data = text.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(now)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class RouterContainer:
    """HAProxy run as a container named ``name`` on ``network``, next to the instances it routes.

    Labels: ``io.docker-delivery.managed=true``, ``io.docker-delivery.role=router`` and
    ``io.docker-delivery.config-hash`` (sha256 of the configuration). Restart policy
    ``unless-stopped``; note that a restarted HAProxy starts from its configuration again.
    """

    @classmethod
    def ensure(
        cls,
        client: docker.DockerClient,
        *,
        name: str,
        network: str,
        image: str,
        config: str,
        publish: Mapping[int, int],
        bind: str = "0.0.0.0",
        labels: Mapping[str, str] | None = None,
        admin_port: int = DEFAULT_ADMIN_PORT,
        replace: bool = False,
        timeout: float = 30.0,
        log: Callable[[str], None] = print,
    ) -> RouterHandle:
        """Start the router, or reuse the running one with the same configuration.

        ``publish``: container port -> host port (0 = ephemeral), bound on the engine host's
        address ``bind`` (every interface by default). The Runtime API (``admin_port``, which
        ``config`` must declare) is not published: it is reached through the engine. A running
        router with another configuration (or image, network, ports) is replaced
        only when it serves nothing (every slot in maint) or with ``replace=True``: replacing a
        live router drops its open connections.
        """
        import docker.errors

        check_port(admin_port, "admin port")
        declared = [int(p) for p in ADMIN_SOCKET_LINE.findall(config)]
        if admin_port not in declared:
            raise RouterError(
                f"the configuration declares no 'stats socket ipv4@...:{admin_port}': render it "
                f"with render_config(..., admin_port={admin_port})"
            )
        for container_port, host_port in publish.items():
            check_port(container_port, "published container port")
            if host_port != 0:
                check_port(host_port, "published host port")
        want_ports = dict(publish)
        digest = config_hash(config)
        try:
            client.networks.get(network)
        except docker.errors.NotFound as exc:
            raise RouterError(
                f"network {network!r} does not exist: create it (it is the target's network) "
                "before starting its router"
            ) from exc

        for _attempt in range(2):
            existing = cls._get(client, name)
            if existing is not None:
                why = cls._differs(existing, digest, image, network, want_ports, bind)
                if why is None:
                    log(f"router {name}: reusing running container {existing.short_id}")
                    return cls._handle(existing, network, admin_port, timeout, log, bind)
                if existing.status == "running" and not replace:
                    serving = cls._serving(existing, admin_port)
                    if serving:
                        raise RouterError(
                            f"router {name} runs ({why}) and serves {serving}: retire it first "
                            "(drain its servers), or pass replace=True to drop its connections"
                        )
                log(f"router {name}: replacing container {existing.short_id} ({why})")
                cls._stop_remove(existing, log)
            all_labels = {
                **(labels or {}),
                LABEL_MANAGED: "true",
                LABEL_ROLE: ROLE_ROUTER,
                LABEL_CONFIG_HASH: digest,
            }
            try:
                container = client.containers.create(
                    image,
                    name=name,
                    labels=all_labels,
                    network=network,
                    ports={f"{c}/tcp": (bind, h or None) for c, h in want_ports.items()},
                    restart_policy={"Name": "unless-stopped"},
                    detach=True,
                )
            except docker.errors.ImageNotFound as exc:
                raise RouterError(
                    f"router image {image!r} is not on this engine: pull or build it first"
                ) from exc
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # created meanwhile by another task: look again
                    continue
                raise RouterError(f"cannot create router container {name!r}: {exc}") from exc
            try:
                container.put_archive("/", _config_archive(config, ""))
                start_container(container, log=log)
            except docker.errors.APIError as exc:
                container.remove(force=True)
                raise RouterError(f"cannot start router container {name!r}: {exc}") from exc
            log(f"router {name}: started container {container.short_id} on {network}")
            try:
                return cls._handle(container, network, admin_port, timeout, log, bind)
            except RouterError:
                container.remove(force=True)  # its logs are in the message; do not let it flap
                raise
        raise RouterError(f"router container {name!r} keeps being created and removed by others")

    @classmethod
    def remove(
        cls, client: docker.DockerClient, name: str, *, log: Callable[[str], None] = print
    ) -> bool:
        """Stop (soft-stop: sessions finish up to hard-stop-after) and remove; False if absent."""
        container = cls._get(client, name)
        if container is None:
            return False
        cls._stop_remove(container, log)
        log(f"router {name}: removed")
        return True

    @classmethod
    def find(
        cls,
        client: docker.DockerClient,
        name: str,
        *,
        network: str,
        admin_port: int = DEFAULT_ADMIN_PORT,
        timeout: float = 10.0,
        log: Callable[[str], None] = print,
    ) -> RouterHandle | None:
        """The running router ``name``, to read (nothing is started or changed); None if absent
        or stopped."""
        container = cls._get(client, name)
        if container is None or container.status != "running":
            return None
        return cls._handle(container, network, admin_port, timeout, log)

    @staticmethod
    def _get(client: docker.DockerClient, name: str) -> Container | None:
        import docker.errors

        try:
            return client.containers.get(name)
        except docker.errors.NotFound:
            return None

    @staticmethod
    def _stop_remove(container: Container, log: Callable[[str], None]) -> None:
        import docker.errors

        try:
            if container.status == "running":
                container.stop(timeout=30)
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise RouterError(f"cannot remove router container {container.name}: {exc}") from exc

    @staticmethod
    def _published(attrs: Mapping[str, Any], bind: str | None = None) -> dict[int, int]:
        """Container port -> host port, of the bindings on ``bind`` (None: on any address)."""
        anywhere = ("0.0.0.0", "", "::")
        ports: dict[int, int] = {}
        bound = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
        for key, bindings in bound.items():
            port, _, proto = key.partition("/")
            if proto != "tcp" or not bindings:
                continue
            for binding in bindings:
                host_ip = binding.get("HostIp") or ""
                on_bind = (
                    bind is None or host_ip == bind or (bind in anywhere and host_ip in anywhere)
                )
                if on_bind and binding.get("HostPort"):
                    ports[int(port)] = int(binding["HostPort"])
                    break
        return ports

    @classmethod
    def _differs(
        cls,
        container: Container,
        digest: str,
        image: str,
        network: str,
        want_ports: Mapping[int, int],
        bind: str,
    ) -> str | None:
        attrs = container.attrs
        have = (attrs.get("Config") or {}).get("Labels") or {}
        if container.status != "running":
            return f"container is {container.status}"
        if have.get(LABEL_CONFIG_HASH) != digest:
            return "another configuration"
        if (attrs.get("Config") or {}).get("Image") != image:
            return f"image {(attrs.get('Config') or {}).get('Image')} instead of {image}"
        if network not in ((attrs.get("NetworkSettings") or {}).get("Networks") or {}):
            return f"not on network {network}"
        published = cls._published(attrs, bind)
        for c, h in want_ports.items():
            if c not in published or (h and published[c] != h):
                return f"port {c} not published on {bind} as wanted"
        if set(cls._published(attrs)) - set(want_ports):
            return "it publishes other ports"
        return None

    @classmethod
    def _serving(cls, container: Container, admin_port: int) -> str | None:
        """What a running router serves ('backend/s1, ...'), None if every slot is in maint."""
        router = cls._router(container, admin_port, 2.0, lambda _: None)
        try:
            live = [
                f"{s.backend}/{s.name}"
                for backend in router.backends()
                for s in router.servers(backend)
                if s.admin_state != "maint"
            ]
        except RouterError:
            return "an unknown number of servers (its Runtime API does not answer)"
        return ", ".join(live) or None

    @classmethod
    def _handle(
        cls,
        container: Container,
        network: str,
        admin_port: int,
        timeout: float,
        log: Callable[[str], None],
        bind: str | None = None,
    ) -> RouterHandle:
        deadline = time.monotonic() + timeout
        restarts = (container.attrs.get("State") or {}).get("RestartCount", 0)

        def check_alive() -> None:
            container.reload()
            state = container.attrs.get("State") or {}
            if container.status not in ("created", "running") or (
                state.get("RestartCount", 0) != restarts
            ):
                raise cls._died(container)

        router = cls._router(container, admin_port, 5.0, log)
        while True:
            try:
                info = router.info()
                if info.get("Name"):
                    break
            except RouterError:
                pass
            check_alive()
            if time.monotonic() >= deadline:
                raise RouterError(
                    f"router {container.name}: the Runtime API ({router.where}) did not answer "
                    f"within {timeout:g}s; logs: {cls._logs(container)}"
                )
            time.sleep(0.1)
        container.reload()
        ports = cls._published(container.attrs, bind)
        networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        address = cast(str, (networks.get(network) or {}).get("IPAddress", ""))
        return RouterHandle(
            router=router,
            container_id=cast(str, container.id),
            name=cast(str, container.name),
            ports=ports,
            address=address,
        )

    @staticmethod
    def _router(
        container: Container, admin_port: int, timeout: float, log: Callable[[str], None]
    ) -> HaproxyRouter:
        """The container's Runtime API, reached through its engine (never a published port)."""
        relay = RuntimeRelay.kept(
            container.client,
            cast(str, container.id),
            host=CONTAINER_LOOPBACK,
            port=admin_port,
            timeout=timeout,
        )
        return HaproxyRouter.through(relay, log=log)

    @staticmethod
    def _logs(container: Container) -> str:
        try:
            raw = cast(bytes, container.logs(tail=20))
        except Exception:  # the logs are only a help for the message
            return "(unavailable)"
        return raw.decode("utf-8", "replace").strip() or "(empty)"

    @classmethod
    def _died(cls, container: Container) -> RouterError:
        code = (container.attrs.get("State") or {}).get("ExitCode")
        return RouterError(
            f"router {container.name} exited (code {code}) before its Runtime API answered; "
            f"logs: {cls._logs(container)}"
        )
