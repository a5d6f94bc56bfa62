"""One migration step (image, phase, commands, limits), its result and a rollback's check."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, get_args

from docker_delivery.errors import InvalidMigrationSpec
from docker_delivery.images.ref import ImageRef

Phase = Literal["expand", "contract"]
PHASES: Final = get_args(Phase)

DEFAULT_COMMAND: Final = ("python3", "/app/migrate.py", "up", "--phase", "{phase}")
"""The demo app's migration command; ``{phase}`` in any argument becomes the phase."""
DEFAULT_STATUS_COMMAND: Final = ("python3", "/app/migrate.py", "status")

SECRET_DIR: Final = "dd-secrets"
SECRET_PATH: Final = f"/{SECRET_DIR}/database_url"
URL_FILE_VARIABLE: Final = "DATABASE_URL_FILE"
IMAGE_VARIABLE: Final = "MIGRATION_IMAGE"
"""Set in the migration container to the pinned image, so the tool can record who migrated."""

_ENV_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_ENV: Final = frozenset({"DATABASE_URL", URL_FILE_VARIABLE, IMAGE_VARIABLE})


@dataclass(frozen=True)
class MigrationSpec:
    """One migration step: which image, which phase, which commands, how long.

    ``command`` defaults to the demo app's ``python3 /app/migrate.py up --phase {phase}``;
    ``{phase}`` in any argument becomes ``phase``. ``env`` is passed to every container (not for
    secrets: the database URL goes through :class:`Database`). ``network`` and ``extra_hosts``
    say how the containers reach the database (e.g. ``{"db.internal": "host-gateway"}``).
    """

    image: str
    phase: Phase = "expand"
    command: tuple[str, ...] = DEFAULT_COMMAND
    status_command: tuple[str, ...] = DEFAULT_STATUS_COMMAND
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 1800
    lock_wait: float = 600
    network: str | None = None
    extra_hosts: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None

    def __post_init__(self) -> None:
        ImageRef.parse(self.image).require_pinned()  # a tag-only image is refused here
        if self.phase not in PHASES:
            raise InvalidMigrationSpec(f"phase must be expand or contract, not {self.phase!r}")
        for what in ("command", "status_command"):
            argv = getattr(self, what)
            if isinstance(argv, str) or not all(isinstance(arg, str) for arg in argv) or not argv:
                raise InvalidMigrationSpec(
                    f"{what} must be a non-empty list of strings (an argv), got {argv!r}"
                )
            object.__setattr__(self, what, tuple(argv))
        bad = sorted(name for name in self.env if not _ENV_NAME.match(str(name)))
        if bad:
            raise InvalidMigrationSpec(f"env: {bad} are not valid environment variable names")
        reserved = sorted(_RESERVED_ENV & set(self.env))
        if reserved:
            raise InvalidMigrationSpec(
                f"env: {reserved} are set by the migration step itself; the database URL is a "
                "secret passed as the database (an Airflow connection), never in env"
            )
        if self.timeout <= 0 or self.lock_wait < 0:
            raise InvalidMigrationSpec("timeout must be positive and lock_wait not negative")

    @property
    def pinned_image(self) -> str:
        """The image by digest only (a tag next to the digest is ignored by Docker anyway)."""
        return str(ImageRef.parse(self.image).without_tag())

    @property
    def digest(self) -> str:
        return str(ImageRef.parse(self.image).digest)

    @property
    def argv(self) -> list[str]:
        return [arg.replace("{phase}", self.phase) for arg in self.command]


@dataclass(frozen=True)
class MigrationResult:
    """One migration step, as pushed to XCom (:meth:`as_dict`): no credentials in it.

    ``applied`` lists the migrations (``NNNN_name``) the version table gained between the status
    read before and the one after, both taken under the engine lock; ``started_at`` and
    ``finished_at`` (UTC) bound the time the lock was held.
    """

    version_before: int
    version_after: int
    applied: tuple[str, ...]
    phase: str
    digest: str
    image: str
    database: str
    started_at: str
    finished_at: str
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["applied"] = list(self.applied)
        return result


@dataclass(frozen=True)
class RollbackCheck:
    """A rollback the schema allows, and the expand migrations the target will run beside."""

    image: str
    current_version: int
    tolerated: tuple[str, ...]
