"""PostSwitchCheckTrigger: a blue/green post-switch check, run by the triggerer while
SwitchTrafficOperator holds no worker slot."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from airflow.triggers.base import TriggerEvent

from docker_delivery.health import HealthCheck
from docker_delivery.strategies.post_switch import (
    PostSwitchWatch,
    WatchReport,
    send_back,
    still_live,
)
from docker_delivery.strategies.settings import BlueGreen
from docker_delivery.triggers.watching import WatchingTrigger


class PostSwitchCheckTrigger(WatchingTrigger):
    """Watch the new live colour for ``watch.seconds`` from the switch: the router's 5xx
    counters of its backend and its instances' health (probed from the router's container, as
    the switch probes them); on a failure route every client back to the previous colour at
    once (the resumed task records the switch back). One event: a
    :class:`~docker_delivery.strategies.post_switch.WatchReport` as a dict.

    The router is the ``haproxy`` connection ``haproxy_conn_id``'s, or else the service's
    router container, found through the engine (``docker_url`` / ``engine_conn_id``); nothing
    is started or changed but the route on a failure."""

    def __init__(
        self,
        service: str,
        environment: str,
        settings: BlueGreen | dict[str, Any],
        check: HealthCheck | dict[str, Any],
        watch: PostSwitchWatch | dict[str, Any],
        *,
        target: str = "engine",
        docker_url: str | None = None,
        engine_conn_id: str | None = None,
        haproxy_conn_id: str | None = None,
        poll_s: float = 0.5,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.service = service
        self.environment = environment
        self.settings = settings if isinstance(settings, BlueGreen) else BlueGreen.of(settings)
        self.check = check if isinstance(check, HealthCheck) else HealthCheck.from_dict(check)
        self.watch = (
            watch if isinstance(watch, PostSwitchWatch) else PostSwitchWatch.from_dict(watch)
        )
        self.target = target
        self.docker_url = docker_url
        self.engine_conn_id = engine_conn_id
        self.haproxy_conn_id = haproxy_conn_id
        self.poll_s = float(poll_s)
        self.what = f"{service}/{environment}: the post-switch check of {self.watch.start.backend}"

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "docker_delivery.triggers.post_switch.PostSwitchCheckTrigger",
            {
                "service": self.service,
                "environment": self.environment,
                "settings": self.settings.model_dump(mode="json"),
                "check": self.check.to_dict(),
                "watch": self.watch.as_dict(),
                "target": self.target,
                "docker_url": self.docker_url,
                "engine_conn_id": self.engine_conn_id,
                "haproxy_conn_id": self.haproxy_conn_id,
                "poll_s": self.poll_s,
            },
        )

    def open(self) -> Any:
        """The wiring (nothing started) and the watcher of the instances switched to."""
        from docker_delivery.hooks.engine import engine_client
        from docker_delivery.strategies.watch import Watcher
        from docker_delivery.strategies.wiring import attach

        router = None
        if self.haproxy_conn_id:
            from docker_delivery.hooks.haproxy import HaproxyHook

            router = HaproxyHook(self.haproxy_conn_id).get_router()
        client = engine_client(self.docker_url, engine_conn_id=self.engine_conn_id)
        try:
            w = attach(
                client,
                self.service,
                self.environment,
                router=router,
                check=self.check,
                target=self.target,  # type: ignore[arg-type]
                log=self.log.info,
            )
            members, gone = self.watch.members(w.state(self.service, self.environment))
        except Exception:
            client.close()
            raise
        watcher = Watcher(
            w,
            members,
            self.watch.start,
            seconds=self.watch.seconds,
            max_5xx_ratio=self.settings.max_5xx_ratio,
            min_requests=self.settings.min_requests,
        )
        return w, watcher, gone

    def close(self, opened: Any) -> None:
        w, watcher, _ = opened
        with contextlib.suppress(Exception):
            watcher.__exit__()
        with contextlib.suppress(Exception):
            w.client.close()

    def ended(self, opened: Any) -> str | None:
        router = opened[0].router
        if still_live(router, self.watch):
            return None
        return f"public routes to {router.routes().get('public')!r} now"

    def look(self, opened: Any) -> tuple[str | None, dict[str, Any], str]:
        _, watcher, gone = opened
        if gone:
            why = f"{', '.join(gone)} no longer run(s)"
            return "failed", watcher.figures(), why
        done, why = watcher.look()
        if not done:
            return None, {}, ""
        return ("failed" if why else "passed"), watcher.figures(), why or ""

    def send_back(self, opened: Any) -> None:
        send_back(opened[0].router, self.watch)

    def since(self) -> float:
        return time.time() - self.watch.start.started_at

    def report(self, verdict: str, figures: dict[str, Any], message: str) -> TriggerEvent:
        report = WatchReport(verdict, self.watch, figures, message)  # type: ignore[arg-type]
        return TriggerEvent(report.as_dict())  # type: ignore[no-untyped-call]
