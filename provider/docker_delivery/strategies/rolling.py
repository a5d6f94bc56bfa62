"""Staged rolling deployment on Docker Swarm: two Swarm services, old and new, behind the router.

Why not ``docker service update --image``: Swarm's native update cannot stop at a partial target
(moby/swarmkit#1045 is open), and it stops old tasks without taking them out of a load balancer
first, so an app that exits on SIGTERM drops its in-flight requests. Instead each release runs as
its own Swarm service (``<service>-<env>-<config12>``, see SwarmTarget) and the rollout shifts
replicas from old to new in user-defined stages (e.g. ``[1, "50%", "100%"]``):

1. the new service is scaled up to the stage's target; its new tasks must pass the health gate,
   then enter the router (``live`` backend) and be seen up by HAProxy's check;
2. as many old tasks as are now surplus are drained at the router, their in-flight requests are
   waited for, their containers are stopped (SIGTERM, grace period; through the engine of the
   node that runs each, see targets.nodes), and right after that the old service is scaled down
   by as many. Swarm removes non-running tasks first when it scales down
   (swarmkit's replicated orchestrator sorts running tasks first and deletes from the end), so
   the tasks it removes are the ones already drained and stopped; the restart delay of our
   services (10 s) leaves it the time to do so before any restart;
3. "k/N updated" is logged, then the rollout holds: a pause in seconds, or until a continue
   (``hold`` callback: the operator polls an Airflow Variable), or it ends at ``until_stage``
   and a later run of the same operator carries on from where the services stand.

A failed health gate applies ``failure_action``: ``pause`` (the unhealthy new tasks are scaled
away, the old release keeps serving, the task fails saying where the rollout stopped),
``rollback`` (all new tasks leave the router, the new service is removed, the old one is scaled
back to full size), or ``continue`` (the failure is logged and the next stage is tried; the task
fails at the end if the rollout is not complete). The new service keeps the ``update_config`` and
``rollback_config`` given, so Swarm's own tools work on it as users expect.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace

from docker_delivery.errors import DeliveryError
from docker_delivery.errors import RolloutPaused as RolloutPaused
from docker_delivery.strategies.base import (
    DeployAborted,
    DeployResult,
    HealthGate,
    Log,
    Router,
    in_parallel,
    most_common,
    require_room,
    wait_router_up,
)
from docker_delivery.strategies.drain import take_out
from docker_delivery.strategies.settings import Rolling as Rolling
from docker_delivery.strategies.settings import resolve_stages as resolve_stages
from docker_delivery.targets.base import Instance, Release
from docker_delivery.targets.labels import LABEL_PREVIOUS_DIGEST
from docker_delivery.targets.swarm import SwarmService, SwarmTarget


class RollingDeployment:
    def __init__(
        self,
        target: SwarmTarget,
        router: Router,
        gate: HealthGate,
        *,
        backend: str = "live",
        hold: Callable[[int], None] | None = None,
        log: Log = print,
    ) -> None:
        self._target = target
        self._router = router
        self._gate = gate
        self._backend = backend
        self._hold = hold
        self._log = log

    # -- where things stand --------------------------------------------------------------
    def _rotation(self) -> dict[str, int]:
        """address -> router slot, for servers taking traffic."""
        return {
            f"{s.address}:{s.port}": s.slot
            for s in self._router.servers(self._backend)
            if s.admin_state == "ready"
        }

    def _split(self, release: Release) -> tuple[SwarmService | None, list[SwarmService]]:
        services = self._target.services(release.service, release.environment)
        new = next((s for s in services if s.config == release.config_id), None)
        return new, [s for s in services if s.config != release.config_id]

    def plan(self, release: Release, settings: Rolling) -> list[str]:
        new, olds = self._split(release)
        routed = self._rotation()
        have = len([t for t in self._target.tasks(new.name) if t.address in routed]) if new else 0
        lines = []
        for n, count in enumerate(settings.counts, start=1):
            state = "done" if have >= count else "to do"
            lines.append(f"stage {n}: {count}/{settings.count} on {release.short_digest} ({state})")
        old_names = ", ".join(s.name for s in olds) or "none"
        lines.append(f"old services: {old_names}")
        return lines

    # -- the rollout -----------------------------------------------------------------------
    def run(self, release: Release, settings: Rolling) -> DeployResult:
        started_at = time.monotonic()
        result = DeployResult(release.service, release.environment, release.digest)
        new, olds = self._split(release)
        old_tasks = sum(len(self._target.tasks(s.name)) for s in olds)
        require_room(
            self._router,
            self._backend,
            settings.slots_needed(old_tasks),
            f"a rolling deployment of {settings.count} replicas in stages "
            f"{list(settings.stages)} (new tasks enter before old ones leave)",
        )
        result.previous_digests = sorted({s.digest for s in olds})
        serving = [s for s in olds if s.replicas] or ([new] if new is not None else [])
        result.previous_digest = most_common([s.digest for s in serving for _ in range(s.replicas)])
        before = Counter(s.digest for s in olds for _ in range(max(1, s.replicas)) if s.digest)
        if before:  # on the new service: the digest a rollback goes back to (strategies.rollback)
            previous = {LABEL_PREVIOUS_DIGEST: before.most_common(1)[0][0]}
            release = replace(release, labels={**previous, **release.labels})
        if new is None:
            new = self._target.create(
                release,
                0,
                update_config=settings.update_config,
                rollback_config=settings.rollback_config,
            )
        counts = settings.counts
        last = settings.until_stage or len(counts)
        failed: list[str] = []
        for number, count in enumerate(counts[:last], start=1):
            routed_new = self._routed_tasks(new.name)
            if len(routed_new) >= count:
                self._retire_surplus(olds, settings.count - count, release, settings)
                continue
            line = f"stage {number}/{len(counts)}: {count}/{settings.count} on new release"
            self._log(line)
            result.steps.append(line)
            try:
                self._scale_up(new, count, routed_new, settings)
            except DeliveryError as exc:
                failed.append(f"stage {number}: {exc}")
                self._on_failure(new, olds, release, settings, number, exc)
                continue  # failure_action == continue
            self._retire_surplus(olds, settings.count - count, release, settings)
            result.replaced = count
            self._log(f"{count}/{settings.count} updated")
            if number < last:
                self._wait_between(number, settings)
        result.already_current = len(self._routed_tasks(new.name)) - result.replaced
        if failed:
            raise DeployAborted(
                f"{release.service}/{release.environment}: rollout incomplete "
                f"(failure_action=continue): {'; '.join(failed)}"
            )
        if last == len(counts):
            for old in olds:
                self._target.remove(old.name)
        else:
            self._log(
                f"rollout held at stage {last}/{len(counts)} (until_stage); run again to go on"
            )
        result.duration_s = time.monotonic() - started_at
        return result

    def _routed_tasks(self, name: str) -> list[Instance]:
        routed = self._rotation()
        return [t for t in self._target.tasks(name) if t.address in routed]

    def _scale_up(
        self, new: SwarmService, count: int, routed: list[Instance], settings: Rolling
    ) -> None:
        self._target.scale(new.name, count)
        tasks = self._target.wait_tasks(new.name, count, timeout=settings.start_timeout)
        routed_ids = {t.id for t in routed}
        fresh = [t for t in tasks if t.id not in routed_ids][: count - len(routed)]
        self._gate(fresh)
        self._into_rotation(fresh, settings)

    def _into_rotation(self, tasks: Sequence[Instance], settings: Rolling) -> None:
        free = self._router.free_slots(self._backend)
        if len(free) < len(tasks):
            raise DeployAborted(
                f"the router has {len(free)} free slots in {self._backend}, {len(tasks)} needed: "
                "give the router more slots (RouterSettings.slots)"
            )
        slots = []
        for task, slot in zip(tasks, free, strict=False):
            self._router.assign(self._backend, slot, task.ip, task.port)
            self._router.set_state(self._backend, slot, "ready")
            slots.append(slot)
        wait_router_up(self._router, self._backend, slots, settings.router_up_timeout)

    def _take_out(self, tasks: Sequence[Instance], grace: float, settings: Rolling) -> None:
        """Drain at the router, wait for in-flight requests, stop the containers, free the slots.

        A task an earlier run left draining (its drain timed out) still has its slot: it is
        waited for again, not stopped with its requests in flight."""
        assigned = {
            f"{s.address}:{s.port}": s.slot
            for s in self._router.servers(self._backend)
            if s.admin_state != "maint"
        }
        take_out(
            self._router,
            self._backend,
            [assigned[t.address] for t in tasks if t.address in assigned],
            timeout=settings.drain_timeout,
            stop=lambda: in_parallel(lambda task: self._target.stop_task(task, grace=grace), tasks),
        )

    def _retire_surplus(
        self, olds: list[SwarmService], keep: int, release: Release, settings: Rolling
    ) -> None:
        old_tasks = [t for s in olds for t in self._target.tasks(s.name)]
        surplus = len(old_tasks) - keep
        if surplus <= 0:
            return
        routed = self._rotation()
        # Unrouted tasks go first (they take no traffic), then the highest task slots.
        victims = sorted(old_tasks, key=lambda t: (t.address in routed, -t.slot))[:surplus]
        self._take_out(victims, release.stop_grace, settings)
        for svc in olds:
            left = len([t for t in old_tasks if t.swarm_service == svc.name and t not in victims])
            self._target.scale(svc.name, left)

    def _wait_between(self, number: int, settings: Rolling) -> None:
        if settings.pause:
            self._log(f"pausing {settings.pause:.0f}s before the next stage")
            time.sleep(settings.pause)
        if self._hold is not None:
            self._hold(number)

    def _on_failure(
        self,
        new: SwarmService,
        olds: list[SwarmService],
        release: Release,
        settings: Rolling,
        number: int,
        exc: DeliveryError,
    ) -> None:
        action = settings.failure_action
        self._log(f"stage {number} failed ({exc}); failure_action={action}")
        routed = self._routed_tasks(new.name)
        if action == "continue":
            self._target.scale(new.name, len(routed))
            return
        if action == "pause":
            self._target.scale(new.name, len(routed))
            raise RolloutPaused(
                f"{release.service}/{release.environment}: rollout paused at stage {number} "
                f"({len(routed)}/{settings.count} on {release.short_digest}): {exc}. The old "
                "release keeps serving; fix and run the deployment again to continue, or roll back"
            ) from exc
        self._restore(new, {s.name: s.replicas for s in olds}, release, settings)
        raise DeployAborted(
            f"{release.service}/{release.environment}: stage {number} failed: {exc}. Rolled back: "
            f"{release.digest} was removed and the old release serves at full size"
        ) from exc

    def _restore(
        self, new: SwarmService, sizes: dict[str, int], release: Release, settings: Rolling
    ) -> None:
        """The old services back to ``sizes`` first (health-gated, routed), then the new one out
        of the router and removed."""
        routed = self._routed_tasks(new.name)
        for name, size in sizes.items():
            self._target.scale(name, size)
        old_routed = {t.id for name in sizes for t in self._routed_tasks(name)}
        back = [
            t
            for name, size in sizes.items()
            for t in self._target.wait_tasks(name, size, timeout=settings.start_timeout)
            if t.id not in old_routed
        ][: max(0, sum(sizes.values()) - len(old_routed))]
        if back:
            self._gate(back)
            self._into_rotation(back, settings)
        self._take_out(routed, release.stop_grace, settings)
        self._target.remove(new.name)

    def abort(self, release: Release, settings: Rolling) -> DeployResult:
        """Abort a rollout of ``release`` held between stages (a human's Abort): the old
        release back to ``replicas`` tasks, health-gated and routed, before the new tasks are
        drained and the new service removed. Nothing to do when the new service is gone."""
        started_at = time.monotonic()
        result = DeployResult(release.service, release.environment, release.digest)
        new, olds = self._split(release)
        if new is None:
            self._log(f"no service runs {release.short_digest}: nothing to abort")
            result.steps.append("nothing to abort")
            return result
        if not olds:
            raise DeployAborted(
                f"{release.service}/{release.environment}: no older release runs beside "
                f"{release.short_digest}: there is nothing to go back to; roll back or deploy "
                "the release you want"
            )
        main = max(olds, key=lambda s: s.replicas)
        others = sum(s.replicas for s in olds if s is not main)
        sizes = {s.name: s.replicas for s in olds} | {main.name: max(1, settings.count - others)}
        line = (
            f"aborting: {main.name} back to {sizes[main.name]} task(s), then {new.name} "
            f"({release.short_digest}) drained and removed"
        )
        self._log(line)
        result.steps.append(line)
        result.previous_digest = main.digest
        result.previous_digests = sorted({s.digest for s in olds})
        self._restore(new, sizes, release, settings)
        result.duration_s = time.monotonic() - started_at
        return result
