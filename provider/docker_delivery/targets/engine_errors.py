"""The one mapping of the Docker SDK's errors (and its HTTP transport's) to ours.

The SDK raises ``docker.errors.NotFound``, ``APIError`` (with the engine's own explanation),
``ImageNotFound`` and ``DockerException``, and lets ``requests``' connection errors through when the
engine does not answer. :func:`engine_error` turns any of them into a :class:`TargetError` that
says what was being done and what the engine said, without the SDK's URL of the call;
:func:`engine_calls` does so for a block. The SDK is imported on first use: parsing a DAG must not
load it.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import cast

from docker_delivery.errors import DeliveryError, TargetError, clip_line

__all__ = ["docker_errors", "engine_calls", "engine_error", "request_errors"]


def docker_errors() -> ModuleType:
    """``docker.errors``, imported on first use."""
    import docker.errors

    return cast("ModuleType", docker.errors)


def request_errors() -> type[Exception]:
    """``requests``' base error (the SDK's transport), imported on first use."""
    import requests.exceptions

    return requests.exceptions.RequestException


def engine_error(exc: BaseException, doing: str) -> TargetError:
    """``exc`` (from the Docker SDK or its transport) as a TargetError: ``<doing>: <why>``."""
    errors = docker_errors()
    if isinstance(exc, errors.APIError):
        status = exc.status_code
        said = str(exc.explanation or exc).strip()
        kind = "not found" if status == 404 else f"refused ({status})" if status else "failed"
        why = f"the engine says {kind}: {said}"
    elif isinstance(exc, request_errors()):
        why = f"the engine does not answer ({type(exc).__name__}): check the engine connection"
    else:
        why = f"{type(exc).__name__}: {exc}"
    return TargetError(clip_line(f"{doing}: {why}", 500))


@contextmanager
def engine_calls(doing: str) -> Iterator[None]:
    """Docker SDK and transport errors raised in the block become :func:`engine_error`'s
    TargetError (chained); our own errors pass as they are."""
    errors = docker_errors()
    try:
        yield
    except DeliveryError:
        raise
    except (errors.DockerException, request_errors()) as exc:
        raise engine_error(exc, doing) from exc
