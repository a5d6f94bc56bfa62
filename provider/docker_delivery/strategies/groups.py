"""Moving instances in and out of the router's groups (backends), without a request lost: into a
group (assigned, weighted, seen up by HAProxy), out of it (drained, then freed), and removing
what takes no traffic.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

from collections.abc import Sequence

from docker_delivery.routing.haproxy import ServerState
from docker_delivery.routing.service import AB
from docker_delivery.strategies import drain
from docker_delivery.strategies.base import wait_router_up
from docker_delivery.strategies.state import GROUPS, Running, ServiceState
from docker_delivery.strategies.wiring import Wiring
from docker_delivery.targets.base import Instance


def take_out(
    w: Wiring,
    backend: str,
    servers: Sequence[ServerState],
    *,
    drain_timeout: float,
) -> None:
    """Servers out of ``backend``: maint (no new request, sticky ones included; in-flight ones
    finish), wait until they hold no session, free their slots (:func:`.drain.take_out`)."""
    drain.take_out(
        w.router, backend, [s.slot for s in servers], timeout=drain_timeout, mode="maint"
    )


def remove_instances(w: Wiring, members: Sequence[Running], *, grace: float) -> None:
    """Stop (SIGTERM, SIGKILL after ``grace``) and remove instances that take no traffic."""
    if members:
        w.target.remove_many([m for m in members], grace=grace)


def clear_other_groups(w: Wiring, state: ServiceState, *, grace: float) -> int:
    """Take out and remove what does not serve ``public`` (another group's instances: a warm
    old colour, leftovers), so that minimum in-service can work on the serving group's slots
    alone. Returns how many instances were removed."""
    serving = {r.id for r in state.live()}
    for group in [*GROUPS, AB]:
        if group == state.public:
            continue
        servers = state.assigned(group)
        if servers:
            take_out(w, group, servers, drain_timeout=120.0)
    leftovers = [r for r in state.running if r.id not in serving]
    if leftovers:
        w.log(f"removing {len(leftovers)} instance(s) that take no traffic")
        remove_instances(w, leftovers, grace=grace)
    return len(leftovers)


def into_group(
    w: Wiring,
    backend: str,
    instances: Sequence[Instance],
    *,
    router_up_timeout: float,
    weight: int | None = None,
    slots: Sequence[int] | None = None,
) -> list[int]:
    """Instances into ``backend``: slot = the instance's slot unless ``slots`` are given; weight
    set before the slot is ready; then HAProxy's own check must see them up. Returns the slots."""
    used = []
    for n, inst in enumerate(instances):
        slot = slots[n] if slots is not None else inst.slot
        w.router.assign(backend, slot, inst.ip, inst.port)
        if weight is not None:
            w.router.set_weight(backend, slot, weight)
        w.router.set_state(backend, slot, "ready")
        used.append(slot)
    if used:
        wait_router_up(w.router, backend, used, router_up_timeout)
    return used
