"""The one mapping of the Docker SDK's errors to ours (no engine needed: the SDK's own classes)."""

from __future__ import annotations

import docker.errors
import pytest
import requests

from docker_delivery.errors import DeployAborted, TargetError
from docker_delivery.targets.engine_errors import engine_calls, engine_error


class _Response:
    status_code = 409
    reason = "Conflict"
    url = "http+docker://localhost/v1.41/containers/create"


def test_an_api_error_says_what_was_done_and_what_the_engine_said() -> None:
    exc = docker.errors.APIError("409 Client Error", _Response(), explanation="name in use")
    error = engine_error(exc, "starting web-prod-1")
    assert isinstance(error, TargetError)
    assert str(error) == "starting web-prod-1: the engine says refused (409): name in use"
    assert "http+docker" not in str(error)


def test_an_engine_that_does_not_answer_is_told_so() -> None:
    with (
        pytest.raises(TargetError, match="deploying web: the engine does not answer") as caught,
        engine_calls("deploying web"),
    ):
        raise requests.exceptions.ConnectionError("connection refused")
    assert isinstance(caught.value.__cause__, requests.exceptions.ConnectionError)


def test_our_own_errors_pass_as_they_are() -> None:
    with pytest.raises(DeployAborted, match="batch 1 failed"), engine_calls("deploying web"):
        raise DeployAborted("batch 1 failed")
