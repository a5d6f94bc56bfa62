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
routes) and the deployment steps must assign the slots again."""

from docker_delivery.errors import RouterError
from docker_delivery.routing.haproxy.client import (
    HaproxyRouter,
)
from docker_delivery.routing.haproxy.config import (
    CONFIG_DIR,
    CONFIG_PATH,
    DEFAULT_ADMIN_PORT,
    ROUTES_MAP,
    SLOT_PREFIX,
    UNASSIGNED,
    BackendSpec,
    FrontendSpec,
    config_hash,
    render_config,
)
from docker_delivery.routing.haproxy.container import (
    RouterContainer,
    RouterHandle,
)
from docker_delivery.routing.haproxy.runtime import (
    ADMF_CMAINT,
    ADMF_DRAIN,
    ADMF_FDRAIN,
    ADMF_FMAINT,
    ADMF_IDRAIN,
    ADMF_IMAINT,
    ADMF_MAINT,
    ADMF_RMAINT,
    ADMIN_STATES,
    AdminState,
    BackendStats,
    ServerState,
    ServerStats,
    admin_state_of,
    backend_stats,
    operational_of,
    parse_info,
    parse_map,
    parse_servers_state,
    parse_stat_csv,
    reply_error,
    server_states,
    slot_of,
)

__all__ = [
    "ADMF_CMAINT",
    "ADMF_DRAIN",
    "ADMF_FDRAIN",
    "ADMF_FMAINT",
    "ADMF_IDRAIN",
    "ADMF_IMAINT",
    "ADMF_MAINT",
    "ADMF_RMAINT",
    "ADMIN_STATES",
    "CONFIG_DIR",
    "CONFIG_PATH",
    "DEFAULT_ADMIN_PORT",
    "ROUTES_MAP",
    "SLOT_PREFIX",
    "UNASSIGNED",
    "AdminState",
    "BackendSpec",
    "BackendStats",
    "FrontendSpec",
    "HaproxyRouter",
    "RouterContainer",
    "RouterError",
    "RouterHandle",
    "ServerState",
    "ServerStats",
    "admin_state_of",
    "backend_stats",
    "config_hash",
    "operational_of",
    "parse_info",
    "parse_map",
    "parse_servers_state",
    "parse_stat_csv",
    "render_config",
    "reply_error",
    "server_states",
    "slot_of",
]
