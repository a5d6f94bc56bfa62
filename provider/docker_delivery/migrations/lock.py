"""One migration per database on an engine: a created-never-started, named container."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from docker_delivery.errors import DeliveryError, MigrationLocked
from docker_delivery.migrations.database import Database
from docker_delivery.strategies.lock import ContainerLock
from docker_delivery.targets.labels import LABEL_DATABASE

if TYPE_CHECKING:
    import docker


class MigrationLock(ContainerLock):
    """One migration per database on an engine: a created-never-started, named container."""

    def __init__(
        self,
        client: docker.DockerClient,
        database: Database,
        *,
        owner: str,
        image: str,
        wait: float,
        log: Callable[[str], None],
        poll: float = 0.25,
    ) -> None:
        self._database = database
        super().__init__(
            client,
            f"dd-migrate-lock-{database.key}",
            owner=owner,
            image=image,
            wait=wait,
            log=log,
            poll=poll,
            labels={LABEL_DATABASE: database.key},
        )

    def taken_message(self) -> str:
        return f"migration lock {self.name} ({self._database}) taken"

    def takeover_message(self, owner: str) -> str:
        return f"migration lock {self.name} already held by this task: taking it over"

    def waiting_message(self, owner: str, since: str, waited: float) -> str:
        return (
            f"waiting for migration lock {self.name}: held by {owner} since {since}; waited "
            f"{waited:.0f}s of {self._wait:g}s"
        )

    def locked_error(self, owner: str, since: str) -> DeliveryError:
        return MigrationLocked(
            f"another migration of database {self._database} ({owner}, since {since}) "
            f"held the lock {self.name} for longer than {self._wait:g}s; wait for it to "
            f"finish and run again, or, if that run is dead, `docker rm {self.name}`"
        )

    def released_message(self) -> str:
        return f"migration lock {self.name} released"
