"""The analysis of one A/B step: B's counters at the router since its weights were set, judged
against the test's thresholds.

The A/B runner bakes a step itself (reading HAProxy's counters every ``poll`` seconds), or hands
the bake to someone else and stops: the step's :class:`StepBake` (what to read, from which
counters on, since when) is plain data, :func:`judge` is a pure function of it and of the
counters read now, and :func:`send_back_to_a` is the one action that cannot wait for the runner
on a breach (``public`` back to A's home group; the runner's next try removes B). Airflow's
triggerer runs the bake that way (``docker_delivery.triggers.ab``), so a step's bake time holds no
worker slot.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from docker_delivery.routing.service import AB, PUBLIC
from docker_delivery.strategies.base import VERDICTS, Verdict
from docker_delivery.strategies.settings import ABTest

if TYPE_CHECKING:
    from docker_delivery.routing.haproxy import BackendStats, HaproxyRouter

Counters = tuple[int, int, int]  # per server: requests, errors (5xx + connect + response), rtime


def counters(stats: BackendStats) -> dict[int, Counters]:
    """Each server slot's counters in ``stats``: requests, errors, response time (ms)."""
    return {
        s.slot: (s.requests, s.hrsp_5xx + s.connect_errors + s.response_errors, s.rtime_ms)
        for s in stats.servers
    }


@dataclass(frozen=True)
class StepBake:
    """A step under analysis: its number and weight, A's home group, A's and B's server slots in
    ``ab``, their counters when the weights were set (``base``) and when that was (Unix time)."""

    number: int
    weight: int
    home: str
    a_slots: tuple[int, ...]
    b_slots: tuple[int, ...]
    base: Mapping[int, Counters]
    started_at: float

    @classmethod
    def start(
        cls,
        number: int,
        weight: int,
        home: str,
        a_slots: Sequence[int],
        b_slots: Sequence[int],
        stats: BackendStats,
    ) -> StepBake:
        return cls(
            number, weight, home, tuple(a_slots), tuple(b_slots), counters(stats), time.time()
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data (slots as strings), for XCom and a trigger's arguments."""
        data = asdict(self)
        data["base"] = {str(k): list(v) for k, v in self.base.items()}
        data["a_slots"], data["b_slots"] = list(self.a_slots), list(self.b_slots)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepBake:
        base = {int(k): (int(v[0]), int(v[1]), int(v[2])) for k, v in data["base"].items()}
        return cls(
            int(data["number"]),
            int(data["weight"]),
            str(data["home"]),
            tuple(int(s) for s in data["a_slots"]),
            tuple(int(s) for s in data["b_slots"]),
            base,
            float(data["started_at"]),
        )

    def elapsed(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.started_at


def _delta(
    base: Mapping[int, Counters], now: Mapping[int, Counters], slots: Sequence[int]
) -> dict[str, Any]:
    """Counters of ``slots`` since ``base``: requests, 5xx (with connect and response errors),
    their ratio, and HAProxy's response time (ms, averaged over the servers by requests)."""
    requests = errors = 0
    rtime_sum = 0.0
    for slot in slots:
        if slot not in now:
            continue
        req, err, rtime = now[slot]
        old_req, old_err, _ = base.get(slot, (0, 0, 0))
        d_req = max(0, req - old_req)
        requests += d_req
        errors += max(0, err - old_err)
        rtime_sum += rtime * d_req
    return {
        "requests": requests,
        "5xx": errors,
        "5xx_ratio": round(errors / requests, 4) if requests else 0.0,
        "rtime_ms": round(rtime_sum / requests) if requests else 0,
    }


def judge(
    settings: ABTest, bake: StepBake, now: BackendStats, *, elapsed: float | None = None
) -> dict[str, Any]:
    """The step's figures from the counters read ``now``; ``verdict``: None while it must bake
    on, ``passed``, or ``failed`` (``failed`` then says why: B's error ratio or response time
    over its threshold once B served ``min_requests``, or too few requests by
    ``max_bake_time``)."""
    seconds = bake.elapsed() if elapsed is None else elapsed
    read = counters(now)
    b = _delta(bake.base, read, bake.b_slots)
    a = _delta(bake.base, read, bake.a_slots)
    number, weight = bake.number, bake.weight
    figures: dict[str, Any] = {
        "step": number,
        "weight": weight,
        "seconds": round(seconds, 2),
        **{f"b_{k}": v for k, v in b.items()},
        **{f"a_{k}": v for k, v in a.items()},
        "max_5xx_ratio": settings.max_5xx_ratio,
        "max_response_ms": settings.max_response_ms,
        "failed": None,
        "verdict": None,
    }
    failed: str | None = None
    if b["requests"] >= settings.min_requests:
        if b["5xx_ratio"] > settings.max_5xx_ratio:
            failed = (
                f"B's error ratio {b['5xx_ratio']:.1%} ({b['5xx']} of {b['requests']} "
                f"requests: 5xx or no answer) > {settings.max_5xx_ratio:.1%} at step "
                f"{number} ({weight}%), after {seconds:.1f}s; A: {a['5xx']} of "
                f"{a['requests']} ({a['5xx_ratio']:.1%})"
            )
        elif settings.max_response_ms is not None and b["rtime_ms"] > settings.max_response_ms:
            failed = (
                f"B's response time {b['rtime_ms']} ms > {settings.max_response_ms:g} ms "
                f"at step {number} ({weight}%), after {seconds:.1f}s; A: {a['rtime_ms']} ms"
            )
        elif seconds >= settings.bake_time:
            figures["verdict"] = "passed"
    elif seconds >= settings.longest_bake:
        failed = (
            f"inconclusive: B served {b['requests']} requests in {seconds:.0f}s at step "
            f"{number} ({weight}%), fewer than min_requests ({settings.min_requests})"
        )
    if failed is not None:
        figures["failed"], figures["verdict"] = failed, "failed"
    return figures


def under_way(router: HaproxyRouter) -> bool:
    """Whether ``public`` still routes to ``ab`` (the test was not ended by someone else)."""
    return router.routes().get(PUBLIC) == AB


def send_back_to_a(router: HaproxyRouter, bake: StepBake) -> None:
    """A breach seen outside the runner: every client back to A's home group at once (A never
    left it), the first thing the runner's abort does; its next try removes B."""
    router.route(PUBLIC, bake.home)


@dataclass(frozen=True)
class BakeReport:
    """How a bake run elsewhere ended: ``passed`` or ``failed`` (``figures`` say why; ``public``
    went back to A), ``ended`` (someone else routed ``public`` away from ``ab`` meanwhile) or
    ``error`` (the router could not be read: B keeps its share; the step may bake again)."""

    verdict: Verdict
    bake: StepBake
    figures: Mapping[str, Any]
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "bake": self.bake.as_dict(),
            "figures": dict(self.figures),
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BakeReport:
        verdict = data.get("verdict")
        if verdict not in VERDICTS:
            raise ValueError(f"not a bake report: verdict {verdict!r}")
        return cls(
            verdict,
            StepBake.from_dict(data["bake"]),
            dict(data.get("figures") or {}),
            str(data.get("message") or ""),
        )
