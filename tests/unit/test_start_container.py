"""start_container: a start the engine failed transiently is tried again; others fail at once.

The transient failure (a Swarm manager too busy to attach a container to a swarm-scoped network
in time) cannot be caused on demand on the test bed, so a fake container raises the engine's
own error here."""

from __future__ import annotations

import docker.errors
import pytest

from docker_delivery.targets.engine import start_container

ATTACH = (
    "attaching to network failed, make sure your network options are correct and check "
    "manager logs: context deadline exceeded"
)


class FlakyContainer:
    name = "web-test-1"

    def __init__(self, failures: list[str]) -> None:
        self.failures = list(failures)
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        if self.failures:
            raise docker.errors.APIError("500 Server Error", explanation=self.failures.pop(0))


def test_a_transient_attach_failure_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.sleep", lambda s: None)
    lines: list[str] = []
    container = FlakyContainer([ATTACH, ATTACH])
    start_container(container, log=lines.append)
    assert container.starts == 3
    assert len(lines) == 2 and "trying again in 0.5s" in lines[0] and "in 1s" in lines[1]


def test_it_gives_up_after_the_last_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.sleep", lambda s: None)
    container = FlakyContainer([ATTACH] * 5)
    with pytest.raises(docker.errors.APIError, match="500"):
        start_container(container, attempts=3, log=lambda _: None)
    assert container.starts == 3


def test_other_errors_are_not_retried() -> None:
    container = FlakyContainer(["port is already allocated"])
    with pytest.raises(docker.errors.APIError):
        start_container(container, log=lambda _: None)
    assert container.starts == 1
