"""Routers that split traffic between groups by weight: an ALB listener's target groups
(:class:`~docker_delivery.routing.alb.AlbRouter`), Route 53 weighted records
(:class:`~docker_delivery.routing.route53.Route53Router`).

As Argo Rollouts' traffic routers implement SetWeight and VerifyWeight, each implements
:class:`WeightedRouter`: ``set_weights`` applies one split and reads it back (a router that
does not serve what was asked raises), ``weights`` reads what serves now. Blue/green is one call
(the new colour takes every request), A/B a series of calls, a switch-back the reverse.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from docker_delivery.errors import RouterError


class WeightedRouter(Protocol):
    """What the AWS deployment runners need of a router."""

    max_weight: int
    """The largest weight one group may carry (ALB: 999; Route 53: 255)."""

    def weights(self) -> dict[str, int]:
        """Each group's weight now, read from the router."""
        ...

    def set_weights(self, weights: Mapping[str, int]) -> dict[str, int]:
        """Serve ``weights`` (every group the router knows, by name), then read them back."""
        ...

    def hold_old(self, delay: float) -> tuple[float, str]:
        """How long a group that stopped taking requests keeps serving before it is retired
        (at least ``delay``, the settings'), and why: for the log."""
        ...


def check_weights(weights: Mapping[str, int], groups: Mapping[str, object], maximum: int) -> None:
    """RouterError unless ``weights`` names only known groups, each from 0 to ``maximum``, and
    sends traffic somewhere."""
    unknown = sorted(set(weights) - set(groups))
    if unknown:
        raise RouterError(f"no group {unknown} in this router (it has {sorted(groups)})")
    wrong = {g: w for g, w in weights.items() if not 0 <= int(w) <= maximum}
    if wrong:
        raise RouterError(f"weights must be from 0 to {maximum}: {wrong}")
    if not any(weights.values()):
        raise RouterError("every weight is 0: no group would serve")


def live_group(weights: Mapping[str, int]) -> str | None:
    """The group that takes the most traffic (None when none takes any)."""
    serving = {g: w for g, w in weights.items() if w > 0}
    return max(serving, key=lambda g: serving[g]) if serving else None


def all_to(group: str, groups: Iterable[str], maximum: int) -> dict[str, int]:
    """Every request to ``group``: its weight the maximum, the others' 0."""
    return {g: (maximum if g == group else 0) for g in groups}


def split(a: str, b: str, percent_b: float, maximum: int) -> dict[str, int]:
    """``percent_b`` % of requests to ``b``, the rest to ``a``, in the router's weight units."""
    weight_b = round(maximum * percent_b / 100)
    return {a: maximum - weight_b, b: weight_b}
