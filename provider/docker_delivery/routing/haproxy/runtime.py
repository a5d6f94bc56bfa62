"""What HAProxy's Runtime API answers, parsed: servers' states (admin and operational), the stats
CSV, the routes map, ``show info``, and refusals.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from docker_delivery.errors import RouterError as RouterError

if TYPE_CHECKING:
    pass
from docker_delivery.routing.haproxy.config import SLOT_PREFIX, UNASSIGNED

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


# First line of a refusal. Data replies start with "#", a digit, "0x" or "Name:" and are never
# tested against this.
_ERROR_REPLY = re.compile(
    r"^(unknown|no such|can't|cannot|unable|invalid|require|missing|permission denied|empty|"
    r"absolute weight|relative weight|backend is using|entry not found|.*\bexpects\b|"
    r".*\bnot found\b|.*\bnot allowed\b|.*\bfailed\b|.*\berror\b)",
    re.IGNORECASE,
)


_DATA_REPLY = re.compile(r"^(#|\d|0x|Name:)")


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


@dataclass(frozen=True, kw_only=True)
class Traffic:
    """Traffic counters of a server or a backend (from ``show stat``); times are averages in ms
    over the last 1024 requests."""

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

    @staticmethod
    def counters(row: Mapping[str, str]) -> dict[str, Any]:
        """The counters of one ``show stat`` row, by field name."""
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


@dataclass(frozen=True, kw_only=True)
class ServerStats(Traffic):
    """Traffic counters of one server; ``selected``: how often the balancer chose it."""

    name: str
    slot: int
    address: str
    selected: int


@dataclass(frozen=True, kw_only=True)
class BackendStats(Traffic):
    """Traffic counters of a backend and of each of its servers."""

    backend: str
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
                **Traffic.counters(row),
            )
        )
    servers.sort(key=lambda s: s.slot)
    return BackendStats(backend=backend, servers=tuple(servers), **Traffic.counters(totals))
