"""One-off containers run to their end: what image tests and database migrations share.

A one-off container is created by its caller (command, environment, labels, network, files put in
before it starts), then :func:`run_to_end` starts it, streams its output line by line (UTF-8,
decoded across chunk boundaries) while keeping its last lines, and waits until it exits or its
time is up, when it is killed. :func:`ensure_image` pulls an image by digest unless the engine has
it. The caller removes the container.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import codecs
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from docker_delivery.errors import DeliveryError
from docker_delivery.targets.engine import start_container
from docker_delivery.targets.engine_errors import docker_errors, request_errors

if TYPE_CHECKING:
    import docker

__all__ = ["OneOffRun", "ensure_image", "output_lines", "run_to_end"]


@dataclass(frozen=True)
class OneOffRun:
    """How a one-off container ended: its exit code (None: killed when its time was up), its
    last lines of output, and how long it ran."""

    exit_code: int | None
    tail: tuple[str, ...]
    duration_s: float


def ensure_image(client: docker.DockerClient, image: str, log: Callable[[str], None]) -> None:
    """Pull ``image`` unless the engine has it; DeliveryError saying what to check otherwise."""
    try:
        client.images.get(image)
        return
    except docker_errors().ImageNotFound:
        pass
    log(f"pulling {image}")
    try:
        client.images.pull(image)
    except docker_errors().APIError as error:
        raise DeliveryError(
            f"could not pull {image}: {error.explanation or error}; check that the image "
            "was pushed and that the engine can reach (and is logged in to) its registry"
        ) from error


def output_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Lines of a container's output stream, UTF-8 decoded across chunks (``\\r`` dropped); a
    stream cut short (the container killed or removed) ends with a line saying so."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending = ""
    try:
        for chunk in chunks:
            pending += decoder.decode(chunk)
            *lines, pending = pending.split("\n")
            for line in lines:
                yield line.rstrip("\r")
        pending += decoder.decode(b"", final=True)
    except Exception as error:  # the stream ends when the container is killed or removed
        yield f"(output stream ended: {error})"
    if pending:
        yield pending.rstrip("\r")


def run_to_end(
    container: Any,
    *,
    timeout: float,
    on_line: Callable[[str], None] | None = None,
    tail_lines: int = 40,
    log: Callable[[str], None] = print,
) -> OneOffRun:
    """Start the created ``container`` and wait for its end (at most ``timeout`` seconds, then it
    is killed): each line of its output goes to ``on_line`` as it comes."""
    tail: deque[str] = deque(maxlen=tail_lines)

    def read() -> None:
        stream = container.logs(stream=True, follow=True, stdout=True, stderr=True)
        for line in output_lines(stream):
            tail.append(line)
            if on_line is not None:
                on_line(line)

    started = time.monotonic()
    start_container(container, log=log)
    reader = threading.Thread(target=read, name=f"dd-output-{container.name}", daemon=True)
    reader.start()
    code = _wait(container, started + timeout)
    if code is None:
        with contextlib.suppress(docker_errors().APIError):
            container.kill()
        reader.join(timeout=10)
    else:
        reader.join(timeout=30)
    return OneOffRun(code, tuple(tail), round(time.monotonic() - started, 3))


def _wait(container: Any, deadline: float) -> int | None:
    """The container's exit code, or ``None`` when it still runs at ``deadline``."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            result = container.wait(timeout=max(1, min(remaining, 300)))
            return int(result["StatusCode"])
        except request_errors():
            # The engine answers a wait only when the container exits: a read timeout here is
            # the usual case; anything else shows when the container is looked at.
            container.reload()
            if container.status not in ("running", "created", "restarting"):
                return int(container.attrs["State"]["ExitCode"])
