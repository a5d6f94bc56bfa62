"""What the deployment strategies share: the router and health gate they drive, and the results.

A strategy is data that validates itself (settings) plus a plan that can be printed before it is
applied (dry run), executed by a runner that first looks where things stand (labels on the
running objects, the router's state) and then does only what is missing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from docker_delivery.errors import DeployAborted as DeployAborted
from docker_delivery.errors import DeploySettingsInvalid as DeploySettingsInvalid
from docker_delivery.targets.base import Instance

if TYPE_CHECKING:
    from docker_delivery.health import HealthCheck

Log = Callable[[str], None]
# Waits until every instance passes the health check; raises a DeliveryError naming the check.
HealthGate = Callable[[Sequence[Instance]], None]


class Router(Protocol):
    """What strategies need from a router (HaproxyRouter implements it)."""

    def servers(self, backend: str) -> Sequence[Any]: ...
    def assign(self, backend: str, slot: int, address: str, port: int) -> object: ...
    def set_state(
        self, backend: str, slot: int, state: Literal["ready", "drain", "maint"]
    ) -> object: ...
    def wait_drained(self, backend: str, slot: int, timeout: float) -> object: ...
    def release(self, backend: str, slot: int) -> object: ...
    def free_slots(self, backend: str) -> list[int]: ...


Verdict = Literal["passed", "failed", "ended", "error"]
"""How a watch run elsewhere (a step's bake, a post-switch check) ended: passed; failed (the
clients were sent back); ended (someone else moved the traffic meanwhile); error (it could not
look)."""
VERDICTS: tuple[Verdict, ...] = ("passed", "failed", "ended", "error")


@dataclass
class DeployResult:
    """What a deployment did. ``previous_digest``: what served before it (the same digest when
    it released again what already ran); ``previous_digests``: every digest it replaced."""

    service: str
    environment: str
    digest: str
    previous_digests: list[str] = field(default_factory=list)
    previous_digest: str | None = None
    replaced: int = 0
    already_current: int = 0
    steps: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return result_dict(self)


def result_dict(result: Any) -> dict[str, Any]:
    """A result (a dataclass) as JSON-able data for XCom: every field, a subclass's too, with
    durations (``*_s``) to the millisecond."""
    data = asdict(result)
    for key, value in data.items():
        if key.endswith("_s") and isinstance(value, float):
            data[key] = round(value, 3)
    return data


def most_common(digests: Sequence[str]) -> str | None:
    """The digest most of ``digests`` run (what serves), None when there are none."""
    counts = Counter(d for d in digests if d)
    return counts.most_common(1)[0][0] if counts else None


def in_parallel(work: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``work`` on each item at once (threads); results in order; the first error is raised
    once every call has ended, so nothing is left half-done behind the caller's back."""
    import concurrent.futures

    if len(items) <= 1:
        return [work(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = [pool.submit(work, item) for item in items]
        concurrent.futures.wait(futures)
    return [f.result() for f in futures]


def require_room(router: Any, backend: str, needed: int, what: str) -> None:
    """DeploySettingsInvalid, before anything changes, unless ``router``'s ``backend`` has
    ``needed`` server slots: a deployment that ran out of slots half-way would leave instances
    running outside the router."""
    require_slots(len(router.servers(backend)), needed, f"{what} (backend {backend!r})")


def require_slots(have: int, needed: int, what: str) -> None:
    """DeploySettingsInvalid unless a router of ``have`` slots per backend holds ``needed``."""
    if needed > have:
        raise DeploySettingsInvalid(
            f"{what} needs {needed} router slots; the router has {have}: give it at least "
            f"{needed} (router.slots in the environment spec, RouterSettings.slots), or fewer "
            "replicas"
        )


def wait_router_up(router: Any, backend: str, slots: Sequence[int], timeout: float) -> None:
    """Put ``slots`` up at the router and wait until HAProxy reports them up.

    Callers pass slots whose instances have just passed the deployment's health gate, so they
    are marked up at once (:meth:`HaproxyRouter.mark_up`) rather than after HAProxy's own
    ``rise`` checks, which would only repeat the gate; HAProxy's checks go on from there.
    """
    import time

    for slot in slots:
        router.mark_up(backend, slot)
    deadline = time.monotonic() + timeout
    while True:
        states = {s.slot: s for s in router.servers(backend)}
        down = [n for n in slots if states[n].operational != "up"]
        if not down:
            return
        if time.monotonic() > deadline:
            raise DeployAborted(
                f"the router's check does not see slots {down} of {backend} up after "
                f"{timeout:.0f}s (HAProxy reports "
                f"{', '.join(f'{n}: {states[n].operational}' for n in down)})"
            )
        time.sleep(0.05)


def health_deadline(check: HealthCheck) -> float:
    """How long a new instance may take to become healthy before the deployment gives up."""
    return (
        check.start_period
        + (check.healthy_threshold + check.unhealthy_threshold) * (check.interval + check.timeout)
        + 30.0
    )


def health_gate(
    check: Any,
    exit_reason: Callable[[Instance], str | None],
    *,
    deadline: float,
    log: Log = print,
    transport: Any = None,
) -> HealthGate:
    """A gate probing each instance with ``check`` (docker_delivery.health) until healthy.

    ``exit_reason`` (the target's) stops the wait at once when an instance's container exits.
    ``transport``: how the probes travel (the router's :class:`~docker_delivery.targets.relay.
    ProbeTransport`, so that the worker needs no route to the instances; None: from here).
    """
    import asyncio

    from docker_delivery.health import wait_all_healthy_sync

    def gate(instances: Sequence[Instance]) -> None:
        if not instances:
            return
        for instance in instances:  # an instance with no address has exited (or never ran)
            if not instance.ip:
                gone = exit_reason(instance)
                raise DeployAborted(
                    gone or f"{instance.name} has no address on its network: it is not running"
                )
        by_address = {i.address: i for i in instances}

        async def is_alive(address: str) -> str | None:
            return await asyncio.to_thread(exit_reason, by_address[address])

        wait_all_healthy_sync(
            list(by_address),
            check,
            deadline=deadline,
            is_alive=is_alive,
            log=log,
            transport=transport,
        )

    return gate
