"""A blue/green post-switch check handed to the triggerer: its data, its trigger's round trip,
and the watching loop every such trigger shares (a few failed looks tolerated, a failure sends
the clients back before the event)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kit.deploy import first_event

from docker_delivery.health import HealthCheck
from docker_delivery.strategies.post_switch import PostSwitchWatch, WatchReport
from docker_delivery.strategies.settings import BlueGreen
from docker_delivery.strategies.watch import WatchStart
from docker_delivery.triggers.post_switch import PostSwitchCheckTrigger

START = WatchStart("green", ("10.0.9.2:8080", "10.0.9.3:8080"), 120, 1, 1_800_000_000.0)
WATCH = PostSwitchWatch(START, 60.0, "blue", "sha256:" + "b" * 64)


def test_the_watch_and_its_report_travel_as_json() -> None:
    assert PostSwitchWatch.from_dict(json.loads(json.dumps(WATCH.as_dict()))) == WATCH
    first = PostSwitchWatch(START, 60.0, None, "")  # nothing was live before: nowhere to go back
    assert PostSwitchWatch.from_dict(json.loads(json.dumps(first.as_dict()))) == first
    report = WatchReport("failed", WATCH, {"requests": 40, "5xx": 9}, "9 of 40 requests failed")
    assert WatchReport.from_dict(json.loads(json.dumps(report.as_dict()))) == report
    with pytest.raises(ValueError, match="not a watch report"):
        WatchReport.from_dict({"verdict": "fine", "watch": WATCH.as_dict()})


def test_the_trigger_is_recreated_from_what_it_serializes() -> None:
    trigger = PostSwitchCheckTrigger(
        "web", "prod", BlueGreen(post_switch_check=60, max_5xx_ratio=0.02), HealthCheck(), WATCH,
        target="swarm", engine_conn_id="prod_swarm",
    )  # fmt: skip
    name, kwargs = trigger.serialize()
    assert name == "docker_delivery.triggers.post_switch.PostSwitchCheckTrigger"
    again = PostSwitchCheckTrigger(**json.loads(json.dumps(kwargs)))
    assert again.serialize() == trigger.serialize()
    assert again.watch == WATCH and again.settings.max_5xx_ratio == 0.02


class Scripted(PostSwitchCheckTrigger):
    """The trigger's loop over scripted looks (an exception, a verdict, or None: look again)."""

    def __init__(self, looks: list[Any], live: bool = True) -> None:
        super().__init__("web", "prod", {}, {}, WATCH, poll_s=0.001)
        self.looks, self.live, self.sent_back, self.closed = looks, live, 0, False

    def open(self) -> Any:
        return None

    def since(self) -> float:
        return 0.5

    def close(self, opened: Any) -> None:
        self.closed = True

    def ended(self, opened: Any) -> str | None:
        return None if self.live else "public routes to 'blue' now"

    def look(self, opened: Any) -> tuple[str | None, dict[str, Any], str]:
        step = self.looks.pop(0)
        if isinstance(step, Exception):
            raise step
        return step, {"requests": 10}, "5 of 10 requests failed" if step == "failed" else ""

    def send_back(self, opened: Any) -> None:
        self.sent_back += 1


def test_a_few_failed_looks_are_tolerated_more_end_the_watch_as_an_error() -> None:
    flaky = Scripted([OSError("engine busy")] * 4 + [None, "passed"])
    assert first_event(flaky)["verdict"] == "passed" and flaky.closed
    broken = Scripted([OSError("engine gone")] * 5)
    event = first_event(broken)
    assert event["verdict"] == "error" and "OSError: engine gone" in event["message"]
    assert broken.sent_back == 0 and broken.closed


def test_a_failure_sends_the_clients_back_before_the_event_and_an_ended_watch_acts_not() -> None:
    failing = Scripted([None, None, "failed"])
    event = first_event(failing)
    assert event["verdict"] == "failed" and event["message"] == "5 of 10 requests failed"
    assert failing.sent_back == 1
    assert WatchReport.from_dict(event).watch == WATCH
    moved = Scripted([None], live=False)
    assert first_event(moved)["verdict"] == "ended" and moved.sent_back == 0
