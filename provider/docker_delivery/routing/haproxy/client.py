"""HaproxyRouter: one router driven through its Runtime API. Every change is read back from HAProxy
and compared with what was asked; a difference raises RouterError.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from docker_delivery.errors import RelayError
from docker_delivery.errors import RouterError as RouterError

if TYPE_CHECKING:
    from docker_delivery.targets.relay import RuntimeRelay
from docker_delivery.routing.haproxy.config import (
    ROUTES_MAP,
    SLOT_PREFIX,
    UNASSIGNED,
    check_name,
    check_port,
)
from docker_delivery.routing.haproxy.runtime import (
    ADMIN_STATES,
    AdminState,
    BackendStats,
    ServerState,
    backend_stats,
    parse_info,
    parse_map,
    parse_stat_csv,
    reply_error,
    server_states,
)

_ADDR_ACCEPTED = re.compile(r"^(IP changed from|no need to change the addr)")


class HaproxyRouter:
    """An HAProxy's Runtime API on ``admin_host:admin_port`` (TCP, one command per connection), or
    carried by ``relay`` through the engine into the router container (:meth:`through`).

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
        relay: RuntimeRelay | None = None,
    ) -> None:
        self.admin_host = admin_host
        self.admin_port = admin_port
        self.timeout = timeout
        self.map_path = map_path
        self.slot_prefix = slot_prefix
        self.relay = relay
        self._log = log

    @classmethod
    def through(cls, relay: RuntimeRelay, *, log: Callable[[str], None] = print) -> HaproxyRouter:
        """The router whose Runtime API ``relay`` reaches through the engine (no open port)."""
        return cls(relay.host, relay.port, timeout=relay.timeout, log=log, relay=relay)

    @property
    def where(self) -> str:
        return self.relay.where if self.relay else f"{self.admin_host}:{self.admin_port}"

    def __repr__(self) -> str:
        if self.relay:
            return f"HaproxyRouter.through({self.relay!r})"
        return f"HaproxyRouter({self.admin_host!r}, {self.admin_port})"

    # -- transport ------------------------------------------------------------------------

    def _send(self, cmd: str) -> str:
        where = self.where
        if self.relay is not None:
            try:
                return self.relay.send(cmd)
            except RelayError as exc:
                raise RouterError(
                    f"HAProxy's Runtime API at {where} did not answer {cmd!r}: {exc}"
                ) from exc
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
        check_name(backend, "backend")
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
        check_name(backend, "backend")
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
        check_port(port, "server port")
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
        check_name(frontend, "frontend")
        check_name(backend, "backend")
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
                    f"HAProxy's Runtime API at {self.where} did not answer within "
                    f"{timeout:g}s: {problem}"
                )
            time.sleep(poll)
