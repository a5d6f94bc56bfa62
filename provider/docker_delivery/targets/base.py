"""What every target shares: a release (what to run) and an instance (what runs).

The truth about what runs is on the running objects: each container or Swarm service carries
labels with the prefix ``io.docker-delivery.`` naming its service, environment, digest and slot.
A target reads them back on every call, so any step can run again and find where things stand.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from docker_delivery.errors import DeliveryError
from docker_delivery.errors import TargetError as TargetError
from docker_delivery.images.ref import ImageRef
from docker_delivery.targets.inventory import Instance as Instance
from docker_delivery.targets.labels import (
    LABEL_CONFIG,
    LABEL_DIGEST,
    LABEL_ENV_KEYS,
    LABEL_ENVIRONMENT,
    LABEL_IMAGE,
    LABEL_MANAGED,
    LABEL_PORT,
    LABEL_ROLE,
    LABEL_SECRET_KEYS,
    LABEL_SERVICE,
    ROLE_APP,
)

SECRETS_DIR = "/run/secrets"
_NETWORK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise DeliveryError(
            f"{kind} {value!r} must be 1-32 lower-case letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return value


def secret_fingerprint(value: str, *, service: str, environment: str, name: str) -> str:
    """16 hex digits that tell two values of one secret apart without keeping either.

    PBKDF2-SHA256, 100,000 rounds, salted with the service, environment and name: the same value
    gives the same fingerprint there (so a plan and a retry agree), and guessing a weak value
    from a fingerprint costs 100,000 hashes per guess.
    """
    salt = f"docker-delivery/{service}/{environment}/{name}".encode()
    return hashlib.pbkdf2_hmac("sha256", value.encode(), salt, 100_000).hex()[:16]


@dataclass(frozen=True)
class SecretMount:
    """A secret a release gets, known to the app as ``name``.

    Either a ``value`` (resolved at run time, never in a label, the config id or a repr) or, on
    Swarm, an existing Docker secret ``docker_secret``. ``expose="file"`` (the default) puts it in
    the file ``/run/secrets/<name>`` and sets ``<name>_FILE`` to that path; ``expose="env"`` sets
    the variable ``<name>`` to the value (visible in ``docker inspect``). ``fingerprint`` is
    what :attr:`Release.config_id` covers (:func:`secret_fingerprint` of the value).
    """

    name: str
    fingerprint: str
    value: str | None = field(default=None, repr=False, compare=False)
    expose: Literal["file", "env"] = "file"
    docker_secret: str | None = None

    def __post_init__(self) -> None:
        if not _ENV_VAR.match(self.name):
            raise DeliveryError(f"secret name {self.name!r} is not a valid variable name")
        if self.expose not in ("file", "env"):
            raise DeliveryError(f"secret {self.name}: expose must be 'file' or 'env'")
        if (self.value is None) == (self.docker_secret is None):
            raise DeliveryError(f"secret {self.name}: give a value or a Docker secret, not both")
        if self.docker_secret is not None and self.expose != "file":
            raise DeliveryError(f"secret {self.name}: a Docker secret can only be a file")

    @classmethod
    def of(
        cls,
        name: str,
        value: str,
        *,
        service: str,
        environment: str,
        expose: Literal["file", "env"] = "file",
    ) -> SecretMount:
        fp = secret_fingerprint(value, service=service, environment=environment, name=name)
        return cls(name, fp, value, expose)

    @classmethod
    def docker(cls, name: str, secret: str) -> SecretMount:
        """An existing Docker secret (Swarm only), by name."""
        return cls(name, docker_secret_fingerprint(secret), docker_secret=secret)

    @property
    def path(self) -> str:
        return f"{SECRETS_DIR}/{self.name}"


def docker_secret_fingerprint(secret_name: str) -> str:
    return hashlib.sha256(f"docker-secret:{secret_name}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Limits:
    """Resource limits of each instance: CPUs (0.5 = half a CPU) and memory in bytes."""

    cpus: float | None = None
    memory: int | None = None

    def __post_init__(self) -> None:
        if self.cpus is not None and not 0 < self.cpus <= 1024:
            raise DeliveryError(f"cpus {self.cpus} must be > 0 (and at most 1024)")
        if self.memory is not None and self.memory < 6 * 1024 * 1024:
            raise DeliveryError(f"memory {self.memory} bytes is below Docker's minimum of 6 MiB")

    @property
    def nano_cpus(self) -> int:
        return round((self.cpus or 0) * 1_000_000_000)


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
    # Infrastructure (ApplyInfraOperator): secrets by value or Docker secret, resource limits,
    # networks beyond the service's own. Covered by config_id (secrets by fingerprint).
    secrets: tuple[SecretMount, ...] = ()
    limits: Limits | None = None
    networks: tuple[str, ...] = ()

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
        names = [s.name for s in self.secrets]
        clash = sorted(
            {
                s.name
                for s in self.secrets
                if s.name in self.env
                or names.count(s.name) > 1
                or (s.expose == "file" and f"{s.name}_FILE" in self.env)
            }
        )
        if clash:
            raise DeliveryError(f"secrets {clash} are set twice or clash with env variables")
        bad_nets = [n for n in self.networks if not _NETWORK.match(n)]
        if bad_nets:
            raise DeliveryError(f"network names {bad_nets} are not valid")

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
        """What an instance runs, as 12 hex digits: digest, environment, command and port, and
        (when set) secrets by fingerprint, limits and networks.

        Two releases of one digest with different environment variables (an infrastructure
        change) differ here, so a deployment replaces instances whose config differs, and a
        retry leaves alone those that already run this one.
        """
        import hashlib
        import json

        parts: list[object] = [self.digest, sorted(self.run_env().items()), self.command, self.port]
        # Only when set, so releases without them keep the config ids they always had.
        if self.secrets:
            parts.append(
                ["secrets", sorted([s.name, s.expose, s.fingerprint] for s in self.secrets)]
            )
        if self.limits is not None:
            parts.append(["limits", self.limits.cpus, self.limits.memory])
        if self.networks:
            parts.append(["networks", sorted(self.networks)])
        blob = json.dumps(parts, sort_keys=True)
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
            LABEL_PORT: str(self.port),
            LABEL_ROLE: ROLE_APP,
            LABEL_ENV_KEYS: ",".join(sorted(self.env)),
            **(
                {LABEL_SECRET_KEYS: ",".join(f"{s.name}:{s.expose}" for s in self.secrets)}
                if self.secrets
                else {}
            ),
        }

    def run_env(self) -> dict[str, str]:
        """The environment a container gets: the spec's, plus what it was delivered from."""
        return {"APP_DIGEST": self.digest, **self.env}

    def start_env(self) -> dict[str, str]:
        """:meth:`run_env` plus the secrets' variables: ``<NAME>_FILE`` for a file, the value
        for ``expose="env"``. What a target starts an instance with; never logged."""
        env = self.run_env()
        for s in self.secrets:
            if s.expose == "env" and s.value is not None:
                env[s.name] = s.value
            else:
                env[f"{s.name}_FILE"] = s.path
        return env


TargetKind = Literal["engine", "swarm"]


class SlotTarget(Protocol):
    """What blue/green, A/B and rollback drive: a release's instances in numbered slots, each
    slot serving in the router slot of the same number. EngineTarget (a container per slot) and
    SwarmTarget (the tasks of the release's Swarm service for its group) both offer it."""

    kind: str

    def network(self, service: str, environment: str) -> str: ...

    def ensure_image(self, release: Release) -> None: ...

    def start_many(self, release: Release, slots: Sequence[int]) -> list[Instance]: ...

    def remove_many(self, instances: Sequence[Instance], *, grace: float) -> None: ...

    def remove_slots(
        self, release: Release, slots: Sequence[int] | None = None, *, grace: float
    ) -> None: ...

    def exit_reason(self, instance: Instance) -> str | None: ...
