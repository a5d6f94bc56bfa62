"""EcsAlarmBakeTrigger: a bake on ECS (the environment's CloudWatch alarms watched while a
release serves), run by the triggerer while the deployment task holds no worker slot."""

from __future__ import annotations

from typing import Any

from airflow.triggers.base import TriggerEvent

from docker_delivery.strategies.aws_bake import AlarmBake, judge
from docker_delivery.triggers.watching import WatchingTrigger

POLL_S = 5.0  # as a bake in the worker reads the alarms


class EcsAlarmBakeTrigger(WatchingTrigger):
    """Read the alarms every ``poll_s`` seconds until ``bake.seconds`` have passed since it
    began (``passed``) or one is in ALARM (``failed``). One event: ``{"verdict", "key",
    "figures", "message"}``, the report the resumed runner reads. A failure acts through the
    runner's own failure path when the task resumes (switch back, old task set back, every
    request to A): CloudWatch alarms judge over periods of a minute or so; the seconds of a
    resume add little to that."""

    def __init__(
        self,
        bake: AlarmBake | dict[str, Any],
        *,
        aws_conn_id: str | None = "aws_default",
        region: str | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.bake = bake if isinstance(bake, AlarmBake) else AlarmBake.from_dict(bake)
        self.aws_conn_id = aws_conn_id
        self.region = region
        self.poll_s = float(poll_s)
        self.what = f"the bake {self.bake.key} ({self.bake.seconds:g}s)"

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "docker_delivery.triggers.ecs_bake.EcsAlarmBakeTrigger",
            {
                "bake": self.bake.as_dict(),
                "aws_conn_id": self.aws_conn_id,
                "region": self.region,
                "poll_s": self.poll_s,
            },
        )

    def open(self) -> Any:
        if not self.bake.alarms:
            return None
        from docker_delivery.hooks.aws import aws_client

        return aws_client("cloudwatch", self.aws_conn_id, self.region)

    def ended(self, opened: Any) -> str | None:
        return None

    def look(self, opened: Any) -> tuple[str | None, dict[str, Any], str]:
        from docker_delivery.targets.ecs import alarms_firing

        return judge(self.bake, alarms_firing(opened, self.bake.alarms))

    def send_back(self, opened: Any) -> None:
        """Nothing here: the resumed runner's failure path sends the traffic back."""

    def since(self) -> float:
        return self.bake.elapsed()

    def report(self, verdict: str, figures: dict[str, Any], message: str) -> TriggerEvent:
        payload = {"verdict": verdict, "key": self.bake.key, "figures": figures, "message": message}
        return TriggerEvent(payload)  # type: ignore[no-untyped-call]
