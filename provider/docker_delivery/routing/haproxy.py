"""HAProxy as the router of the deployments, driven through its Runtime API.

The configuration is rendered once (:func:`render_config`) with every backend's servers
pre-allocated as *slots* by ``server-template``: ``s1``..``sN``, all on the placeholder address
``0.0.0.0`` and in maintenance until a release is assigned to them. From then on nothing is ever
reloaded: :class:`HaproxyRouter` moves instances in and out of slots (``set server ... addr``),
changes their state (ready / drain / maint) and weight, and switches which backend a frontend
serves (``set map``), all over the Runtime API. Every change is read back from HAProxy and
compared with what was asked; a difference raises :class:`RouterError`.

:class:`RouterContainer` runs HAProxy as a container on the target's network: the configuration
goes in with ``put_archive`` (no bind mount), the Runtime API is published on 127.0.0.1.

What the rendered configuration does, for HAProxy 2.6 (checked on Debian bookworm's 2.6.12):

* ``server-template s 1-N 0.0.0.0:<port> disabled check ...``: a literal IP needs no DNS
  resolver and no ``init-addr``; ``disabled`` starts each slot in maintenance (admin state
  ``FMAINT|CMAINT`` = 5). ``set server <b>/<s> state ready`` clears FMAINT; CMAINT (0x04) stays
  set as a record of the configuration and does *not* mean maintenance (HAProxy's own mask for
  maintenance is 0x23), so the admin state is decoded by :func:`admin_state_of`. A slot leaving
  maintenance is UP at once (HAProxy's checks start again from "just up"): our prober decides
  readiness first, the ``httpchk`` is a safety net that takes a failing server out after 2 checks.
* Sticky sessions: ``server-template`` copies a ``cookie <value>`` argument verbatim to every
  server it creates (checked: ``cookie s`` gives all slots the cookie ``s``), so per-slot cookies
  cannot be written there. A backend with a ``cookie`` uses HAProxy's *dynamic* cookies instead
  (``cookie <name> insert indirect nocache dynamic`` + ``dynamic-cookie-key``): each server's
  cookie is a hash of its address, port and the key, so it changes when a slot gets another
  instance and a stale cookie never pins a client to a newcomer.
* Switchable frontends: ``use_backend %[str(<frontend>),map(<routes.map>,<default>)]`` (plus
  ``default_backend <default>``). The map starts empty, so the frontend serves its default
  backend; :meth:`HaproxyRouter.route` adds or sets the frontend's entry at runtime. The rule is
  evaluated for every request (also on kept-alive client connections), so a switch is atomic:
  every request after the ``set map`` goes to the new backend; requests in flight finish where
  they are.

Runtime state (slot assignments, states, weights, routes) lives in the HAProxy process: a restart
of the router container starts from the configuration again (all slots in maintenance, default
routes) and the deployment steps must assign the slots again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import re
import socket
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from docker_delivery.errors import RouterError as RouterError
from docker_delivery.targets.engine import start_container

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

CONFIG_DIR = "/usr/local/etc/haproxy"
CONFIG_PATH = f"{CONFIG_DIR}/haproxy.cfg"
ROUTES_MAP = f"{CONFIG_DIR}/routes.map"
SLOT_PREFIX = "s"
UNASSIGNED = "0.0.0.0"
DEFAULT_ADMIN_PORT = 9999

LABEL_MANAGED = "io.docker-delivery.managed"
LABEL_ROLE = "io.docker-delivery.role"
LABEL_CONFIG_HASH = "io.docker-delivery.config-hash"

AdminState = Literal["ready", "drain", "maint"]
ADMIN_STATES: tuple[AdminState, ...] = ("ready", "drain", "maint")

# srv_admin_state bits (HAProxy 2.6 management guide, "show servers state"; src server-t.h).
ADMF_FMAINT = 0x01  # forced into maintenance (CLI "maint", config "disabled")
ADMF_IMAINT = 0x02  # maintenance inherited from a tracked server
ADMF_CMAINT = 0x04  # "disabled" in the configuration: a record, not a state (stays after "ready")
ADMF_FDRAIN = 0x08  # forced into drain
ADMF_IDRAIN = 0x10  # drain inherited from a tracked server
ADMF_RMAINT = 0x20  # maintenance because the address could not be resolved
ADMF_MAINT = ADMF_FMAINT | ADMF_IMAINT | ADMF_RMAINT  # HAProxy's SRV_ADMF_MAINT (0x23)
ADMF_DRAIN = ADMF_FDRAIN | ADMF_IDRAIN  # HAProxy's SRV_ADMF_DRAIN (0x18)

# srv_op_state values.
_OP_STATES = {0: "down", 1: "starting", 2: "up", 3: "stopping"}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_TOKEN = re.compile(r"^[A-Za-z0-9_.-]+$")
_ADMIN_SOCKET = re.compile(r"^\s*stats socket ipv4@[^\s:]*:(\d+)\b", re.MULTILINE)
# First line of a refusal. Data replies start with "#", a digit, "0x" or "Name:" and are never
# tested against this.
_ERROR_REPLY = re.compile(
    r"^(unknown|no such|can't|cannot|unable|invalid|require|missing|permission denied|empty|"
    r"absolute weight|relative weight|backend is using|entry not found|.*\bexpects\b|"
    r".*\bnot found\b|.*\bnot allowed\b|.*\bfailed\b|.*\berror\b)",
    re.IGNORECASE,
)
_DATA_REPLY = re.compile(r"^(#|\d|0x|Name:)")
_ADDR_ACCEPTED = re.compile(r"^(IP changed from|no need to change the addr)")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


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
        _check_port(self.port, "backend port")
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
        _check_port(self.port, "frontend port")
        _check_name(self.default_backend, "backend")


def _check_port(port: int, what: str) -> None:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise RouterError(f"{what} must be an integer from 1 to 65535, not {port!r}")


def _check_name(name: str, what: str) -> None:
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

    The Runtime API listens with ``level admin`` on every address of the container: publish it on
    127.0.0.1 only, and keep untrusted containers off the router's network.
    """
    if not backends:
        raise RouterError("render_config needs at least one backend")
    _check_port(admin_port, "admin port")
    for name in frontends:
        _check_name(name, "frontend")
    for name in backends:
        _check_name(name, "backend")
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
        f"    stats socket ipv4@0.0.0.0:{admin_port} level admin expose-fd listeners",
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


