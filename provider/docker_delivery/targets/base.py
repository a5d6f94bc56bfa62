"""What every target shares: a release (what to run) and an instance (what runs).

The truth about what runs is on the running objects: each container or Swarm service carries
labels with the prefix ``io.docker-delivery.`` naming its service, environment, digest and slot.
A target reads them back on every call, so any step can run again and find where things stand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from docker_delivery.errors import DeliveryError
from docker_delivery.images.ref import ImageRef

LABEL_PREFIX = "io.docker-delivery."
LABEL_MANAGED = LABEL_PREFIX + "managed"
LABEL_SERVICE = LABEL_PREFIX + "service"
LABEL_ENVIRONMENT = LABEL_PREFIX + "environment"
LABEL_DIGEST = LABEL_PREFIX + "digest"
LABEL_IMAGE = LABEL_PREFIX + "image"
LABEL_SLOT = LABEL_PREFIX + "slot"
LABEL_CONFIG = LABEL_PREFIX + "config"
LABEL_ROLE = LABEL_PREFIX + "role"
# Written by blue/green, A/B, rollback (and min in-service for the previous digest): the group
# (router backend) an instance serves in, what ran before it, and the names of its run-time
# environment variables (values stay in the container's config, never in a label).
LABEL_SLOT_GROUP = LABEL_PREFIX + "slot-group"
LABEL_PREVIOUS_DIGEST = LABEL_PREFIX + "previous-digest"
LABEL_PREVIOUS_IMAGE = LABEL_PREFIX + "previous-image"
LABEL_ENV_KEYS = LABEL_PREFIX + "env-keys"

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TargetError(DeliveryError):
    """A target could not do what was asked (the engine or Swarm said no)."""


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise DeliveryError(
            f"{kind} {value!r} must be 1-32 lower-case letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return value


@dataclass(frozen=True)
class Release:
    """One digest of one service, to run in one environment, the same way everywhere."""

    service: str
    environment: str
    image: ImageRef
    port: int = 8080
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    command: tuple[str, ...] | None = None
    stop_grace: float = 30.0

    def __post_init__(self) -> None:
        check_name("service", self.service)
        check_name("environment", self.environment)
        self.image.require_pinned()
        if not 1 <= self.port <= 65535:
            raise DeliveryError(f"port {self.port} must be 1-65535")
        bad = [name for name in self.env if not _ENV_VAR.match(name)]
        if bad:
            raise DeliveryError(f"environment variable names {bad} are not valid identifiers")
        if self.stop_grace < 0:
            raise DeliveryError(f"stop_grace {self.stop_grace} must be >= 0 seconds")

    @classmethod
    def of(cls, service: str, environment: str, image: str | ImageRef, **kw: object) -> Release:
        ref = image if isinstance(image, ImageRef) else ImageRef.parse(image)
        return cls(service, environment, ref, **kw)  # type: ignore[arg-type]

    @property
    def digest(self) -> str:
        return str(self.image.digest)

    @property
    def short_digest(self) -> str:
        return self.digest.split(":", 1)[1][:12]

    @property
    def config_id(self) -> str:
        """What an instance runs, as 12 hex digits: digest, environment, command and port.

        Two releases of one digest with different environment variables (an infrastructure
        change) differ here, so a deployment replaces instances whose config differs, and a
        retry leaves alone those that already run this one.
        """
        import hashlib
        import json

        blob = json.dumps(
            [self.digest, sorted(self.run_env().items()), self.command, self.port],
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def run_labels(self) -> dict[str, str]:
        return {
            **self.labels,
            LABEL_MANAGED: "true",
            LABEL_SERVICE: self.service,
            LABEL_ENVIRONMENT: self.environment,
            LABEL_DIGEST: self.digest,
            LABEL_IMAGE: str(self.image),
            LABEL_CONFIG: self.config_id,
            LABEL_ROLE: "app",
            LABEL_ENV_KEYS: ",".join(sorted(self.env)),
        }

    def run_env(self) -> dict[str, str]:
        """The environment a container gets: the spec's, plus what it was delivered from."""
        return {"APP_DIGEST": self.digest, **self.env}


@dataclass(frozen=True)
class Instance:
    """One running (or stopped) copy of a release: a container, or a Swarm task's container."""

    id: str
    name: str
    service: str
    environment: str
    digest: str
    slot: int
    ip: str
    port: int
    running: bool
    exit_code: int | None = None
    group: str = ""  # the Swarm service a task belongs to; "" on the engine
    config: str = ""  # Release.config_id of what it runs

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"
