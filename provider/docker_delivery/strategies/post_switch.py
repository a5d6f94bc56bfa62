"""A blue/green post-switch check run elsewhere (Airflow's triggerer), as data.

The switch routes ``public`` to the new colour and hands over its :class:`PostSwitchWatch`: the
watch's start (:class:`~docker_delivery.strategies.watch.WatchStart`), the colour to go back to
and what it runs. Whoever runs the watch (:class:`~docker_delivery.strategies.watch.Watcher`)
sends every client back at once on a failure (:func:`send_back`); the switch, called again with
the :class:`WatchReport`, records the switch back and says why, or returns the passed check.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from docker_delivery.routing.service import PUBLIC
from docker_delivery.strategies.base import VERDICTS, Verdict
from docker_delivery.strategies.state import Running, ServiceState
from docker_delivery.strategies.watch import WatchStart

if TYPE_CHECKING:
    from docker_delivery.routing.haproxy import HaproxyRouter


@dataclass(frozen=True)
class PostSwitchWatch:
    """The check of ``start.backend`` (the new live colour) for ``seconds``; ``previous``: the
    colour to send clients back to (None when nothing was live before: the new one stays),
    ``previous_digest``: what it runs."""

    start: WatchStart
    seconds: float
    previous: str | None
    previous_digest: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.as_dict(),
            "seconds": self.seconds,
            "previous": self.previous,
            "previous_digest": self.previous_digest,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PostSwitchWatch:
        previous = data.get("previous")
        return cls(
            WatchStart.from_dict(data["start"]),
            float(data["seconds"]),
            None if previous is None else str(previous),
            str(data["previous_digest"]),
        )

    def members(self, state: ServiceState) -> tuple[list[Running], list[str]]:
        """The watched instances that still run, and the addresses of those that do not."""
        running = {r.address: r for r in state.running}
        members = [running[a] for a in self.start.addresses if a in running]
        return members, [a for a in self.start.addresses if a not in running]


@dataclass(frozen=True)
class WatchReport:
    """How a watch run elsewhere ended: ``passed``, ``failed`` (``message`` says why; clients
    were sent back), ``ended`` (``public`` was routed elsewhere meanwhile) or ``error`` (it could
    not look: the new colour stays live)."""

    verdict: Verdict
    watch: PostSwitchWatch
    figures: Mapping[str, Any]
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "watch": self.watch.as_dict(),
            "figures": dict(self.figures),
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WatchReport:
        verdict = data.get("verdict")
        if verdict not in VERDICTS:
            raise ValueError(f"not a watch report: verdict {verdict!r}")
        return cls(
            verdict,
            PostSwitchWatch.from_dict(data["watch"]),
            dict(data.get("figures") or {}),
            str(data.get("message") or ""),
        )


def still_live(router: HaproxyRouter, watch: PostSwitchWatch) -> bool:
    """Whether ``public`` still routes to the colour under watch."""
    return router.routes().get(PUBLIC) == watch.start.backend


def send_back(router: HaproxyRouter, watch: PostSwitchWatch) -> bool:
    """A failed check seen outside the switch: every client back to the previous colour at once
    (still warm, untouched); False when there is none to go back to."""
    if watch.previous is None:
        return False
    router.route(PUBLIC, watch.previous)
    return True
