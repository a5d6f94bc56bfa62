"""A bake on ECS (a wait watched against the environment's CloudWatch alarms) handed over to
someone else (Airflow's triggerer), as data.

An ECS runner bakes through :meth:`~docker_delivery.strategies.aws.EcsContext.bake`: a bake long
enough is not slept where the runner runs but raised as :class:`BakeHandedOver` (not an error:
the work goes on elsewhere; the service's lock is kept). Whoever bakes judges it with
:func:`judge`; the runner, run again with the reports of its bakes, reads where things stand and
goes on from the bake that ended: past it when it passed, into its own failure path (switch
back, old task set back, every request to A) when an alarm fired.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class AlarmBake:
    """The bake ``key`` (the service and the point of the rollout: ``<name>:<step>``) of ECS
    service ``name`` for ``seconds`` from ``started_at`` (Unix time), against ``alarms``."""

    key: str
    name: str
    seconds: float
    alarms: tuple[str, ...]
    started_at: float

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "alarms": list(self.alarms)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlarmBake:
        return cls(
            str(data["key"]),
            str(data["name"]),
            float(data["seconds"]),
            tuple(str(a) for a in data["alarms"]),
            float(data["started_at"]),
        )

    def elapsed(self) -> float:
        return time.time() - self.started_at


class BakeHandedOver(Exception):
    """Raised through an ECS runner at a bake someone else runs (``bake``); the service's lock
    stays taken. Not a :class:`~docker_delivery.errors.DeliveryError`: no failure path runs."""

    def __init__(self, bake: AlarmBake) -> None:
        self.bake = bake
        super().__init__(f"the bake {bake.key} ({bake.seconds:g}s) is handed over")


def judge(bake: AlarmBake, firing: Sequence[str]) -> tuple[str | None, dict[str, Any], str]:
    """One look at the alarms in ALARM now: (None while it bakes on | ``passed`` | ``failed``,
    figures, why it failed)."""
    seconds = round(bake.elapsed(), 2)
    figures = {"key": bake.key, "seconds": seconds, "alarms": list(bake.alarms)}
    if firing:
        figures["firing"] = list(firing)
        return "failed", figures, f"alarm {', '.join(firing)} in ALARM while {bake.name} baked"
    if seconds >= bake.seconds:
        return "passed", figures, ""
    return None, figures, ""