# --------------------------------------------------------------------------------------------
# Parsing the Runtime API's answers (small functions, unit-tested on captured output)
# --------------------------------------------------------------------------------------------


def admin_state_of(mask: int) -> AdminState:
    """``srv_admin_state`` (a bit mask) -> ready | drain | maint, as HAProxy itself decides it.

    CMAINT (0x04, "disabled" in the configuration) is left out, as in HAProxy's SRV_ADMF_MAINT:
    it stays set after ``state ready`` and does not stop traffic.
    """
    if mask & ADMF_MAINT:
        return "maint"
    if mask & ADMF_DRAIN:
        return "drain"
    return "ready"


def operational_of(op_state: int, admin: AdminState) -> str:
    """``srv_op_state`` -> up | starting | stopping | down, or stopped for a server in maint.

    0 (SRV_ST_STOPPED) is "stopped" when the server is in maintenance (checks are paused: it
    says nothing about the instance's health) and "down" otherwise (its checks fail).
    """
    if op_state == 0 and admin == "maint":
        return "stopped"
    return _OP_STATES.get(op_state, f"unknown({op_state})")


def parse_servers_state(text: str) -> list[dict[str, str]]:
    """Rows of ``show servers state`` (format version 1) as dicts keyed by the header's names."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    if lines[0].strip() != "1":
        raise RouterError(f"unexpected 'show servers state' format {lines[0].strip()!r}")
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    for line in lines[1:]:
        if line.startswith("#"):
            if header is None:
                header = line.lstrip("#").split()
            continue
        if header is None:
            raise RouterError("'show servers state' answered without a header line")
        values = line.split()
        rows.append(dict(zip(header, values, strict=False)))
    return rows


def parse_stat_csv(text: str) -> list[dict[str, str]]:
    """Rows of ``show stat`` (CSV, header ``# pxname,svname,...``) as dicts keyed by column."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    if not lines[0].startswith("# "):
        raise RouterError(f"unexpected 'show stat' answer: {lines[0][:80]!r}")
    header = lines[0][2:].rstrip(",").split(",")
    rows = []
    for values in csv.reader(lines[1:]):
        rows.append(dict(zip(header, values, strict=False)))
    return rows


def parse_map(text: str) -> dict[str, str]:
    """``show map <file>`` (``<ref> <key> <value>`` lines) -> {key: value}; the first entry wins."""
    entries: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].startswith("0x"):
            entries.setdefault(parts[1], parts[2].strip())
    return entries


