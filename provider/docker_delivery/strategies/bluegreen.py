"""Blue/green: a second full copy, then all traffic at once; on one engine or on Swarm.

Targets. On the engine (EngineTarget) each instance is a container of its own; on Swarm
(SwarmTarget) each colour is a Swarm service of the release for that group,
``<service>-<env>-<group>-<config12>``, its tasks the instances and a task's slot its router
slot: preview then full capacity is a scale of that service, retiring a colour removes it. Both
offer :class:`~docker_delivery.targets.base.SlotTarget`; everything else here reads the same
labels, routes and slots. A service's instances are all on one target (``require_target``).

Groups and colours. The router of a service (``routing.service``) has three cookie-free backends,
``live``, ``blue`` and ``green``; each is a *group* an instance can serve in, and the group the
``public`` frontend routes to is the live one. Min in-service deploys into ``live``; blue/green
alternates between the two colours: the idle colour is ``green`` when ``blue`` is live and
``blue`` otherwise (so the first blue/green after a min-in-service deployment goes to ``blue``).
Each instance carries its group in the label ``io.docker-delivery.slot-group`` and its slot in
``io.docker-delivery.slot``; instance ``k`` of a colour serves in that colour's server slot ``k``.

Three steps, each usable alone (an operator each), each safe to run again:

1. :meth:`BlueGreenDeployment.deploy_idle`: the release in the idle colour, ``preview_replicas``
   instances (default: as many as the live group has), health-gated and seen up by HAProxy's own
   check, reachable on the ``preview`` frontend. Whatever else was in the idle colour (the warm
   copy of the release before, kept for a switch back) is removed first.
2. :meth:`BlueGreenDeployment.switch`: zero to hero. The idle colour is brought to full capacity
   (``replicas``, default: as many as the live group) and every instance must pass the health
   check again and be up at the router; only then ``public`` is routed to it, atomically (one
   ``set map``: every request after it goes to the new colour; requests in flight finish). A
   *switch marker* records the switch (below). Then the post-switch check watches the new live
   colour for ``post_switch_check`` seconds: its instances' health (probed directly) and the
   router's 5xx counters of its backend. When it fails, ``public`` goes back to the old colour
   (still warm, untouched) by itself and :class:`SwitchAborted` says why, with the figures.
3. :meth:`BlueGreenDeployment.retire`: after ``scale_down_delay`` seconds since the switch, the
   old group leaves its backend (maint, in-flight requests waited for) and its containers are
   stopped and removed. Until then a rollback is a switch back (``strategies.rollback``).

State lives on running objects, never in memory:

* the routes map of the router: which group is live (``public``) and which is previewed;
* the router's server slots: which instance serves in which group (address -> slot);
* labels on each container: digest, image, slot, group, and ``previous-digest`` /
  ``previous-image`` (what was live when it was deployed: a rollback reads them);
* the switch marker, a container that is created and never started (like the deployment lock),
  named ``dd-switch-<service>-<env>-<ms>``, labelled ``io.docker-delivery.role=switch-marker``
  with ``switched-at`` (UTC), ``live-group``, ``previous-group``, ``digest`` and
  ``previous-digest``. A switch writes a new marker and then removes the older ones; the newest
  is the truth. A marker whose live group is not the router's is stale (a run died between the
  switch and the marker): retire then counts the delay from now.

The module also holds what A/B and rollback share with it: reading where a service stands
(:func:`read_state`), wiring a target, router and health gate (:func:`connect`), and the markers."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from docker_delivery.errors import DeliveryError
from docker_delivery.errors import RetireNotDue as RetireNotDue
from docker_delivery.errors import SwitchAborted as SwitchAborted
from docker_delivery.health import HealthCheck
from docker_delivery.routing.haproxy import HaproxyRouter
from docker_delivery.routing.service import AB, COLOURS, LIVE, PREVIEW, PUBLIC, RouterSettings
from docker_delivery.strategies.base import (
    DeployAborted,
    DeployResult,
    DeploySettingsInvalid,
    Log,
    require_room,
    require_slots,
    wait_router_up,
)
from docker_delivery.strategies.groups import clear_other_groups as clear_other_groups
from docker_delivery.strategies.groups import into_group as into_group
from docker_delivery.strategies.groups import remove_instances as remove_instances
from docker_delivery.strategies.groups import take_out as take_out
from docker_delivery.strategies.markers import SwitchRecord as SwitchRecord
from docker_delivery.strategies.markers import last_switch as last_switch
from docker_delivery.strategies.markers import record_switch as record_switch
from docker_delivery.strategies.markers import switch_records as switch_records
from docker_delivery.strategies.post_switch import PostSwitchWatch, WatchReport
from docker_delivery.strategies.settings import BlueGreen as BlueGreen
from docker_delivery.strategies.state import GROUPS as GROUPS
from docker_delivery.strategies.state import Running as Running
from docker_delivery.strategies.state import ServiceState as ServiceState
from docker_delivery.strategies.state import idle_colour as idle_colour
from docker_delivery.strategies.state import list_running as list_running
from docker_delivery.strategies.state import read_state as read_state
from docker_delivery.strategies.state import running_kind as running_kind
from docker_delivery.strategies.state import serving_digest as serving_digest
from docker_delivery.strategies.state import with_history as with_history
from docker_delivery.strategies.watch import Prober as Prober
from docker_delivery.strategies.watch import WatchStart
from docker_delivery.strategies.watch import probe_all as probe_all
from docker_delivery.strategies.watch import watch as watch
from docker_delivery.strategies.wiring import Wiring as Wiring
from docker_delivery.strategies.wiring import connect as connect
from docker_delivery.strategies.wiring import locked as locked
from docker_delivery.strategies.wiring import require_target as require_target
from docker_delivery.targets.base import Instance, Release, TargetKind
from docker_delivery.targets.engine import pull_if_missing

if TYPE_CHECKING:
    import docker


WATCHED_HERE_FIRST = 10.0
"""Seconds of a post-switch check watched where the switch runs even when the rest is handed
over (to Airflow's triggerer): a bad release shows in its first seconds of traffic, and a
handover takes seconds before its first look."""


@dataclass
class BlueGreenResult(DeployResult):
    live: str = ""
    idle: str = ""
    switched_at: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    watch: dict[str, Any] | None = None  # a post-switch check left to run elsewhere


@dataclass(frozen=True)
class BlueGreenStatus:
    """Where a blue/green deployment stands (all read from the router and labels)."""

    live: str
    idle: str
    live_digest: str
    live_count: int
    idle_digest: str
    idle_count: int
    last_switch: SwitchRecord | None
    retire_due: dt.datetime | None  # None: nothing to retire

    def as_dict(self) -> dict[str, Any]:
        return {
            "live": self.live,
            "idle": self.idle,
            "live_digest": self.live_digest,
            "live_count": self.live_count,
            "idle_digest": self.idle_digest,
            "idle_count": self.idle_count,
            "switched_at": self.last_switch.at_utc.isoformat() if self.last_switch else None,
            "retire_due": self.retire_due.isoformat() if self.retire_due else None,
        }


class BlueGreenDeployment:
    """The three steps of a blue/green deployment (see the module docstring)."""

    def __init__(self, wiring: Wiring) -> None:
        self._w = wiring
        self._log = wiring.log
        wiring.require_backends(LIVE, *COLOURS)

    # -- where things stand --------------------------------------------------------------

    def status(self, service: str, environment: str, settings: BlueGreen) -> BlueGreenStatus:
        state = self._w.state(service, environment)
        idle = idle_colour(state.public)
        live, waiting = state.live(), state.serving(idle)
        record = last_switch(self._w.client, service, environment)
        due = None
        old = self._old_group(state, record)
        if old is not None and record is not None:
            due = dt.datetime.fromtimestamp(record.at + settings.scale_down_delay, dt.timezone.utc)
        return BlueGreenStatus(
            live=state.public,
            idle=idle,
            live_digest=state.main_digest(live),
            live_count=len(live),
            idle_digest=state.main_digest(waiting),
            idle_count=len(waiting),
            last_switch=record,
            retire_due=due,
        )

    def plan_idle(self, release: Release, settings: BlueGreen) -> list[str]:
        state = self._w.state(release.service, release.environment)
        idle = idle_colour(state.public)
        live = state.live()
        size = settings.full_size(len(live))
        first = settings.preview_replicas or size
        lines = [state.describe()]
        if state.main_config(live) == release.config_id:
            return [*lines, f"{release.short_digest} is live already: nothing to do"]
        keep = [r for r in state.serving(idle) if r.config == release.config_id]
        stale = [r for r, _ in state.members(idle, ("ready", "drain", "maint"))]
        stale = [r for r in stale if r.config != release.config_id]
        if stale:
            lines.append(f"remove {len(stale)} instance(s) of older releases from {idle}")
        lines.append(
            f"start {max(0, first - len(keep))} instance(s) of {release.short_digest} in {idle} "
            f"({len(keep)} already there); {first}/{size} before the switch"
        )
        return lines

    def _old_group(self, state: ServiceState, record: SwitchRecord | None) -> str | None:
        """The group retire would remove: the marker's previous group while it still holds
        instances; None when nothing is left to retire."""
        candidates = []
        if record is not None and record.live == state.public and record.previous != state.public:
            candidates.append(record.previous)
        live_ids = {r.id for r in state.live()}
        for group in candidates:
            left = [r for r in state.running if r.group == group and r.id not in live_ids]
            if left or state.assigned(group):
                return group
        return None

    # -- 1. the idle colour ----------------------------------------------------------------

    def deploy_idle(self, release: Release, settings: BlueGreen) -> BlueGreenResult:
        started_at = time.monotonic()
        w = self._w
        state = w.state(release.service, release.environment)
        self._refuse_ab(state)
        idle = idle_colour(state.public)
        live = state.live()
        result = BlueGreenResult(
            release.service, release.environment, release.digest, live=state.public, idle=idle
        )
        result.previous_digests = sorted({r.digest for r in live})
        result.previous_digest = state.main_digest(live) or None
        if live and state.main_config(live) == release.config_id:
            self._log(f"{release.short_digest} is live already in {state.public}: nothing to do")
            result.steps.append("already live")
            if PREVIEW in w.router.frontends():  # the preview shows what the switch would serve
                w.router.route(PREVIEW, state.public)
            return result
        size = settings.full_size(len(live))
        count = settings.preview_replicas or size
        require_room(w.router, idle, size, f"blue/green of {size} instances in {idle}")
        line = f"deploy {release.short_digest} to {idle} ({count}/{size}), {state.public} is live"
        self._log(line)
        result.steps.append(line)
        self._clear(state, idle, keep=release.config_id, settings=settings)
        state = w.state(release.service, release.environment)
        started = self._scale_to(
            state, idle, with_history(release, group=idle, previous=live), count, settings
        )
        result.replaced = len(started)
        result.already_current = count - len(started)
        if PREVIEW in w.router.frontends():
            w.router.route(PREVIEW, idle)
        result.duration_s = time.monotonic() - started_at
        return result

    def _refuse_ab(self, state: ServiceState) -> None:
        if state.public == AB:
            raise DeploySettingsInvalid(
                f"{state.service}/{state.environment}: an A/B test is running (public -> ab): "
                "finish it or roll it back before a blue/green deployment"
            )

    def _clear(self, state: ServiceState, group: str, *, keep: str, settings: BlueGreen) -> None:
        """Everything in ``group`` that is not release ``keep`` out (slots and containers)."""
        w = self._w
        live_ids = {r.id for r in state.live()}
        keep_addresses = {r.address for r in state.running if r.config == keep and r.group == group}
        out = [s for s in state.assigned(group) if s.endpoint not in keep_addresses]
        if out:
            self._log(f"{group}: taking {len(out)} slot(s) of older releases out")
            take_out(w, group, out, drain_timeout=settings.drain_timeout)
        in_group = state.in_backend(group)
        stale = [
            r
            for r in state.running
            if (r.group == group or r.id in in_group) and r.config != keep and r.id not in live_ids
        ]
        if stale:
            digests = ", ".join(sorted({r.digest[7:19] for r in stale}))
            self._log(
                f"{group}: removing {len(stale)} instance(s) of {digests} "
                "(no switch back to them after this)"
            )
            remove_instances(w, stale, grace=settings.stop_grace)

    def _scale_to(
        self,
        state: ServiceState,
        group: str,
        release: Release,
        count: int,
        settings: BlueGreen,
    ) -> list[Instance]:
        """``count`` instances of ``release`` ready in ``group`` (slots 1..count); returns those
        started now."""
        w = self._w
        ready = {r.slot for r in state.serving(group) if r.config == release.config_id}
        todo = [slot for slot in range(1, count + 1) if slot not in ready]
        if not todo:
            return []
        mine = {
            r.address for r in state.running if r.config == release.config_id and r.group == group
        }
        busy = {s.slot for s in state.assigned(group) if s.slot in todo and s.endpoint not in mine}
        if busy:
            raise DeployAborted(
                f"{group}: slots {sorted(busy)} hold other instances; run deploy_idle again to "
                "clear the idle colour"
            )
        try:
            started = w.target.start_many(release, todo)
            w.gate(started)
            into_group(w, group, started, router_up_timeout=settings.router_up_timeout)
        except DeliveryError as exc:
            for slot in todo:
                w.router.release(group, slot)
            w.target.remove_slots(release, todo, grace=0)
            raise DeployAborted(
                f"{release.service}/{release.environment}: {release.short_digest} failed in "
                f"{group}: {exc}. Its instances were removed; the live group keeps serving"
            ) from exc
        self._log(f"{group}: {count} instance(s) of {release.short_digest} ready")
        return started

    # -- 2. the switch ---------------------------------------------------------------------

    def switch(
        self,
        release: Release,
        settings: BlueGreen,
        *,
        watch_elsewhere: bool = False,
        watched: WatchReport | None = None,
    ) -> BlueGreenResult:
        """Route ``public`` to the idle colour running ``release`` (at full capacity, healthy),
        watch it, switch back by itself if the watch fails (SwitchAborted).
        ``watch_elsewhere``: return once switched, the post-switch check in ``result.watch``
        (someone else watches: the triggerer); ``watched``: how that check ended."""
        started_at = time.monotonic()
        w = self._w
        service, environment = release.service, release.environment
        if watched is not None:
            return self._after_watch(release, watched)
        state = w.state(service, environment)
        self._refuse_ab(state)
        live = state.live()
        if live and state.main_config(live) == release.config_id:
            return self._already_switched(state, release, settings, started_at)
        idle = idle_colour(state.public)
        result = BlueGreenResult(service, environment, release.digest, live=idle, idle=state.public)
        result.previous_digests = sorted({r.digest for r in live})
        result.previous_digest = state.main_digest(live) or None
        size = settings.full_size(len(live))
        waiting = [r for r in state.serving(idle) if r.config == release.config_id]
        if not waiting:
            raise DeployAborted(
                f"{service}/{environment}: {release.short_digest} does not run in {idle} (the idle "
                "colour): deploy it there first (deploy_idle)"
            )
        release = with_history(release, group=idle, previous=live)
        require_room(w.router, idle, size, f"blue/green of {size} instances in {idle}")
        if len(waiting) < size:
            self._log(f"{idle}: scaling {release.short_digest} from {len(waiting)} to {size}")
            result.replaced = len(self._scale_to(state, idle, release, size, settings))
            state = w.state(service, environment)
        # Zero to hero: full capacity, healthy now, up at the router, or no switch.
        members = state.members(idle)
        ready = [(r, s) for r, s in members if r.config == release.config_id]
        if len(ready) < size:
            raise DeployAborted(
                f"{idle} has {len(ready)}/{size} instances of {release.short_digest} ready: "
                "no switch below full capacity"
            )
        try:
            w.gate([r for r, _ in ready])
            wait_router_up(w.router, idle, [s.slot for _, s in ready], settings.router_up_timeout)
        except DeliveryError as exc:
            raise DeployAborted(
                f"{service}/{environment}: no switch to {idle}: {exc}. public still routes to "
                f"{state.public}"
            ) from exc
        previous, old_digest = state.public, state.main_digest(live)
        w.router.route(PUBLIC, idle)
        record = record_switch(
            w.client,
            service,
            environment,
            image=str(release.image),
            live=idle,
            previous=previous,
            digest=release.digest,
            previous_digest=old_digest,
            log=self._log,
        )
        line = f"public -> {idle} ({release.short_digest}, {len(ready)} instances), was {previous}"
        result.steps.append(line)
        result.switched_at = record.at_utc.isoformat()
        checked = [r for r, _ in ready]
        start = WatchStart.now(w.router, idle, checked)
        seconds = settings.post_switch_check
        here = min(seconds, WATCHED_HERE_FIRST) if watch_elsewhere else seconds
        why, figures = watch(
            w,
            idle,
            checked,
            seconds=here,
            max_5xx_ratio=settings.max_5xx_ratio,
            min_requests=settings.min_requests,
            start=start,
        )
        result.figures = figures
        if why is not None:
            self._switch_back(state, previous, idle, old_digest, release, live)
            raise self._check_failed(release, idle, previous, old_digest, why, figures)
        if here < seconds:
            check = PostSwitchWatch(start, seconds, previous if live else None, old_digest)
            result.watch = check.as_dict()
            line = (
                f"post-switch check of {idle}: {here:g}s of {seconds:g}s passed here "
                f"({figures['requests']} requests, {figures['5xx']} failed); the rest handed over"
            )
            self._log(line)
            result.steps.append(line)
            result.duration_s = time.monotonic() - started_at
            return result
        self._check_passed(idle, figures)
        result.duration_s = time.monotonic() - started_at
        return result

    def _check_passed(self, live: str, figures: Mapping[str, Any]) -> None:
        self._log(
            f"post-switch check of {live} passed: {figures['requests']} requests, "
            f"{figures['5xx']} failed, {figures['probes']} probes in {figures['seconds']}s"
        )

    def _check_failed(
        self,
        release: Release,
        checked: str,
        previous: str,
        old_digest: str,
        why: str,
        figures: Mapping[str, Any],
    ) -> SwitchAborted:
        return SwitchAborted(
            f"{release.service}/{release.environment}: the post-switch check of {checked} "
            f"failed after {figures.get('seconds', '?')}s: {why}. public went back to "
            f"{previous} ({old_digest[7:19]}); {release.short_digest} stays in {checked} for a "
            "look, until the next deployment",
            figures=figures,
        )

    def _after_watch(self, release: Release, watched: WatchReport) -> BlueGreenResult:
        """The switch, carried on after its check ran elsewhere: passed, it returns; failed, the
        switch back is recorded (the watcher routed the clients back) and SwitchAborted says
        why."""
        w, check = self._w, watched.watch
        service, environment = release.service, release.environment
        checked, previous = check.start.backend, check.previous
        state = w.state(service, environment)
        result = BlueGreenResult(
            service, environment, release.digest, live=checked, idle=idle_colour(checked)
        )
        result.previous_digest = check.previous_digest or None
        result.previous_digests = [check.previous_digest] if check.previous_digest else []
        result.figures = dict(watched.figures)
        record = last_switch(w.client, service, environment)
        result.switched_at = record.at_utc.isoformat() if record else None
        where = f"{service}/{environment}"
        if watched.verdict == "passed":
            if state.public != checked:
                raise DeployAborted(
                    f"{where}: {checked} passed its post-switch check, but public routes to "
                    f"{state.public} now: it was switched back meanwhile"
                )
            self._check_passed(checked, watched.figures)
            result.steps.append(f"post-switch check of {checked} passed")
            return result
        if watched.verdict == "failed":
            why = watched.message
            if previous is None:
                self._log(f"nothing was live before {checked}: it stays live")
                raise DeployAborted(f"{where}: the post-switch check of {checked} failed: {why}")
            old = state.serving(previous)
            if state.public == checked:  # the watcher could not route them back
                w.router.route(PUBLIC, previous)
            record_switch(
                w.client,
                service,
                environment,
                image=old[0].image if old and old[0].image else str(release.image),
                live=previous,
                previous=checked,
                digest=check.previous_digest,
                previous_digest=release.digest,
                log=self._log,
            )
            raise self._check_failed(
                release, checked, previous, check.previous_digest, why, watched.figures
            )
        if watched.verdict == "ended":
            raise DeployAborted(
                f"{where}: the post-switch check of {checked} was ended: {watched.message}"
            )
        raise DeployAborted(
            f"{where}: the post-switch check of {checked} could not run: {watched.message}. "
            f"{checked} is live: run the task again to check it again, or roll back"
        )

    def _switch_back(
        self,
        state: ServiceState,
        previous: str,
        failed: str,
        old_digest: str,
        release: Release,
        live: Sequence[Running],
    ) -> None:
        w = self._w
        if not live:
            self._log(f"nothing was live before {failed}: it stays live")
            return
        w.router.route(PUBLIC, previous)
        record_switch(
            w.client,
            state.service,
            state.environment,
            image=live[0].image or str(release.image),
            live=previous,
            previous=failed,
            digest=old_digest,
            previous_digest=release.digest,
            log=self._log,
        )

    def _already_switched(
        self, state: ServiceState, release: Release, settings: BlueGreen, started_at: float
    ) -> BlueGreenResult:
        """A switch run again (retry after a crash): check again while a switch back is possible."""
        w = self._w
        record = last_switch(w.client, state.service, state.environment)
        result = BlueGreenResult(
            state.service,
            state.environment,
            release.digest,
            live=state.public,
            idle=idle_colour(state.public),
        )
        result.already_current = len(state.live())
        result.steps.append("already live")
        if record is not None:
            result.switched_at = record.at_utc.isoformat()
        old = self._old_group(state, record)
        warm = state.serving(old) if old else []
        if record is None or not warm:
            self._log(f"{release.short_digest} is live already in {state.public}")
            return result
        self._log(f"{release.short_digest} is live already in {state.public}: checking it again")
        why, figures = watch(
            w,
            state.public,
            state.live(),
            seconds=settings.post_switch_check,
            max_5xx_ratio=settings.max_5xx_ratio,
            min_requests=settings.min_requests,
        )
        result.figures = figures
        if why is not None and old is not None:
            self._switch_back(state, old, state.public, record.previous_digest, release, warm)
            raise self._check_failed(
                release, state.public, old, record.previous_digest, why, figures
            )
        result.duration_s = time.monotonic() - started_at
        return result

    # -- 3. retire -------------------------------------------------------------------------

    def retire(
        self, service: str, environment: str, settings: BlueGreen, *, wait: bool = True
    ) -> BlueGreenResult:
        """Remove the old colour once ``scale_down_delay`` has passed since the switch: waits for
        it with ``wait``, raises :class:`RetireNotDue` otherwise."""
        started_at = time.monotonic()
        w = self._w
        state = w.state(service, environment)
        self._refuse_ab(state)
        record = last_switch(w.client, service, environment)
        result = BlueGreenResult(
            service,
            environment,
            state.main_digest(state.live()),
            live=state.public,
            idle=idle_colour(state.public),
        )
        if record is not None:
            result.switched_at = record.at_utc.isoformat()
        if record is None or record.live != state.public:
            leftovers = [r for r in state.running if r.group != state.public]
            if not leftovers:
                self._log(f"nothing to retire: only {state.public} runs")
                result.steps.append("nothing to retire")
                return result
            # A switch that left no marker: the delay counts from now.
            live = state.live()
            record = record_switch(
                w.client,
                service,
                environment,
                image=live[0].image if live else leftovers[0].image,
                live=state.public,
                previous=leftovers[0].group,
                digest=state.main_digest(live),
                previous_digest=leftovers[0].digest,
                log=self._log,
            )
        old = self._old_group(state, record)
        if old is None:
            self._log(f"nothing to retire: {record.previous} holds no instance")
            result.steps.append("nothing to retire")
            return result
        due = record.at + settings.scale_down_delay
        remaining = due - time.time()
        if remaining > 0:
            due_at = dt.datetime.fromtimestamp(due, dt.timezone.utc)
            if not wait:
                raise RetireNotDue(
                    f"{service}/{environment}: {old} may be retired at {due_at.isoformat()} "
                    f"(scale_down_delay {settings.scale_down_delay:g}s after the switch at "
                    f"{record.at_utc.isoformat()}); {remaining:.0f}s to go",
                    due=due_at,
                )
            self._log(f"waiting {remaining:.1f}s (scale_down_delay) before retiring {old}")
            time.sleep(remaining)
            state = w.state(service, environment)
            if state.public != record.live:
                raise DeployAborted(
                    f"{service}/{environment}: public moved to {state.public} while waiting to "
                    f"retire {old}: nothing retired"
                )
        live_ids = {r.id for r in state.live()}
        servers = state.assigned(old)
        if servers:
            take_out(w, old, servers, drain_timeout=settings.drain_timeout)
        in_old = state.in_backend(old)  # by the router too: a container may lack the label
        leaving = [
            r for r in state.running if (r.group == old or r.id in in_old) and r.id not in live_ids
        ]
        remove_instances(w, leaving, grace=settings.stop_grace)
        line = f"retired {old}: {len(servers)} slot(s) freed, {len(leaving)} container(s) removed"
        self._log(line)
        result.steps.append(line)
        result.previous_digests = sorted({r.digest for r in leaving})
        result.duration_s = time.monotonic() - started_at
        return result


def _start(
    client: docker.DockerClient,
    service: str,
    environment: str,
    router: RouterSettings | HaproxyRouter,
    check: HealthCheck,
    target: TargetKind,
    log: Log,
) -> tuple[Wiring, BlueGreenDeployment]:
    w = connect(client, service, environment, router=router, check=check, target=target, log=log)
    return w, BlueGreenDeployment(w)


def _check_port(release: Release, check: HealthCheck) -> None:
    if check.port != release.port:
        raise DeploySettingsInvalid(
            f"the health check probes port {check.port} but the release listens on {release.port}"
        )


def deploy_idle(
    client: docker.DockerClient,
    release: Release,
    settings: BlueGreen,
    *,
    router: RouterSettings | HaproxyRouter,
    check: HealthCheck,
    target: TargetKind = "engine",
    owner: str,
    lock_wait: float = 0.0,
    dry_run: bool = False,
    log: Log = print,
) -> BlueGreenResult:
    """Step 1 (BlueGreenDeployOperator): ``release`` in the idle colour, health-gated."""
    _check_port(release, check)
    if isinstance(router, RouterSettings) and settings.replicas is not None:
        require_slots(router.slots, settings.replicas, f"blue/green of {settings.replicas}")
    pull_if_missing(client, release, log)
    service, environment = release.service, release.environment
    if dry_run:
        _, bg = _start(client, service, environment, router, check, target, log)
        for line in bg.plan_idle(release, settings):
            log(line)
        return BlueGreenResult(service, environment, release.digest)
    with locked(client, service, environment, owner, str(release.image), lock_wait, log):
        _, bg = _start(client, service, environment, router, check, target, log)
        return bg.deploy_idle(release, settings)


def switch_traffic(
    client: docker.DockerClient,
    release: Release,
    settings: BlueGreen,
    *,
    router: RouterSettings | HaproxyRouter,
    check: HealthCheck,
    target: TargetKind = "engine",
    owner: str,
    lock_wait: float = 0.0,
    watch_elsewhere: bool = False,
    watched: WatchReport | None = None,
    log: Log = print,
) -> BlueGreenResult:
    """Step 2 (SwitchTrafficOperator): ``public`` to the idle colour running ``release``.
    ``watch_elsewhere``/``watched``: the post-switch check handed over and its report (see
    :meth:`BlueGreenDeployment.switch`); the deployment lock stays this owner's meanwhile."""
    _check_port(release, check)
    pull_if_missing(client, release, log)
    service, environment = release.service, release.environment
    with locked(client, service, environment, owner, str(release.image), lock_wait, log) as lock:
        _, bg = _start(client, service, environment, router, check, target, log)
        result = bg.switch(release, settings, watch_elsewhere=watch_elsewhere, watched=watched)
        if result.watch is not None:
            lock.keep()  # this owner's while the check runs elsewhere
        return result


def retire(
    client: docker.DockerClient,
    service: str,
    environment: str,
    settings: BlueGreen,
    *,
    router: RouterSettings | HaproxyRouter,
    check: HealthCheck,
    target: TargetKind = "engine",
    owner: str,
    wait: bool = True,
    lock_wait: float = 0.0,
    log: Log = print,
) -> BlueGreenResult:
    """Step 3 (RetireOperator): the old colour removed once ``scale_down_delay`` has passed.

    With ``wait=False`` it raises :class:`RetireNotDue` (``.due``) instead of sleeping: an
    operator can defer until then. The lock is taken only for the removal, not for the wait.
    """
    if wait:
        _, bg = _start(client, service, environment, router, check, target, log)
        status = bg.status(service, environment, settings)
        if status.retire_due is not None:
            remaining = status.retire_due.timestamp() - time.time()
            if remaining > 0:
                log(f"waiting {remaining:.1f}s (scale_down_delay) before retiring")
                time.sleep(remaining)
    image = _any_image(client, service, environment, check.port)
    if image is None:
        log(f"nothing runs for {service}/{environment}: nothing to retire")
        return BlueGreenResult(service, environment, "", steps=["nothing to retire"])
    with locked(client, service, environment, owner, image, lock_wait, log):
        _, bg = _start(client, service, environment, router, check, target, log)
        return bg.retire(service, environment, settings, wait=wait)


def blue_green_status(
    client: docker.DockerClient,
    service: str,
    environment: str,
    settings: BlueGreen,
    *,
    router: RouterSettings | HaproxyRouter,
    check: HealthCheck,
    target: TargetKind = "engine",
    log: Log = print,
) -> BlueGreenStatus:
    """Where the service stands: live and idle colours, their digests, when retire is due."""
    _, bg = _start(client, service, environment, router, check, target, log)
    return bg.status(service, environment, settings)


def _any_image(
    client: docker.DockerClient, service: str, environment: str, port: int
) -> str | None:
    """An image that is on the engine (one a container of the service runs): for lock and
    marker containers, which are created from an image but never started."""
    running = list_running(client, service, environment, port)
    return running[0].image if running and running[0].image else None
