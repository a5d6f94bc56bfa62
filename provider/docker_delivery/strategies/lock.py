"""Named locks on a Docker Engine: one delivery of a service and environment at a time.

The lock is a container that is created and never started, named after what it guards
(``dd-lock-<service>-<env>`` for a deployment): Docker refuses a second container of the same
name, so taking the lock is atomic, and it is visible (``docker ps -a``) with its owner and start
time in its labels. The owner is stable across retries of one task (DAG, run, task), so a retry
after a killed worker takes over its own lock instead of waiting for itself.

A lock is re-entrant within one process: a step that holds it may call another that takes it
again for the same owner (an infrastructure change re-releasing through a deployment), and the
lock is freed only when the outermost holder lets it go. While a lock is taken by someone else,
the waiter logs who holds it and how long it has waited, at once and then every 30 seconds.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from docker_delivery.errors import DeliveryError
from docker_delivery.errors import DeploymentLocked as DeploymentLocked
from docker_delivery.targets.labels import LABEL_LOCK_OWNER as LABEL_OWNER
from docker_delivery.targets.labels import LABEL_LOCK_SINCE as LABEL_SINCE
from docker_delivery.targets.labels import LABEL_MANAGED, LABEL_ROLE, ROLE_LOCK

if TYPE_CHECKING:
    import docker


_Lock = TypeVar("_Lock", bound="ContainerLock")

# Locks this process holds: (engine, lock name, owner) -> how many holders are nested.
_HELD: dict[tuple[str, str, str], int] = {}
_HELD_GUARD = threading.Lock()
WAIT_LOG_EVERY = 30.0


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
        self._kept = False

    # what the lock guards: messages and the error (overridden)
    def taken_message(self) -> str:
        return f"lock {self.name} taken by {self._owner}"

    def takeover_message(self, owner: str) -> str:
        return f"lock {self.name} already held by this task ({owner}): taking it over"

    def waiting_message(self, owner: str, since: str, waited: float) -> str:
        return (
            f"waiting for lock {self.name}: held by {owner} since {since}; waited "
            f"{waited:.0f}s of {self._wait:g}s"
        )

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
        if exc is not None:
            self._kept = False  # the work failed: it goes on nowhere
        self.release()

    def _key(self) -> tuple[str, str, str]:
        engine = getattr(getattr(self._client, "api", None), "base_url", None) or id(self._client)
        return (str(engine), self.name, self._owner)

    def acquire(self) -> None:
        with _HELD_GUARD:
            if self._key() in _HELD:  # held by an outer step of this process: nest
                _HELD[self._key()] += 1
                return
        self._take()
        with _HELD_GUARD:
            _HELD[self._key()] = _HELD.get(self._key(), 0) + 1

    def _take(self) -> None:
        import docker.errors

        started = time.monotonic()
        deadline = started + self._wait
        logged_at: float | None = None
        while True:
            try:
                self._client.containers.create(
                    self._image,
                    name=self.name,
                    command=["true"],
                    labels={
                        **self._labels,
                        LABEL_MANAGED: "true",
                        LABEL_ROLE: ROLE_LOCK,
                        LABEL_OWNER: self._owner,
                        LABEL_SINCE: dt.datetime.now(dt.timezone.utc).isoformat(
                            timespec="milliseconds"
                        ),
                    },
                )
                waited = time.monotonic() - started
                self._log(self.taken_message() + (f" after {waited:.1f}s" if logged_at else ""))
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
            now = time.monotonic()
            if now >= deadline:
                raise self.locked_error(owner, since)
            if logged_at is None or now - logged_at >= WAIT_LOG_EVERY:
                self._log(self.waiting_message(owner, since, now - started))
                logged_at = now
            time.sleep(min(self._poll, max(0.0, deadline - now)))

    def _holder(self) -> tuple[str, str] | None:
        import docker.errors

        try:
            labels = self._client.containers.get(self.name).labels
        except docker.errors.NotFound:
            return None
        return labels.get(LABEL_OWNER, "?"), labels.get(LABEL_SINCE, "?")

    def keep(self) -> None:
        """Leave the lock taken when this holder lets it go without an error: the work goes on
        elsewhere (a trigger, a pause) and comes back as the same owner, who takes it over."""
        self._kept = True

    def release(self) -> None:
        import docker.errors

        with _HELD_GUARD:
            depth = _HELD.get(self._key(), 0) - 1
            if depth > 0:
                _HELD[self._key()] = depth
                return
            _HELD.pop(self._key(), None)
        if self._kept:
            self._log(f"lock {self.name} kept for {self._owner}: the work goes on elsewhere")
            return
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
        waited = f"waited {self._wait:g}s (lock_wait) and it" if self._wait else "it"
        return DeploymentLocked(
            f"{self.name}: another delivery ({owner}, since {since}) is in progress for "
            f"this service and environment; {waited} is still held, so nothing was changed. "
            "Wait for it to finish (or give lock_wait), or if that run is dead, remove the "
            f"lock with `docker rm {self.name}`"
        )
