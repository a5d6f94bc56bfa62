"""AlbRouter: traffic between ECS services through an Application Load Balancer's listeners.

Each release colour (``blue``, ``green``; an A/B test's variants) has its target group. The
production listener's default action forwards to them by weight (``ForwardConfig``: weights 0 to
999, at most 5 target groups); a switch is one ``ModifyListener``, read back with
``DescribeListeners`` before the runner goes on. An optional test (preview) listener forwards to
one group: the idle colour, checked before it takes production traffic. With ``stickiness_s``
the weighted action keeps a client on its target group (``TargetGroupStickinessConfig``), as an
A/B test needs.

This module is domain code: it never imports Airflow; the boto3 ``elbv2`` client comes in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from docker_delivery.awsapi import call
from docker_delivery.errors import RouterError
from docker_delivery.routing.weighted import check_weights

MAX_WEIGHT: Final = 999
MAX_GROUPS: Final = 5


class AlbRouter:
    """The production listener ``listener_arn`` (and ``test_listener_arn``) over
    ``target_groups`` (name -> target group ARN)."""

    max_weight = MAX_WEIGHT

    def __init__(
        self,
        elbv2: Any,
        listener_arn: str,
        target_groups: Mapping[str, str],
        *,
        test_listener_arn: str | None = None,
        stickiness_s: int | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        if not 1 <= len(target_groups) <= MAX_GROUPS:
            raise RouterError(
                f"an ALB listener forwards to 1 to {MAX_GROUPS} target groups, not "
                f"{len(target_groups)}"
            )
        self.elbv2 = elbv2
        self.listener_arn = listener_arn
        self.test_listener_arn = test_listener_arn
        self.groups = dict(target_groups)
        self.stickiness_s = stickiness_s
        self.log = log

    def _call(self, operation: str, doing: str, **params: Any) -> Any:
        return call(self.elbv2, operation, f"ALB: {doing}", RouterError, **params)

    def _forwarded(self, listener_arn: str) -> dict[str, int]:
        found = self._call(
            "describe_listeners", f"reading listener {listener_arn}", ListenerArns=[listener_arn]
        )
        listeners = found.get("Listeners") or []
        if not listeners:
            raise RouterError(f"ALB: no listener {listener_arn}")
        names = {arn: name for name, arn in self.groups.items()}
        weights: dict[str, int] = {}
        for action in listeners[0].get("DefaultActions") or []:
            if action.get("Type") != "forward":
                continue
            config = action.get("ForwardConfig") or {}
            entries = config.get("TargetGroups") or (
                [{"TargetGroupArn": action["TargetGroupArn"], "Weight": 1}]
                if action.get("TargetGroupArn")
                else []
            )
            for entry in entries:
                arn = entry["TargetGroupArn"]
                if arn not in names:
                    raise RouterError(
                        f"ALB listener {listener_arn} forwards to {arn}, which is none of this "
                        f"service's target groups ({sorted(self.groups)}): not ours to change"
                    )
                weights[names[arn]] = int(entry.get("Weight", 1))
        return weights

    def weights(self) -> dict[str, int]:
        found = self._forwarded(self.listener_arn)
        return {name: found.get(name, 0) for name in self.groups}

    def set_weights(self, weights: Mapping[str, int]) -> dict[str, int]:
        wanted = {name: int(weights.get(name, 0)) for name in self.groups}
        check_weights(weights, self.groups, MAX_WEIGHT)
        forward: dict[str, Any] = {
            "TargetGroups": [
                {"TargetGroupArn": self.groups[name], "Weight": weight}
                for name, weight in wanted.items()
            ]
        }
        if self.stickiness_s:
            forward["TargetGroupStickinessConfig"] = {
                "Enabled": True,
                "DurationSeconds": self.stickiness_s,
            }
        self._call(
            "modify_listener",
            f"setting weights {wanted}",
            ListenerArn=self.listener_arn,
            DefaultActions=[{"Type": "forward", "ForwardConfig": forward}],
        )
        now = self.weights()
        if now != wanted:
            raise RouterError(f"ALB listener serves {now} after it was set to {wanted}")
        self.log(f"ALB listener weights: {now}")
        return now

    def hold_old(self, delay: float) -> tuple[float, str]:
        """A listener's change is immediate; connections already open drain by the target
        group's deregistration delay: ``delay`` is the settings' time for a quick switch back."""
        return delay, "the settings' scale_down_delay, for a quick switch back"

    def preview(self, group: str) -> None:
        """The test listener forwards to ``group`` alone (read back)."""
        if self.test_listener_arn is None:
            raise RouterError("this router has no test listener")
        check_weights({group: 1}, self.groups, MAX_WEIGHT)
        self._call(
            "modify_listener",
            f"previewing {group}",
            ListenerArn=self.test_listener_arn,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": self.groups[group]}],
        )
        if self.previewed() != group:
            raise RouterError(f"the ALB test listener does not serve {group} after it was set")
        self.log(f"ALB test listener serves {group}")

    def previewed(self) -> str | None:
        if self.test_listener_arn is None:
            return None
        found = self._forwarded(self.test_listener_arn)
        serving = [name for name, weight in found.items() if weight > 0]
        return serving[0] if len(serving) == 1 else None

    def target_health(self, group: str) -> dict[str, str]:
        """Each registered target's state in ``group`` (``healthy``, ``unhealthy``, ...)."""
        return target_health(self.elbv2, self.groups[group])


def target_health(elbv2: Any, target_group_arn: str) -> dict[str, str]:
    """Each target registered in the target group, ``address:port`` -> its state."""
    found = call(
        elbv2,
        "describe_target_health",
        f"ALB: reading the targets of {target_group_arn}",
        RouterError,
        TargetGroupArn=target_group_arn,
    )
    return {
        f"{d['Target']['Id']}:{d['Target'].get('Port', '')}": d["TargetHealth"]["State"]
        for d in found.get("TargetHealthDescriptions") or []
    }