def parse_info(text: str) -> dict[str, str]:
    """``show info`` (``Key: value`` lines) -> dict."""
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def reply_error(reply: str) -> str | None:
    """The refusal in a Runtime API reply (its first line), or None when it is not one."""
    first = next((line.strip() for line in reply.splitlines() if line.strip()), "")
    if not first or _DATA_REPLY.match(first):
        return None
    return first if _ERROR_REPLY.match(first) else None


def slot_of(server: str, prefix: str = SLOT_PREFIX) -> int:
    """``s3`` -> 3; RouterError for a name that is not a slot of this prefix."""
    match = re.fullmatch(re.escape(prefix) + r"(\d+)", server)
    if not match:
        raise RouterError(f"server {server!r} is not a slot named {prefix}<number>")
    return int(match.group(1))


def _int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


@dataclass(frozen=True)
class ServerState:
    """One slot of a backend, as HAProxy reports it.

    ``admin_state``: ready | drain | maint (what we set). ``operational``: up | starting |
    stopping | down (checks fail) | stopped (in maintenance). ``address`` is ``0.0.0.0`` for a
    slot that holds no instance.
    """

    backend: str
    name: str
    slot: int
    address: str
    port: int
    admin_state: AdminState
    operational: str
    weight: int
    current_sessions: int
    queued: int
    check_status: str

    @property
    def assigned(self) -> bool:
        return self.address != UNASSIGNED

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


def server_states(
    backend: str, state_text: str, stat_text: str, *, prefix: str = SLOT_PREFIX
) -> list[ServerState]:
    """Join ``show servers state <backend>`` and ``show stat <backend> 4 -1`` by server name."""
    stats = {
        row.get("svname", ""): row
        for row in parse_stat_csv(stat_text)
        if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND")
    }
    servers = []
    for row in parse_servers_state(state_text):
        if row.get("be_name") != backend:
            continue
        name = row["srv_name"]
        admin = admin_state_of(_int(row.get("srv_admin_state")))
        stat = stats.get(name, {})
        try:
            slot = slot_of(name, prefix)
        except RouterError:
            slot = _int(row.get("srv_id"))
        servers.append(
            ServerState(
                backend=backend,
                name=name,
                slot=slot,
                address=row.get("srv_addr", ""),
                port=_int(row.get("srv_port")),
                admin_state=admin,
                operational=operational_of(_int(row.get("srv_op_state")), admin),
                weight=_int(row.get("srv_uweight")),
                current_sessions=_int(stat.get("scur")),
                queued=_int(stat.get("qcur")),
                check_status=stat.get("check_status", "").removeprefix("* "),
            )
        )
    return sorted(servers, key=lambda s: s.slot)


@dataclass(frozen=True)
class ServerStats:
    """Traffic counters of one server (from ``show stat``); times are averages in ms over the
    last 1024 requests."""

    name: str
    slot: int
    status: str
    address: str
    requests: int
    sessions_total: int
    selected: int
    hrsp_2xx: int
    hrsp_3xx: int
    hrsp_4xx: int
    hrsp_5xx: int
    connect_errors: int
    response_errors: int
    current_sessions: int
    queued: int
    rtime_ms: int
    ttime_ms: int


@dataclass(frozen=True)
class BackendStats:
    """Traffic counters of a backend and of each of its servers (from ``show stat``)."""

    backend: str
    status: str
    requests: int
    sessions_total: int
    hrsp_2xx: int
    hrsp_3xx: int
    hrsp_4xx: int
    hrsp_5xx: int
    connect_errors: int
    response_errors: int
    current_sessions: int
    queued: int
    rtime_ms: int
    ttime_ms: int
    servers: tuple[ServerStats, ...] = field(default=())

    def server(self, slot: int) -> ServerStats:
        for server in self.servers:
            if server.slot == slot:
                return server
        raise RouterError(f"backend {self.backend!r} has no slot {slot}")


