"""A/B test: variant B next to A in the sticky ``ab`` backend, step by step.

On the engine each instance is a container; on Swarm each variant is a Swarm service for its
group (``<service>-<env>-<group>-<config12>``), its tasks the instances (see bluegreen).

Variant A is what serves now: the instances ready in the live group (its *home*, ``live``,
``blue`` or ``green``). The test:

1. A's instances are put in the ``ab`` backend as well (same containers, weight 1 each), HAProxy's
   check must see them up, then ``public`` is routed to ``ab`` (atomic; nothing changes for users
   but the sticky cookie ``dd_ab`` HAProxy starts to set).
2. For each step ``w`` (e.g. 5, 25, 50, 100 %): B is scaled up *ahead* of the step so that no B
   instance takes more than its share: ``ceil(replicas * w / 100)`` instances, started by digest,
   health-gated, put in ``ab`` at weight 0 and seen up by HAProxy's check. Then the server weights
   are set so that A's servers together take ``100 - w`` % of the new clients and B's ``w`` %
   (per server: A ``(100-w) * nB``, B ``w * nA``, reduced). Clients keep their server through
   the cookie (a client that met B stays on B).
3. During the step's ``bake_time`` the analysis reads HAProxy's own per-server counters (``show
   stat``) every ``poll`` seconds and compares B's deltas since the step began with the
   thresholds: 5xx (plus connection and response errors) over requests against
   ``max_5xx_ratio``, and HAProxy's average response time of B's servers against
   ``max_response_ms``, once B has served ``min_requests``. A breach aborts at once: ``public``
   goes back to A's home group (A never left it), B's servers are put in maintenance, their
   in-flight requests are waited for, B's containers are removed, and :class:`ABTestAborted`
   carries the figures. Too few requests by the end of the bake: the step waits for them up to
   ``max_bake_time``, then aborts as inconclusive. The bake may be run elsewhere
   (``bake_elsewhere``: Airflow's triggerer): the runner stops once the step's weights are set,
   handing over its :class:`~docker_delivery.strategies.ab_analysis.StepBake`, and is called again
   with the verdict (``baked``); the judging is the same function (``ab_analysis.judge``).
4. At 100 %: promotion. A's servers leave the home group (not routed now), B's instances take
   their slots there (B's instance ``k`` in slot ``k``), HAProxy must see them up, ``public`` is
   routed back to the home group, the ``ab`` backend is emptied (in-flight requests waited for)
   and A's containers are removed. The home group never carries a cookie, so later
   min-in-service drains are not held up by sticky clients.

State read back on every run (a retry after a crash carries on): ``public`` -> ``ab`` means a
test is under way; B is the release's config, A the other one; B's labels name its home group
(``io.docker-delivery.slot-group``) and A's digest (``previous-digest``); the step reached is B's
share of the ``ab`` weights; B in the home group means the promotion had begun.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from docker_delivery.errors import ABTestAborted as ABTestAborted
from docker_delivery.errors import DeliveryError
from docker_delivery.health import HealthCheck
from docker_delivery.routing.haproxy import HaproxyRouter
from docker_delivery.routing.service import AB, COLOURS, LIVE, PUBLIC, RouterSettings
from docker_delivery.strategies.ab_analysis import BakeReport, StepBake, judge
from docker_delivery.strategies.base import (
    DeployAborted,
    DeployResult,
    DeploySettingsInvalid,
    Log,
    require_room,
)
from docker_delivery.strategies.groups import into_group, remove_instances, take_out
from docker_delivery.strategies.settings import ABTest as ABTest
from docker_delivery.strategies.state import Running, ServiceState, with_history
from docker_delivery.strategies.wiring import Wiring, connect, locked
from docker_delivery.targets.base import Instance, Release, TargetKind
from docker_delivery.targets.engine import pull_if_missing

if TYPE_CHECKING:
    import docker


@dataclass(frozen=True)
class StepEvent:
    """A step's traffic starts (``"start"``: its weights are set) or ends (``"end"``: its
    weights are about to change: next step, promotion or abort). Between the two, B gets
    ``weight`` % of the new clients."""

    number: int  # from 1
    weight: int
    event: Literal["start", "end"]


StepCallback = Callable[[StepEvent], None]


def split_weights(weight: int, a_count: int, b_count: int) -> tuple[int, int]:
    """Per-server weights (A, B) so that A's servers together take ``100 - weight`` % and B's
    ``weight`` % under roundrobin; HAProxy weights are 0..256."""
    if weight >= 100 or a_count == 0:
        return 0, 1
    if weight <= 0 or b_count == 0:
        return 1, 0
    a, b = (100 - weight) * b_count, weight * a_count
    g = math.gcd(a, b)
    a, b = a // g, b // g
    top = max(a, b)
    if top > 256:
        a, b = max(1, round(a * 256 / top)), max(1, round(b * 256 / top))
    return a, b


def weight_order(
    current: Mapping[int, int], target: Mapping[int, int], b_slots: set[int]
) -> list[tuple[int, int]]:
    """The weight changes (slot, weight), one server at a time, in an order that keeps B's share
    between its old and its new value all along (e.g. A's weights go up before B's first one)."""

    def share(weights: Mapping[int, int]) -> float:
        total = sum(weights.values())
        return sum(v for k, v in weights.items() if k in b_slots) / total if total else 0.0

    weights = dict(current)
    lo, hi = sorted((share(weights), share({**weights, **target})))
    todo = {k: v for k, v in target.items() if weights.get(k) != v}
    order = []
    while todo:

        def outside(slot: int) -> float:
            after = share({**weights, slot: todo[slot]})
            return max(lo - after, after - hi, 0.0)

        slot = min(sorted(todo), key=outside)
        weights[slot] = todo.pop(slot)
        order.append((slot, weights[slot]))
    return order


@dataclass
class ABResult(DeployResult):
    home: str = ""
    promoted: bool = False
    figures: list[dict[str, Any]] = field(default_factory=list)
    bake: dict[str, Any] | None = None  # a step left to bake elsewhere (StepBake.as_dict)


@dataclass(frozen=True)
class _Sides:
    home: str
    a: list[Running]  # A's running instances
    b: list[Running]  # B's running instances (the release's config)


class ABDeployment:
    """Runs an :class:`ABTest` of a release against what is live (see the module docstring)."""

    def __init__(self, wiring: Wiring) -> None:
        self._w = wiring
        self._log = wiring.log
        self._on_step: StepCallback | None = None
        self._current: StepEvent | None = None  # the step whose weights are set (for events)
        wiring.require_backends(LIVE, *COLOURS, AB)

    def _event(self, number: int, weight: int, event: Literal["start", "end"]) -> None:
        if event == "end" and self._current is None:
            return
        step = StepEvent(number, weight, event)
        self._current = step if event == "start" else None
        if self._on_step is not None:
            self._on_step(step)

    def _end_step(self) -> None:
        if self._current is not None:
            self._event(self._current.number, self._current.weight, "end")

    # -- where things stand --------------------------------------------------------------

    def _sides(self, state: ServiceState, release: Release) -> _Sides:
        config = release.config_id
        if state.public != AB:
            home = state.public
            a = state.live()
        else:
            in_ab = [r for r, _ in state.members(AB, ("ready", "drain", "maint"))]
            a = [r for r in in_ab if r.config != config]
            b_labels = [r for r in state.running if r.config == config]
            if b_labels:
                home = b_labels[0].group
            elif a:
                home = a[0].group
            else:
                raise DeployAborted(
                    f"{state.service}/{state.environment}: public routes to ab, which serves "
                    "nothing known: roll back (strategies.rollback) to restore the live group"
                )
        b = [r for r in state.running if r.config == config and r.group == home]
        return _Sides(home, [r for r in a if r.config != config], b)

    def _share(self, state: ServiceState, sides: _Sides) -> float:
        """B's share (%) of the ab backend's ready weights."""
        b_ids = {r.id for r in sides.b}
        total = b_weight = 0
        for member, server in state.members(AB):
            total += server.weight
            if member.id in b_ids:
                b_weight += server.weight
        return 100.0 * b_weight / total if total else 0.0

    def plan(self, release: Release, settings: ABTest) -> list[str]:
        state = self._w.state(release.service, release.environment)
        sides = self._sides(state, release)
        total = settings.replicas or len(sides.a)
        lines = [state.describe()]
        if state.public != AB:
            lines.append(f"put A ({len(sides.a)} instance(s) of {sides.home}) in ab; public -> ab")
        for n, weight in enumerate(settings.steps, start=1):
            count = settings.b_count(total, weight)
            a_w, b_w = split_weights(weight, len(sides.a), count)
            lines.append(
                f"step {n}: {weight}% to B: {count}/{total} B instance(s), weights A {a_w} x "
                f"{len(sides.a)} / B {b_w} x {count}; bake {settings.bake_time:g}s"
            )
        lines.append(f"promote: B into {sides.home}, public -> {sides.home}, A removed")
        return lines

    # -- the test ---------------------------------------------------------------------------

    def run(
        self,
        release: Release,
        settings: ABTest,
        *,
        on_step: StepCallback | None = None,
        bake_elsewhere: bool = False,
        baked: BakeReport | None = None,
    ) -> ABResult:
        """The test, from where it stands. ``bake_elsewhere``: stop once a step's weights are
        set, its analysis in ``result.bake`` (someone else bakes it: the triggerer); ``baked``:
        how that bake ended, to carry on from (the next step, or the abort)."""
        started_at = time.monotonic()
        self._on_step, self._current = on_step, None
        w = self._w
        service, environment = release.service, release.environment
        if baked is not None and baked.verdict != "passed":
            self._bake_failed(release, settings, baked)
        state = w.state(service, environment)
        if baked is not None and state.public != AB:
            raise DeployAborted(
                f"{service}/{environment}: step {baked.bake.number} of the A/B test passed its "
                f"bake, but public routes to {state.public} now, not ab: the test was ended "
                "meanwhile; nothing was changed"
            )
        sides = self._sides(state, release)
        result = ABResult(service, environment, release.digest, home=sides.home)
        result.previous_digests = sorted({r.digest for r in sides.a})
        result.previous_digest = state.main_digest(sides.a or state.live()) or None
        if state.public != AB:
            live = state.live()
            if not live:
                raise DeployAborted(
                    f"{service}/{environment}: nothing is live to test against; deploy a first "
                    "release with another deployment type"
                )
            if state.main_config(live) == release.config_id:
                self._log(f"{release.short_digest} is live already in {sides.home}: nothing to do")
                result.steps.append("already live")
                return result
        total = settings.replicas or len(sides.a)
        require_room(
            w.router, AB, len(sides.a) + total, f"an A/B test of {len(sides.a)} A and {total} B"
        )
        require_room(w.router, sides.home, total, f"promoting {total} B instances")
        b_release = with_history(release, group=sides.home, previous=sides.a)
        if state.public == AB and any(
            r.config == release.config_id for r in state.serving(sides.home)
        ):
            self._log("the promotion had begun: carrying on with it")
        else:
            if state.public != AB:
                self._open(state, sides, settings)
                done = 0.0
            else:
                done = self._share(state, sides)
                self._log(f"A/B test under way: B has {done:.0f}% of the weights; carrying on")
            passed = 0
            if baked is not None:  # the step baked elsewhere passed: on to the next
                passed = baked.bake.number
                self._current = StepEvent(passed, baked.bake.weight, "start")
                if self._passed(result, settings, baked.figures):
                    result.duration_s = time.monotonic() - started_at
                    return result
            for number, weight in enumerate(settings.steps, start=1):
                if number <= passed or weight + 0.5 < done:
                    continue
                line = f"step {number}/{len(settings.steps)}: {weight}% to B"
                self._log(line)
                result.steps.append(line)
                figures = self._step(
                    b_release, settings, sides.home, number, weight, total, bake_elsewhere
                )
                if isinstance(figures, StepBake):
                    line = f"step {number} ({weight}%): bake of {settings.bake_time:g}s handed over"
                    self._log(line)
                    result.steps.append(line)
                    result.bake = figures.as_dict()
                    result.duration_s = time.monotonic() - started_at
                    return result
                if self._passed(result, settings, figures):
                    result.duration_s = time.monotonic() - started_at
                    return result
        self._promote(release, settings, sides.home, total)
        result.steps.append(f"promoted: public -> {sides.home}")
        result.promoted = True
        result.replaced = total
        result.duration_s = time.monotonic() - started_at
        return result

    def _open(self, state: ServiceState, sides: _Sides, settings: ABTest) -> None:
        """A into the ab backend next to nothing else, then public -> ab."""
        w = self._w
        stale = state.assigned(AB)
        if stale:
            take_out(w, AB, stale, drain_timeout=settings.drain_timeout)
        free = w.router.free_slots(AB)
        if len(free) < len(sides.a):
            raise DeployAborted(
                f"the router has {len(free)} free slots in ab, {len(sides.a)} needed"
            )
        into_group(
            w,
            AB,
            [r for r in sides.a],
            router_up_timeout=settings.router_up_timeout,
            weight=1,
            slots=free[: len(sides.a)],
        )
        w.router.route(PUBLIC, AB)
        self._log(f"A/B test open: public -> ab ({len(sides.a)} A instance(s) of {sides.home})")

    def _step(
        self,
        release: Release,
        settings: ABTest,
        home: str,
        number: int,
        weight: int,
        total: int,
        bake_elsewhere: bool = False,
    ) -> dict[str, Any] | StepBake:
        """B scaled for the step, the weights set, then the step's bake: its figures, or its
        :class:`StepBake` to run elsewhere (``bake_elsewhere``). A failed bake aborts (raises)."""
        w = self._w
        count = settings.b_count(total, weight)
        state = w.state(release.service, release.environment)
        try:
            self._scale_b(state, release, settings, count, total)
        except DeliveryError as exc:
            self._abort(release, settings, home, f"B did not start: {exc}", {"step": number})
        state = w.state(release.service, release.environment)
        a_servers = [s for r, s in state.members(AB) if r.config != release.config_id]
        b_servers = [s for r, s in state.members(AB) if r.config == release.config_id]
        a_w, b_w = split_weights(weight, len(a_servers), len(b_servers))
        current = {s.slot: s.weight for s in [*a_servers, *b_servers]}
        target = {**{s.slot: a_w for s in a_servers}, **{s.slot: b_w for s in b_servers}}
        self._end_step()
        for slot, value in weight_order(current, target, {s.slot for s in b_servers}):
            w.router.set_weight(AB, slot, value)
        self._log(
            f"weights: A {a_w} x {len(a_servers)}, B {b_w} x {len(b_servers)} ({weight}% to B)"
        )
        self._event(number, weight, "start")
        bake = StepBake.start(
            number,
            weight,
            home,
            [s.slot for s in a_servers],
            [s.slot for s in b_servers],
            w.router.stats(AB),
        )
        if bake_elsewhere:
            return bake
        figures = self._bake(settings, bake)
        if figures.get("failed"):
            self._abort(release, settings, home, str(figures["failed"]), figures)
        return figures

    def _passed(self, result: ABResult, settings: ABTest, figures: Mapping[str, Any]) -> bool:
        """Log a passed step and keep its figures; True when the test stops after it
        (``until_step``)."""
        number, weight = figures["step"], figures["weight"]
        self._log(
            f"step {number} ({weight}%) passed: B {figures['b_requests']} requests, "
            f"{figures['b_5xx']} 5xx, rtime {figures['b_rtime_ms']} ms; A "
            f"{figures['a_requests']} requests, {figures['a_5xx']} 5xx"
        )
        result.figures.append(dict(figures))
        if number != settings.until_step:
            return False
        line = (
            f"test held at step {number}/{len(settings.steps)} (until_step): B keeps "
            f"{weight}% of new clients; run again to go on"
        )
        self._log(line)
        result.steps.append(line)
        return True

    def _bake_failed(self, release: Release, settings: ABTest, report: BakeReport) -> None:
        """A bake run elsewhere did not pass: the abort (``public`` already back to A), or a
        clear error; raises."""
        where = f"{release.service}/{release.environment}"
        number = report.bake.number
        if report.verdict == "failed":
            why = str(report.figures.get("failed") or report.message)
            self._abort(release, settings, report.bake.home, why, report.figures)
        if report.verdict == "ended":
            raise DeployAborted(
                f"{where}: the A/B test was ended during the bake of step {number}: "
                f"{report.message}"
            )
        raise DeployAborted(
            f"{where}: the bake of step {number} could not read the router: {report.message}. "
            "B keeps its share: run the task again to bake the step again, or abort the test"
        )

    def _scale_b(
        self, state: ServiceState, release: Release, settings: ABTest, count: int, total: int
    ) -> None:
        """``count`` B instances ready in ab (new ones at weight 0, seen up by the check)."""
        w = self._w
        sides = self._sides(state, release)
        in_ab = {r.id for r in state.serving(AB)}
        serving = [r for r in sides.b if r.id in in_ab]
        if len(serving) >= count:
            return
        idle = [r for r in sides.b if r.id not in in_ab]
        used = {r.slot for r in sides.b}
        new_slots = [k for k in range(1, total + 1) if k not in used]
        want = count - len(serving)
        start = w.target.start_many(release, new_slots[: max(0, want - len(idle))])
        fresh: list[Instance] = [*idle[:want], *start]
        w.gate(fresh)
        free = w.router.free_slots(AB)
        if len(free) < len(fresh):
            raise DeployAborted(f"the router has {len(free)} free slots in ab, {len(fresh)} needed")
        into_group(
            w,
            AB,
            fresh,
            router_up_timeout=settings.router_up_timeout,
            weight=0,
            slots=free[: len(fresh)],
        )
        self._log(
            f"B: {len(serving) + len(fresh)} instance(s) ready in ab (weight 0 until the step)"
        )

    def _bake(self, settings: ABTest, bake: StepBake) -> dict[str, Any]:
        """The step's analysis here: the router's counters every ``poll`` seconds, judged; the
        figures once judged (``failed`` set to the reason when it fails)."""
        while True:
            time.sleep(min(settings.poll, max(0.0, settings.bake_time)) or settings.poll)
            figures = judge(settings, bake, self._w.router.stats(AB))
            if figures["verdict"] is not None:
                return figures

    def _abort(
        self,
        release: Release,
        settings: ABTest,
        home: str,
        reason: str,
        figures: Mapping[str, Any],
    ) -> None:
        """Everything back to A (its home group never changed), B removed; raises."""
        w = self._w
        state = w.state(release.service, release.environment)
        if not [r for r in state.serving(home) if r.config != release.config_id]:
            raise DeployAborted(
                f"{release.service}/{release.environment}: {reason}; and A does not serve in "
                f"{home} any more: roll back (strategies.rollback)"
            )
        self._end_step()
        w.router.route(PUBLIC, home)
        self._log(f"A/B aborted ({reason}): public -> {home}")
        close_ab(w, state, release.config_id, grace=release.stop_grace, settings=settings)
        w.target.remove_slots(release, grace=release.stop_grace)  # B's tasks that never ran too
        raise ABTestAborted(
            f"{release.service}/{release.environment}: A/B test of {release.short_digest} "
            f"aborted: {reason}. All traffic is back on A in {home}; B was removed",
            figures=figures,
        )

    def _promote(self, release: Release, settings: ABTest, home: str, total: int) -> None:
        w = self._w
        state = w.state(release.service, release.environment)
        sides = self._sides(state, release)
        b_ids = {r.id for r in sides.b}
        b_ready = [r for r in state.serving(AB) if r.id in b_ids]
        if len(b_ready) < total:
            raise DeployAborted(
                f"promotion needs {total} B instance(s) ready in ab, {len(b_ready)} are: run the "
                "test again to carry on"
            )
        if state.public == AB:
            mine = {r.address for r in b_ready}
            others = [s for s in state.assigned(home) if s.endpoint not in mine]
            if others:  # A's slots in the home group: not routed now, so no traffic
                take_out(w, home, others, drain_timeout=settings.drain_timeout)
            into_group(
                w,
                home,
                [r for r in sorted(b_ready, key=lambda r: r.slot)],
                router_up_timeout=settings.router_up_timeout,
            )
            self._end_step()
            w.router.route(PUBLIC, home)
            self._log(f"promoted: public -> {home} ({total} B instance(s))")
        state = w.state(release.service, release.environment)
        close_ab(
            w, state, release.config_id, grace=settings.stop_grace, settings=settings, keep_b=True
        )


def close_ab(
    w: Wiring,
    state: ServiceState,
    b_config: str,
    *,
    grace: float,
    settings: ABTest | None = None,
    keep_b: bool = False,
) -> None:
    """Empty the ab backend (maint, in-flight requests waited for, slots freed), then remove the
    instances that no longer serve: B's (``keep_b=False``) or A's (``keep_b=True``). Instances
    still ready in the group ``public`` routes to are never removed."""
    drain = settings.drain_timeout if settings else 120.0
    servers = state.assigned(AB)
    if servers:
        take_out(w, AB, servers, drain_timeout=drain)
    routed = routed_public(w)
    serving = {r.id for r in state.serving(routed)} if routed != AB else set()
    in_ab = {r.id for r, _ in state.members(AB, ("ready", "drain", "maint"))}
    if keep_b:  # promotion: A leaves (what was in ab, or labelled for the group now live)
        leaving = [
            r
            for r in state.running
            if r.config != b_config and r.id not in serving and (r.id in in_ab or r.group == routed)
        ]
    else:  # abort: every B instance, in ab or started but never put there
        leaving = [r for r in state.running if r.config == b_config and r.id not in serving]
    remove_instances(w, leaving, grace=grace)


def routed_public(w: Wiring) -> str:
    return w.router.routes().get(PUBLIC) or LIVE


def ab_deploy(
    client: docker.DockerClient,
    release: Release,
    settings: ABTest,
    *,
    router: RouterSettings | HaproxyRouter,
    check: HealthCheck,
    target: TargetKind = "engine",
    owner: str,
    on_step: StepCallback | None = None,
    lock_wait: float = 0.0,
    dry_run: bool = False,
    bake_elsewhere: bool = False,
    baked: BakeReport | None = None,
    log: Log = print,
) -> ABResult:
    """An A/B test of ``release`` against what is live, promoted at 100 % (ABDeployOperator).

    ``bake_elsewhere``: return once a step's weights are set, its analysis in ``result.bake``,
    the deployment lock kept (it stays this owner's while someone else bakes: no other delivery
    comes between); call again with ``baked`` (the :class:`BakeReport`) to carry on."""
    if check.port != release.port:
        raise DeploySettingsInvalid(
            f"the health check probes port {check.port} but the release listens on {release.port}"
        )
    pull_if_missing(client, release, log)

    def runner() -> ABDeployment:
        w = connect(
            client,
            release.service,
            release.environment,
            router=router,
            check=check,
            target=target,
            log=log,
        )
        return ABDeployment(w)

    if dry_run:
        for line in runner().plan(release, settings):
            log(line)
        return ABResult(release.service, release.environment, release.digest)
    image = str(release.image)
    with locked(client, release.service, release.environment, owner, image, lock_wait, log) as lock:
        result = runner().run(
            release, settings, on_step=on_step, bake_elsewhere=bake_elsewhere, baked=baked
        )
        if result.bake is not None:
            lock.keep()
        return result
