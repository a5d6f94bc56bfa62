"""Named locks on a Docker Engine: one delivery of a service and environment at a time.

The lock is a container that is created and never started, named after what it guards
(``dd-lock-<service>-<env>`` for a deployment): Docker refuses a second container of the same
name, so taking the lock is atomic, and it is visible (``docker ps -a``) with its owner and start
time in its labels. The owner is stable across retries of one task (DAG, run, task), so a retry
after a killed worker takes over its own lock instead of waiting for itself.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from docker_delivery.errors import DeliveryError
from docker_delivery.targets.base import LABEL_MANAGED, LABEL_PREFIX, LABEL_ROLE

if TYPE_CHECKING:
    import docker

LABEL_OWNER = LABEL_PREFIX + "lock-owner"
LABEL_SINCE = LABEL_PREFIX + "lock-since"


_Lock = TypeVar("_Lock", bound="ContainerLock")


class DeploymentLocked(DeliveryError):
    """Another delivery of the same service and environment is in progress."""


class ContainerLock:
    """The mechanism: a created-never-started container named ``name``; subclasses say what it
    guards (their messages, the error raised when it stays taken, extra labels)."""

    def __init__(
        self,
        client: docker.DockerClient,
        name: str,
        *,
        owner: str,
        image: str,
        wait: float = 0.0,
        log: Callable[[str], None] = print,
        poll: float = 1.0,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self._client = client
        self.name = name
        self._owner = owner
        self._image = image
        self._wait = wait
        self._log = log
        self._poll = poll
        self._labels = dict(labels or {})

    # what the lock guards: messages and the error (overridden)
    def taken_message(self) -> str:
        return f"lock {self.name} taken by {self._owner}"

    def takeover_message(self, owner: str) -> str:
        return f"lock {self.name} already held by this task ({owner}): taking it over"

    def waiting_message(self, owner: str, since: str) -> str | None:
        return None

    def locked_error(self, owner: str, since: str) -> DeliveryError:
        return DeliveryError(f"{self.name} is held by {owner} since {since}")

    def released_message(self) -> str:
        return f"lock {self.name} released"

    def __enter__(self: _Lock) -> _Lock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        import docker.errors

        deadline = time.monotonic() + self._wait
        waiting = False
        while True:
            try:
                self._client.containers.create(
                    self._image,
                    name=self.name,
                    command=["true"],
                    labels={
                        **self._labels,
                        LABEL_MANAGED: "true",
                        LABEL_ROLE: "lock",
                        LABEL_OWNER: self._owner,
                        LABEL_SINCE: dt.datetime.now(dt.timezone.utc).isoformat(
                            timespec="milliseconds"
                        ),
                    },
                )
                self._log(self.taken_message())
                return
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
            holder = self._holder()
            if holder is None:
                continue  # released between our attempt and the look
            owner, since = holder
            if owner == self._owner:
                self._log(self.takeover_message(owner))
                return
            if time.monotonic() >= deadline:
                raise self.locked_error(owner, since)
            message = self.waiting_message(owner, since)
            if message and not waiting:
                self._log(message)
                waiting = True
            time.sleep(self._poll)

    def _holder(self) -> tuple[str, str] | None:
        import docker.errors

        try:
            labels = self._client.containers.get(self.name).labels
        except docker.errors.NotFound:
            return None
        return labels.get(LABEL_OWNER, "?"), labels.get(LABEL_SINCE, "?")

    def release(self) -> None:
        import docker.errors

        holder = self._holder()
        if holder is None or holder[0] != self._owner:
            return
        try:
            self._client.containers.get(self.name).remove(force=True)
        except docker.errors.NotFound:
            return
        self._log(self.released_message())


class DeploymentLock(ContainerLock):
    """One delivery of ``service`` in ``environment`` at a time."""

    def __init__(
        self,
        client: docker.DockerClient,
        service: str,
        environment: str,
        *,
        owner: str,
        image: str,
        wait: float = 0.0,
        log: Callable[[str], None] = print,
    ) -> None:
        super().__init__(
            client, f"dd-lock-{service}-{environment}", owner=owner, image=image, wait=wait, log=log
        )

    def locked_error(self, owner: str, since: str) -> DeliveryError:
        return DeploymentLocked(
            f"{self.name}: another delivery ({owner}, since {since}) is in progress for "
            "this service and environment; wait for it to finish, or if that run is dead, "
            f"remove the lock with `docker rm {self.name}`"
        )