def backend_stats(backend: str, stat_text: str, *, prefix: str = SLOT_PREFIX) -> BackendStats:
    """``show stat <backend> 6 -1`` -> BackendStats."""
    rows = [row for row in parse_stat_csv(stat_text) if row.get("pxname") == backend]
    totals = next((row for row in rows if row.get("svname") == "BACKEND"), None)
    if totals is None:
        raise RouterError(f"'show stat' has no BACKEND row for {backend!r}")

    def common(row: Mapping[str, str]) -> dict[str, Any]:
        return {
            "status": row.get("status", ""),
            "requests": _int(row.get("req_tot")),
            "sessions_total": _int(row.get("stot")),
            "hrsp_2xx": _int(row.get("hrsp_2xx")),
            "hrsp_3xx": _int(row.get("hrsp_3xx")),
            "hrsp_4xx": _int(row.get("hrsp_4xx")),
            "hrsp_5xx": _int(row.get("hrsp_5xx")),
            "connect_errors": _int(row.get("econ")),
            "response_errors": _int(row.get("eresp")),
            "current_sessions": _int(row.get("scur")),
            "queued": _int(row.get("qcur")),
            "rtime_ms": _int(row.get("rtime")),
            "ttime_ms": _int(row.get("ttime")),
        }

    servers = []
    for row in rows:
        name = row.get("svname", "")
        if name in ("FRONTEND", "BACKEND"):
            continue
        try:
            slot = slot_of(name, prefix)
        except RouterError:
            slot = _int(row.get("sid"))
        servers.append(
            ServerStats(
                name=name,
                slot=slot,
                address=row.get("addr", ""),
                selected=_int(row.get("lbtot")),
                **common(row),
            )
        )
    return BackendStats(
        backend=backend, servers=tuple(sorted(servers, key=lambda s: s.slot)), **common(totals)
    )


# --------------------------------------------------------------------------------------------
# The Runtime API client
# --------------------------------------------------------------------------------------------


