"""Minimum in-service: replace instances batch by batch on one Docker Engine.

Never more than ``replicas`` containers run, and never fewer than ``min_in_service`` healthy
instances take traffic: a batch is at most ``replicas - min_in_service`` slots. Each batch:
drain its slots at the router; then in each slot, as soon as its own in-flight requests have
finished: stop the old container (kept, stopped, for a rollback) -> start the new release by
digest in that slot -> health gate; once every slot of the batch has passed, the batch goes back
into rotation together (HAProxy's own check must see it up) -> remove the old containers. A slot
whose requests finish early is thus started and probed while the others still drain.

A failed health check aborts, as does a drain that times out or an engine error on the way: the
batch goes back to the old containers (restarted, checked and put back in rotation) and the
deployment fails naming the check. Slots that already run the new release (digest and
environment: Release.config_id) and are in rotation are left alone, so a run killed halfway and
started again carries on where it stopped.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

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
from docker_delivery.strategies.settings import MinimumInService as MinimumInService
from docker_delivery.targets.base import Instance, Release
from docker_delivery.targets.engine import EngineTarget
from docker_delivery.targets.labels import LABEL_PREVIOUS_DIGEST


@dataclass(frozen=True)
class Batch:
    number: int
    slots: tuple[int, ...]
    old: dict[int, list[Instance]]

    def describe(self, total: int) -> str:
        parts = []
        for slot in self.slots:
            olds = self.old.get(slot) or []
            was = ", ".join(sorted({o.digest[7:19] for o in olds})) or "empty"
            parts.append(f"slot {slot} ({was})")
        return f"batch {self.number}/{total}: replace " + ", ".join(parts)


def plan(
    settings: MinimumInService,
    release: Release,
    instances: Sequence[Instance],
    in_rotation: dict[int, str],
) -> list[Batch]:
    """The batches still to do.

    ``instances`` are the service's containers, stopped ones included: a stopped container of an
    older release (left by a run that was killed after stopping it) is what its slot goes back
    to if the new release fails there. ``in_rotation`` maps ready router slots to addresses.
    """
    todo, old = [], {}
    for slot in range(1, settings.count + 1):
        here = [i for i in instances if i.slot == slot]
        current = [i for i in here if i.running and i.config == release.config_id]
        if current and in_rotation.get(slot) == current[0].address:
            continue
        todo.append(slot)
        olds = [i for i in here if i.config != release.config_id]
        old[slot] = sorted(olds, key=lambda i: not i.running)  # running ones first
    # With no old instance serving, everything still to do starts at once.
    serving = any(i.running for olds in old.values() for i in olds)
    batches = settings.batches(todo) if serving else [tuple(todo)] if todo else []
    return [Batch(n, slots, {s: old[s] for s in slots}) for n, slots in enumerate(batches, start=1)]


class MinimumInServiceDeployment:
    def __init__(
        self,
        target: EngineTarget,
        router: Router,
        gate: HealthGate,
        *,
        backend: str = "live",
        log: Log = print,
    ) -> None:
        self._target = target
        self._router = router
        self._gate = gate
        self._backend = backend
        self._log = log

    def _in_rotation(self) -> dict[int, str]:
        return {
            s.slot: f"{s.address}:{s.port}"
            for s in self._router.servers(self._backend)
            if s.admin_state == "ready"
        }

    def plan(self, release: Release, settings: MinimumInService) -> list[Batch]:
        return plan(settings, release, self._instances(release), self._in_rotation())

    def _instances(self, release: Release) -> list[Instance]:
        return self._target.instances(release.service, release.environment, include_stopped=True)

    def run(self, release: Release, settings: MinimumInService) -> DeployResult:
        started_at = time.monotonic()
        require_room(
            self._router,
            self._backend,
            settings.slots_needed(),
            f"minimum in-service of {settings.count} replicas",
        )
        result = DeployResult(release.service, release.environment, release.digest)
        instances = self._instances(release)
        batches = plan(settings, release, instances, self._in_rotation())
        # What served before: the older releases still running (a retry of a deployment killed
        # half-way has both), else what runs (a redeploy of the digest that runs).
        running = [i for i in instances if i.running]
        result.previous_digest = most_common(
            [i.digest for i in running if i.config != release.config_id]
        ) or most_common([i.digest for i in running])
        result.already_current = settings.count - sum(len(b.slots) for b in batches)
        result.previous_digests = sorted(
            {o.digest for b in batches for olds in b.old.values() for o in olds if o.running}
        )
        before = Counter(
            o.digest
            for b in batches
            for olds in b.old.values()
            for o in olds
            if o.digest != release.digest
        )
        if before:  # on the new instances: the digest a rollback goes back to (strategies.rollback)
            previous = {LABEL_PREVIOUS_DIGEST: before.most_common(1)[0][0]}
            release = replace(release, labels={**previous, **release.labels})
        if not batches:
            self._log(
                f"all {settings.count} instances already run {release.short_digest} "
                f"(config {release.config_id})"
            )
        done = result.already_current
        for batch in batches:
            line = batch.describe(len(batches))
            self._log(line)
            result.steps.append(line)
            self._run_batch(release, settings, batch)
            done += len(batch.slots)
            result.replaced += len(batch.slots)
            self._log(f"{done}/{settings.count} updated")
        self._clean_up(release, settings)
        result.duration_s = time.monotonic() - started_at
        return result

    def _run_batch(self, release: Release, settings: MinimumInService, batch: Batch) -> None:
        router, backend = self._router, self._backend
        routed = {s.slot for s in router.servers(backend) if s.admin_state != "maint"}
        for slot in batch.slots:
            if slot in routed:
                router.set_state(backend, slot, "drain")
        started: dict[int, Instance] = {}
        failed = threading.Event()

        def replace_slot(slot: int) -> None:
            # Each slot goes on as soon as its own requests have finished: its old container
            # stops, then (never more than replicas running) the new one starts and is probed
            # while the batch's other slots may still drain. Once a slot has failed, the others
            # stop nothing more: the batch goes back.
            try:
                if slot in routed:
                    router.wait_drained(backend, slot, settings.drain_timeout)
                if failed.is_set():
                    return
                for old in batch.old[slot]:
                    if old.running:
                        self._target.stop(old, grace=release.stop_grace)
                if slot in routed:
                    router.set_state(backend, slot, "maint")
                started[slot] = self._target.start(release, slot)
                self._gate([started[slot]])
            except BaseException:
                failed.set()
                raise

        try:
            in_parallel(replace_slot, batch.slots)
            # The batch takes traffic together, once every slot of it has passed.
            self._into_rotation([started[slot] for slot in batch.slots], settings)
        except Exception as exc:  # a failed check, a drain that timed out, an engine error
            self._roll_back(batch, [started[s] for s in batch.slots if s in started], settings)
            olds = sorted({o.digest for olds in batch.old.values() for o in olds})
            back = f"went back to {', '.join(olds)}" if olds else "was removed"
            raise DeployAborted(
                f"{release.service}/{release.environment}: batch {batch.number} "
                f"(slots {list(batch.slots)}) failed: {exc}. The batch {back}; "
                f"{release.digest} is not deployed there"
            ) from exc
        for slot in batch.slots:
            for old in batch.old[slot]:
                self._target.remove(old)

    def _into_rotation(self, instances: Sequence[Instance], settings: MinimumInService) -> None:
        for inst in instances:
            self._router.assign(self._backend, inst.slot, inst.ip, inst.port)
            self._router.set_state(self._backend, inst.slot, "ready")
        wait_router_up(
            self._router, self._backend, [i.slot for i in instances], settings.router_up_timeout
        )

    def _roll_back(
        self, batch: Batch, started: Sequence[Instance], settings: MinimumInService
    ) -> None:
        for inst in started:
            self._router.set_state(self._backend, inst.slot, "maint")
            self._target.remove(inst)
        restored = [self._target.restart(o) for slot in batch.slots for o in batch.old[slot][:1]]
        if restored:
            self._gate(restored)
            self._into_rotation(restored, settings)
            self._log(f"batch {batch.number}: slots {list(batch.slots)} back on the old release")

    def _clean_up(self, release: Release, settings: MinimumInService) -> None:
        """Remove what a killed run may have left: stopped containers, slots beyond replicas."""
        everything = self._target.instances(
            release.service, release.environment, include_stopped=True
        )
        for inst in everything:
            if inst.slot > settings.count and inst.running:
                take_out(
                    self._router,
                    self._backend,
                    [inst.slot],
                    timeout=settings.drain_timeout,
                    stop=functools.partial(self._target.stop, inst, grace=release.stop_grace),
                )
            if not inst.running or inst.slot > settings.count:
                self._target.remove(inst)
