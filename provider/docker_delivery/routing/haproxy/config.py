"""HAProxy's configuration for a router: frontends and backends of pre-allocated slots, rendered
once (:func:`render_config`) and never reloaded.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from docker_delivery.errors import RouterError as RouterError

if TYPE_CHECKING:
    pass


CONFIG_DIR = "/usr/local/etc/haproxy"


CONFIG_PATH = f"{CONFIG_DIR}/haproxy.cfg"


ROUTES_MAP = f"{CONFIG_DIR}/routes.map"


SLOT_PREFIX = "s"


UNASSIGNED = "0.0.0.0"


DEFAULT_ADMIN_PORT = 9999


# The Runtime API listens on the router container's own loopback: nothing outside the container
# reaches it; the worker goes through the engine (targets.relay). Not an address of any host.
CONTAINER_LOOPBACK = "127.0.0.1"


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


_TOKEN = re.compile(r"^[A-Za-z0-9_.-]+$")


ADMIN_SOCKET_LINE = re.compile(r"^\s*stats socket ipv4@[^\s:]*:(\d+)\b", re.MULTILINE)


@dataclass(frozen=True)
class BackendSpec:
    """A backend of pre-allocated slots.

    ``slots`` servers ``s1``..``sN`` start in maintenance on ``0.0.0.0:<port>``; ``port`` is only
    the template's default (:meth:`HaproxyRouter.assign` sets address and port together).
    ``health_path`` is the safety-net HTTP check (status 200 expected), every
    ``check_interval_ms``; a server goes down after ``fall`` failures, up after ``rise`` passes.
    ``cookie``: name of a sticky-session cookie (dynamic, see the module docstring), with
    ``cookie_key`` as the secret hashed into the values (default: derived from the backend name;
    set your own where clients must not be able to compute a server's cookie).
    """

    slots: int = 10
    port: int = 8080
    health_path: str = "/health"
    check_interval_ms: int = 2000
    fall: int = 2
    rise: int = 1
    cookie: str | None = None
    cookie_key: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.slots <= 1000:
            raise RouterError(f"a backend has 1 to 1000 slots, not {self.slots}")
        check_port(self.port, "backend port")
        if not self.health_path.startswith("/") or any(c.isspace() for c in self.health_path):
            raise RouterError(
                f"health_path must be an absolute path without spaces, not {self.health_path!r}"
            )
        if self.check_interval_ms < 100 or self.fall < 1 or self.rise < 1:
            raise RouterError("check_interval_ms must be >= 100, fall and rise >= 1")
        if self.cookie is not None and not _TOKEN.match(self.cookie):
            raise RouterError(f"invalid cookie name {self.cookie!r}")
        if self.cookie_key is not None and (
            not self.cookie_key or any(c.isspace() for c in self.cookie_key)
        ):
            raise RouterError("cookie_key must be a non-empty string without spaces")


@dataclass(frozen=True)
class FrontendSpec:
    """A listener on ``port`` (all addresses of the router container) serving ``default_backend``.

    ``switchable`` (default): the backend is looked up per request in the routes map, so
    :meth:`HaproxyRouter.route` can switch it at runtime (blue/green). ``switchable=False``
    renders a plain ``default_backend``, fixed until the configuration changes.
    """

    port: int
    default_backend: str
    switchable: bool = True

    def __post_init__(self) -> None:
        check_port(self.port, "frontend port")
        check_name(self.default_backend, "backend")


def check_port(port: int, what: str) -> None:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise RouterError(f"{what} must be an integer from 1 to 65535, not {port!r}")


def check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise RouterError(
            f"invalid {what} name {name!r}: use letters, digits, '_', '.', ':' and '-'"
        )


def render_config(
    frontends: Mapping[str, FrontendSpec],
    backends: Mapping[str, BackendSpec],
    *,
    admin_port: int = DEFAULT_ADMIN_PORT,
    hard_stop_after: str = "30s",
    map_path: str = ROUTES_MAP,
) -> str:
    """The haproxy.cfg for these frontends and backends, with the Runtime API on ``admin_port``.

    The Runtime API listens with ``level admin`` on the container's own loopback only: neither
    the instances on the router's network nor anything outside reach it; the worker reaches it
    through the engine (:class:`docker_delivery.targets.relay.RuntimeRelay`).
    """
    if not backends:
        raise RouterError("render_config needs at least one backend")
    check_port(admin_port, "admin port")
    for name in frontends:
        check_name(name, "frontend")
    for name in backends:
        check_name(name, "backend")
    clash = set(frontends) & set(backends)
    if clash:
        raise RouterError(f"frontend and backend names must differ: {sorted(clash)}")
    ports: dict[int, str] = {admin_port: "the admin port"}
    for name, fe in frontends.items():
        if fe.default_backend not in backends:
            raise RouterError(
                f"frontend {name!r} serves backend {fe.default_backend!r}, which is not defined"
            )
        if fe.port in ports:
            raise RouterError(f"frontend {name!r} binds port {fe.port}, used by {ports[fe.port]}")
        ports[fe.port] = f"frontend {name!r}"

    lines = [
        "# Rendered by docker-delivery (routing.render_config). Servers, states, weights and",
        "# routes change at runtime through the Runtime API: the file never needs a reload.",
        "global",
        "    log stdout format raw local0",
        f"    stats socket ipv4@{CONTAINER_LOOPBACK}:{admin_port} level admin expose-fd listeners",
        "    stats timeout 30s",
        f"    hard-stop-after {hard_stop_after}",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlognull",
        "    option forwardfor",
        "    option redispatch",
        "    retries 2",
        "    retry-on conn-failure",
        "    timeout connect 2s",
        "    timeout client 65s",
        "    timeout server 65s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        "    timeout queue 30s",
        "    timeout check 2s",
    ]
    for name, fe in frontends.items():
        lines += ["", f"frontend {name}", f"    bind :{fe.port}"]
        if fe.switchable:
            lines.append(f"    use_backend %[str({name}),map({map_path},{fe.default_backend})]")
        lines.append(f"    default_backend {fe.default_backend}")
    for name, be in backends.items():
        lines += [
            "",
            f"backend {name}",
            "    balance roundrobin",
            f"    option httpchk GET {be.health_path}",
            "    http-check expect status 200",
        ]
        if be.cookie:
            key = be.cookie_key or f"docker-delivery-{name}"
            lines += [
                f"    cookie {be.cookie} insert indirect nocache dynamic",
                f"    dynamic-cookie-key {key}",
            ]
        lines.append(
            f"    server-template {SLOT_PREFIX} 1-{be.slots} {UNASSIGNED}:{be.port} disabled "
            f"check inter {be.check_interval_ms} fall {be.fall} rise {be.rise}"
        )
    return "\n".join(lines) + "\n"


def config_hash(config: str) -> str:
    """The value of the ``io.docker-delivery.config-hash`` label for ``config``."""
    return "sha256:" + hashlib.sha256(config.encode()).hexdigest()