class HaproxyRouter:
    """An HAProxy's Runtime API on ``admin_host:admin_port`` (TCP, one command per connection).

    Slots are named ``<slot_prefix><n>`` (``s1``..``sN``, as :func:`render_config` writes them);
    ``map_path`` is the routes map of switchable frontends. Every change is read back and
    compared; each change logs one line through ``log``.
    """

    def __init__(
        self,
        admin_host: str,
        admin_port: int,
        *,
        timeout: float = 5.0,
        log: Callable[[str], None] = print,
        map_path: str = ROUTES_MAP,
        slot_prefix: str = SLOT_PREFIX,
    ) -> None:
        self.admin_host = admin_host
        self.admin_port = admin_port
        self.timeout = timeout
        self.map_path = map_path
        self.slot_prefix = slot_prefix
        self._log = log

    def __repr__(self) -> str:
        return f"HaproxyRouter({self.admin_host!r}, {self.admin_port})"

    # -- transport ------------------------------------------------------------------------

    def _send(self, cmd: str) -> str:
        where = f"{self.admin_host}:{self.admin_port}"
        try:
            with socket.create_connection(
                (self.admin_host, self.admin_port), timeout=self.timeout
            ) as sock:
                sock.sendall(cmd.encode() + b"\n")
                chunks = []
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except OSError as exc:
            raise RouterError(
                f"HAProxy's Runtime API at {where} did not answer {cmd!r}: {exc}; check that "
                "the router runs and that its stats socket listens there"
            ) from exc
        return b"".join(chunks).decode("utf-8", "replace")

    def command(self, cmd: str) -> str:
        """Send one command, return HAProxy's reply; RouterError when the reply is a refusal."""
        if "\n" in cmd or ";" in cmd:
            raise RouterError(
                f"one Runtime API command at a time, without ';' or newlines: {cmd!r}"
            )
        reply = self._send(cmd)
        error = reply_error(reply)
        if error is not None:
            raise RouterError(f"HAProxy refused {cmd!r}: {error}")
        return reply

    def _change(self, cmd: str, accepted: re.Pattern[str] | None = None) -> None:
        """A command that changes state: its reply must be empty (or match ``accepted``)."""
        reply = self.command(cmd).strip()
        if reply and not (accepted and accepted.match(reply)):
            raise RouterError(f"HAProxy refused {cmd!r}: {reply.splitlines()[0]}")

    # -- reading --------------------------------------------------------------------------

    def info(self) -> dict[str, str]:
        """``show info``: Version, Uptime_sec, CurrConns, ..."""
        return parse_info(self.command("show info"))

    def backends(self) -> list[str]:
        return [
            line.strip()
            for line in self.command("show backend").splitlines()
            if line.strip() and not line.startswith("#")
        ]

    def frontends(self) -> list[str]:
        return [
            row["pxname"]
            for row in parse_stat_csv(self.command("show stat -1 1 -1"))
            if row.get("svname") == "FRONTEND"
        ]

    def servers(self, backend: str) -> list[ServerState]:
        """Every slot of ``backend`` with its address, states, weight and sessions."""
        _check_name(backend, "backend")
        state_text = self.command(f"show servers state {backend}")
        stat_text = self.command(f"show stat {backend} 4 -1")
        return server_states(backend, state_text, stat_text, prefix=self.slot_prefix)

    def server(self, backend: str, slot: int) -> ServerState:
        for server in self.servers(backend):
            if server.slot == slot:
                return server
        raise RouterError(f"HAProxy has no server {self._name(backend, slot)}")

    def free_slots(self, backend: str) -> list[int]:
        """Slots holding no instance (address 0.0.0.0, in maintenance), lowest first."""
        return [
            s.slot for s in self.servers(backend) if not s.assigned and s.admin_state == "maint"
        ]

    def stats(self, backend: str) -> BackendStats:
        _check_name(backend, "backend")
        return backend_stats(
            backend, self.command(f"show stat {backend} 6 -1"), prefix=self.slot_prefix
        )

    def routes(self) -> dict[str, str]:
        """{frontend: backend} set at runtime in the routes map (frontends not in it serve their
        default backend)."""
        return parse_map(self.command(f"show map {self.map_path}"))

    # -- changing -------------------------------------------------------------------------

    def _name(self, backend: str, slot: int) -> str:
        return f"{backend}/{self.slot_prefix}{slot}"

    def _mismatch(self, what: str, applied: object, reported: object) -> RouterError:
        return RouterError(f"{what}: applied {applied} but HAProxy reports {reported}")

    def assign(
        self,
        backend: str,
        slot: int,
        address: str,
        port: int,
        *,
        state: AdminState | None = None,
    ) -> ServerState:
        """Put the instance ``address:port`` in ``slot``; then set ``state`` if given.

        A slot is re-addressed only from maintenance: one that is ready or draining serves
        another instance (RouterError: drain it and set it to maint first). Assigning the address
        a slot already holds changes nothing.
        """
        try:
            ip = str(ipaddress.ip_address(address))
        except ValueError as exc:
            raise RouterError(
                f"assign needs an IP address (HAProxy has no resolver here), not {address!r}"
            ) from exc
        _check_port(port, "server port")
        name = self._name(backend, slot)
        current = self.server(backend, slot)
        if (current.address, current.port) != (ip, port):
            if current.admin_state != "maint":
                raise RouterError(
                    f"{name} serves {current.endpoint} ({current.admin_state}): drain it and set "
                    f"it to maint before assigning {ip}:{port}, or use a free slot "
                    f"({self.free_slots(backend) or 'none left'})"
                )
            self._change(f"set server {name} addr {ip} port {port}", _ADDR_ACCEPTED)
            after = self.server(backend, slot)
            if (after.address, after.port) != (ip, port):
                raise self._mismatch(name, f"{ip}:{port}", after.endpoint)
            current = after
        if state is not None and current.admin_state != state:
            current = self._set_state(backend, slot, state, quiet=True)
        self._log(f"router: {name} -> {ip}:{port} {current.admin_state}")
        return current

    def release(self, backend: str, slot: int) -> ServerState:
        """Put ``slot`` in maintenance and back on 0.0.0.0: free for the next instance.

        Sessions still open on it are not cut; drain first (:meth:`wait_drained`) to have none.
        """
        name = self._name(backend, slot)
        current = self.server(backend, slot)
        if current.admin_state != "maint":
            current = self._set_state(backend, slot, "maint", quiet=True)
        if current.address != UNASSIGNED:
            self._change(f"set server {name} addr {UNASSIGNED}", _ADDR_ACCEPTED)
            current = self.server(backend, slot)
            if current.address != UNASSIGNED:
                raise self._mismatch(name, f"addr {UNASSIGNED}", f"addr {current.address}")
        self._log(f"router: {name} released (maint, {UNASSIGNED})")
        return current

    def set_state(self, backend: str, slot: int, state: AdminState) -> ServerState:
        """ready (takes traffic), drain (no new traffic but sticky sessions), or maint (none)."""
        return self._set_state(backend, slot, state)

    def _set_state(
        self, backend: str, slot: int, state: AdminState, *, quiet: bool = False
    ) -> ServerState:
        if state not in ADMIN_STATES:
            raise RouterError(f"state must be one of {', '.join(ADMIN_STATES)}, not {state!r}")
        name = self._name(backend, slot)
        current = self.server(backend, slot)
        if current.admin_state == state:
            if not quiet:
                self._log(f"router: {name} already {state} ({current.endpoint})")
            return current
        if state != "maint" and not current.assigned:
            raise RouterError(f"{name} holds no instance: assign an address before {state}")
        self._change(f"set server {name} state {state}")
        after = self.server(backend, slot)
        if after.admin_state != state:
            raise self._mismatch(name, f"state {state}", f"state {after.admin_state}")
        if not quiet:
            self._log(f"router: {name} {current.admin_state} -> {state} ({after.endpoint})")
        return after

    def mark_up(self, backend: str, slot: int) -> ServerState:
        """Tell HAProxy that the instance in ``slot`` is healthy (``set server ... health up``).

        For an instance that has just passed the deployment's own health gate: it takes traffic
        at once instead of after HAProxy's ``rise`` checks. HAProxy's checks go on and take it
        out if they fail. The state is read back: it must be up.
        """
        name = self._name(backend, slot)
        current = self.server(backend, slot)
        if current.operational == "up":
            return current
        if not current.assigned or current.admin_state == "maint":
            raise RouterError(
                f"{name} is {current.admin_state} ({current.endpoint}): not marked up"
            )
        self._change(f"set server {name} health up")
        after = self.server(backend, slot)
        if after.operational != "up":
            raise self._mismatch(name, "health up", after.operational)
        self._log(f"router: {name} marked up ({after.endpoint}, its health gate passed)")
        return after

    def set_weight(self, backend: str, slot: int, weight: int) -> ServerState:
        """The server's share under roundrobin: weight / sum of the ready servers' weights
        (0..256; 0 takes no new traffic, like drain)."""
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 256:
            raise RouterError(f"weight must be an integer from 0 to 256, not {weight!r}")
        name = self._name(backend, slot)
        current = self.server(backend, slot)
        if current.weight == weight:
            self._log(f"router: {name} weight already {weight}")
            return current
        self._change(f"set server {name} weight {weight}")
        after = self.server(backend, slot)
        if after.weight != weight:
            raise self._mismatch(name, f"weight {weight}", f"weight {after.weight}")
        self._log(f"router: {name} weight {current.weight} -> {weight}")
        return after

    def route(self, frontend: str, backend: str) -> None:
        """Make switchable ``frontend`` serve ``backend``, atomically, from the next request on.

        Only a frontend rendered with ``switchable=True`` reads the routes map: for one with a
        fixed ``default_backend`` the entry is written (and read back) but changes nothing.
        """
        _check_name(frontend, "frontend")
        _check_name(backend, "backend")
        if frontend not in self.frontends():
            raise RouterError(f"HAProxy has no frontend {frontend!r}")
        if backend not in self.backends():
            raise RouterError(f"HAProxy has no backend {backend!r}: it cannot serve {frontend!r}")
        before = self.routes()
        if before.get(frontend) == backend:
            self._log(f"router: {frontend} already -> {backend}")
            return
        verb = "set" if frontend in before else "add"
        self._change(f"{verb} map {self.map_path} {frontend} {backend}")
        after = self.routes().get(frontend)
        if after != backend:
            raise self._mismatch(f"route {frontend}", backend, after)
        self._log(f"router: {frontend} -> {backend} (was {before.get(frontend, 'its default')})")

    def wait_drained(
        self, backend: str, slot: int, timeout: float, poll: float = 0.1
    ) -> ServerState:
        """Wait until a draining (or maint) server has no session and nothing queued.

        Requests in flight finish; a draining server still takes sticky (cookie) sessions.
        RouterError when the server is ready (set it to drain first) or still busy at ``timeout``.
        """
        name = self._name(backend, slot)
        start = time.monotonic()
        deadline = start + timeout
        while True:
            current = self.server(backend, slot)
            if current.admin_state == "ready":
                raise RouterError(
                    f"{name} is ready, not draining: set_state(..., 'drain') before waiting"
                )
            if current.current_sessions == 0 and current.queued == 0:
                self._log(f"router: {name} drained in {time.monotonic() - start:.1f}s")
                return current
            if time.monotonic() >= deadline:
                raise RouterError(
                    f"{name} ({current.endpoint}) still has {current.current_sessions} "
                    f"session(s) and {current.queued} queued request(s) after {timeout:g}s of "
                    "drain: wait longer, or set it to maint and accept that they are cut"
                )
            time.sleep(poll)

    def wait_ready(self, timeout: float = 10.0, poll: float = 0.1) -> dict[str, str]:
        """Wait until the Runtime API answers ``show info``; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = self.info()
                if info.get("Name"):
                    return info
                problem = "an empty answer"
            except RouterError as exc:
                problem = str(exc)
            if time.monotonic() >= deadline:
                raise RouterError(
                    f"HAProxy's Runtime API at {self.admin_host}:{self.admin_port} did not "
                    f"answer within {timeout:g}s: {problem}"
                )
            time.sleep(poll)


# --------------------------------------------------------------------------------------------
# HAProxy as a container
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouterHandle:
    """A running router container: its Runtime API client, id, published host ports
    (container port -> host port on 127.0.0.1), and its address on the network."""

    router: HaproxyRouter
    container_id: str
    name: str
    ports: dict[int, int]
    address: str


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
        labels: Mapping[str, str] | None = None,
        admin_port: int = DEFAULT_ADMIN_PORT,
        replace: bool = False,
        timeout: float = 30.0,
        log: Callable[[str], None] = print,
    ) -> RouterHandle:
        """Start the router, or reuse the running one with the same configuration.

        ``publish``: container port -> host port on 127.0.0.1 (0 = ephemeral). The Runtime API
        (``admin_port``, which ``config`` must declare) is published on an ephemeral 127.0.0.1
        port. A running router with another configuration (or image, network, ports) is replaced
        only when it serves nothing (every slot in maint) or with ``replace=True``: replacing a
        live router drops its open connections.
        """
        import docker.errors

        _check_port(admin_port, "admin port")
        declared = [int(p) for p in _ADMIN_SOCKET.findall(config)]
        if admin_port not in declared:
            raise RouterError(
                f"the configuration declares no 'stats socket ipv4@...:{admin_port}': render it "
                f"with render_config(..., admin_port={admin_port})"
            )
        for container_port, host_port in publish.items():
            _check_port(container_port, "published container port")
            if host_port != 0:
                _check_port(host_port, "published host port")
        want_ports = {admin_port: 0, **dict(publish)}
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
                why = cls._differs(existing, digest, image, network, want_ports)
                if why is None:
                    log(f"router {name}: reusing running container {existing.short_id}")
                    return cls._handle(existing, network, admin_port, timeout, log)
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
                LABEL_ROLE: "router",
                LABEL_CONFIG_HASH: digest,
            }
            try:
                container = client.containers.create(
                    image,
                    name=name,
                    labels=all_labels,
                    network=network,
                    ports={f"{c}/tcp": ("127.0.0.1", h or None) for c, h in want_ports.items()},
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
                return cls._handle(container, network, admin_port, timeout, log)
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
    def _published(attrs: Mapping[str, Any]) -> dict[int, int]:
        ports: dict[int, int] = {}
        bound = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
        for key, bindings in bound.items():
            port, _, proto = key.partition("/")
            if proto != "tcp" or not bindings:
                continue
            for binding in bindings:
                if binding.get("HostIp") in ("127.0.0.1", "0.0.0.0", "") and binding.get(
                    "HostPort"
                ):
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
        published = cls._published(attrs)
        for c, h in want_ports.items():
            if c not in published or (h and published[c] != h):
                return f"port {c} not published as wanted"
        return None

    @classmethod
    def _serving(cls, container: Container, admin_port: int) -> str | None:
        """What a running router serves ('backend/s1, ...'), None if every slot is in maint."""
        port = cls._published(container.attrs).get(admin_port)
        if port is None:
            return "an unknown number of servers (its Runtime API is not published)"
        router = HaproxyRouter("127.0.0.1", port, timeout=2.0, log=lambda _: None)
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

        while True:
            check_alive()
            ports = cls._published(container.attrs)
            if admin_port in ports:
                break
            if time.monotonic() >= deadline:
                raise RouterError(f"router {container.name}: no host port for {admin_port}")
            time.sleep(0.1)
        router = HaproxyRouter("127.0.0.1", ports[admin_port], log=log)
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
                    f"router {container.name}: the Runtime API on 127.0.0.1:{ports[admin_port]} "
                    f"did not answer within {timeout:g}s; logs: {cls._logs(container)}"
                )
            time.sleep(0.1)
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
