"""RolloutCompleteTrigger: the deferred wait of RolloutCompleteSensor, run by the triggerer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import closing
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from docker_delivery.errors import DeliveryError

if TYPE_CHECKING:
    from docker_delivery.strategies.rollout import RolloutStatus


class RolloutCompleteTrigger(BaseTrigger):
    """Read the rollout's status every ``poll_s`` (in a thread: the Docker SDK blocks) until it
    is complete or ``deadline_s`` (counted from ``started_at``, Unix time) has passed; fire one
    event ``{"status": "complete" | "incomplete" | "invalid", "message", "rollout"}``."""

    def __init__(
        self,
        service: str,
        environment: str,
        digest: str,
        replicas: int,
        *,
        port: int = 8080,
        docker_url: str | None = None,
        engine_conn_id: str | None = None,
        poll_s: float = 2.0,
        deadline_s: float = 600.0,
        started_at: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.service = service
        self.environment = environment
        self.digest = digest
        self.replicas = int(replicas)
        self.port = int(port)
        self.docker_url = docker_url
        self.engine_conn_id = engine_conn_id
        self.poll_s = float(poll_s)
        self.deadline_s = float(deadline_s)
        self.started_at = time.time() if started_at is None else float(started_at)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "docker_delivery.triggers.rollout.RolloutCompleteTrigger",
            {
                "service": self.service,
                "environment": self.environment,
                "digest": self.digest,
                "replicas": self.replicas,
                "port": self.port,
                "docker_url": self.docker_url,
                "engine_conn_id": self.engine_conn_id,
                "poll_s": self.poll_s,
                "deadline_s": self.deadline_s,
                "started_at": self.started_at,
            },
        )

    def _read(self) -> RolloutStatus:
        from docker_delivery.hooks.engine import engine_client
        from docker_delivery.strategies.rollout import rollout_status

        with closing(engine_client(self.docker_url, engine_conn_id=self.engine_conn_id)) as client:
            return rollout_status(
                client,
                self.service,
                self.environment,
                self.digest,
                replicas=self.replicas,
                port=self.port,
                log=lambda line: None,
            )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        last = ""
        while True:
            try:
                status = await asyncio.to_thread(self._read)
            except DeliveryError as exc:
                yield TriggerEvent({"status": "invalid", "message": str(exc), "rollout": None})  # type: ignore[no-untyped-call]
                return
            if status.describe() != last:
                last = status.describe()
                self.log.info("%s", last)
            if status.complete:
                yield TriggerEvent(  # type: ignore[no-untyped-call]
                    {"status": "complete", "message": last, "rollout": status.as_dict()}
                )
                return
            if time.time() - self.started_at >= self.deadline_s:
                message = f"not complete after {self.deadline_s:g}s: {last}"
                yield TriggerEvent(  # type: ignore[no-untyped-call]
                    {"status": "incomplete", "message": message, "rollout": status.as_dict()}
                )
                return
            await asyncio.sleep(self.poll_s)
