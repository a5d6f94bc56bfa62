"""Database migrations as their own delivery step: the release image migrates its database.

:class:`MigrationRunner` runs the migration command of the release image — the same digest that
will be deployed; a reference without a digest is refused before anything runs — as one-off
containers on a Docker Engine:

1. the image's *status* command reads the schema version before (JSON on its last output line,
   see :func:`parse_status`);
2. the *migration* command runs (``up --phase expand|contract`` for the demo app), its output
   streamed line by line to the ``log`` callback, killed after ``timeout`` seconds;
3. the status command reads the version after.

The result is a :class:`MigrationResult` (versions before and after, the migrations applied, the
phase, the digest). What runs is decided by the migration tool's own version table, so running
the same migration again applies nothing.

**The database URL is a secret.** It reaches a container as a file, never as an environment
variable, a label or a command argument: the container is created (not started), the URL is
copied into it at ``/dd-secrets/database_url`` with ``put_archive`` (mode 0400 for the image's
user), and the container gets ``DATABASE_URL_FILE=/dd-secrets/database_url``. So
``docker inspect`` shows only the file's path, and the file lives in the container's own layer,
which is removed with the container as soon as the command ends (and by :meth:`cleanup` when a
run was killed). Every line given to ``log`` and every error message has the URL and its
password replaced by ``***``.

**One migration per database at a time.** Besides the migration tool's own lock (the demo
app's runner holds a PostgreSQL advisory lock), the runner serialises on the engine: a container
named ``dd-migrate-lock-<key>``, created and never started (Docker refuses a second of the same
name), where ``key`` is a hash of the database's host, port and name. A second migration of the
same database waits up to ``lock_wait`` seconds, saying who holds the lock, then fails with
:class:`MigrationLocked`. The owner is stable across retries of one task, so a retry takes over
its own lock and first removes the containers its killed predecessor left (a migration killed
halfway is rolled back by the database: each migration is one transaction).

**Expand / contract, and rollbacks.** ``phase`` says which migrations run: *expand* (before the
deploy; only adds, so the running release tolerates it) or *contract* (after it; removes what
older releases need). :meth:`MigrationRunner.check_rollback` runs the status command of the
*target* image of a rollback against the database: the status lists the applied migrations the
image does not know (``unknown``). If one of them is a contract migration, the target's code
predates a schema change that removed something it uses, and the rollback is refused with
:class:`RollbackPastContract`. Expand migrations unknown to the target are tolerated by design.

The status command's contract: print a JSON object on the last line of its standard output
with ``current_version`` (an integer; 0 for an empty database) and ``applied`` (a list of
``{"version", "name", "phase"}``); for :meth:`~MigrationRunner.check_rollback` also ``unknown``
(applied migrations not shipped in the image) or ``image_version`` (the highest version the
image ships). The demo app's ``migrate.py status`` prints all of them.

Not done here: a one-off Swarm task (the engine is enough for a one-off command; a Swarm
manager is an engine too).

This is pure domain code: it must never import airflow.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import re
import socket
import tarfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, get_args
from urllib.parse import quote, unquote, urlencode, urlsplit

from docker_delivery.errors import DeliveryError
from docker_delivery.errors import InvalidMigrationSpec as InvalidMigrationSpec
from docker_delivery.errors import MigrationError as MigrationError
from docker_delivery.errors import MigrationFailed as MigrationFailed
from docker_delivery.errors import MigrationLocked as MigrationLocked
from docker_delivery.errors import MigrationTimeout as MigrationTimeout
from docker_delivery.errors import RollbackPastContract as RollbackPastContract
from docker_delivery.errors import StatusUnreadable as StatusUnreadable
from docker_delivery.images.ref import ImageRef
from docker_delivery.strategies.lock import ContainerLock
from docker_delivery.targets.engine_errors import docker_errors
from docker_delivery.targets.labels import (
    LABEL_DATABASE,
    LABEL_DIGEST,
    LABEL_MANAGED,
    LABEL_MIGRATION_RUN,
    LABEL_PHASE,
    LABEL_ROLE,
)
from docker_delivery.targets.oneoff import ensure_image, run_to_end

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

__all__ = [
    "DEFAULT_COMMAND",
    "DEFAULT_STATUS_COMMAND",
    "SECRET_PATH",
    "Database",
    "InvalidMigrationSpec",
    "MigrationError",
    "MigrationFailed",
    "MigrationLock",
    "MigrationLocked",
    "MigrationResult",
    "MigrationRunner",
    "MigrationSpec",
    "MigrationStatus",
    "MigrationTimeout",
    "Phase",
    "RollbackCheck",
    "RollbackPastContract",
    "StatusUnreadable",
    "parse_status",
]

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
_TAIL_LINES: Final = 40
_DEFAULT_PORTS: Final = {"postgres": 5432, "postgresql": 5432, "mysql": 3306, "mariadb": 3306}


# -- errors --------------------------------------------------------------------------------------


# -- the database --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    """A database URL (a secret: it holds the password) and what may be shown of it.

    ``str()``, ``repr()`` and :attr:`display` give ``host:port/name`` only; :attr:`key`, a hash of
    the same, names the engine lock and labels the containers.
    """

    url: str = field(repr=False)

    def __post_init__(self) -> None:
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise InvalidMigrationSpec(
                "the database URL does not parse; expected scheme://user:password@host:port/name"
            ) from None
        if not parts.scheme or not parts.hostname or not parts.path.strip("/"):
            raise InvalidMigrationSpec(
                "the database URL must name a scheme, a host and a database "
                "(scheme://user:password@host:port/name)"
            )

    @classmethod
    def coerce(cls, value: Database | str) -> Database:
        return value if isinstance(value, Database) else cls(value)

    @classmethod
    def from_parts(
        cls,
        *,
        host: str,
        name: str,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        scheme: str = "postgresql",
        options: Mapping[str, str] | None = None,
    ) -> Database:
        """A URL built from its parts, each quoted (a password may hold any character)."""
        if not host or not name:
            raise InvalidMigrationSpec("a database needs a host and a database name")
        auth = ""
        if user:
            auth = quote(user, safe="")
            if password:
                auth += ":" + quote(password, safe="")
            auth += "@"
        where = f"[{host}]" if ":" in host else host
        url = f"{scheme}://{auth}{where}{f':{port}' if port else ''}/{quote(name, safe='')}"
        if options:
            url += "?" + urlencode(dict(options))
        return cls(url)

    @classmethod
    def from_connection(
        cls,
        conn_id: str,
        *,
        conn_type: str | None,
        host: str | None,
        port: int | None,
        login: str | None,
        password: str | None,
        schema: str | None,
        extra: Mapping[str, Any] | None = None,
    ) -> Database:
        """The database of a postgres connection's fields (schema = the database name)."""
        if (conn_type or "").lower() not in ("postgres", "postgresql"):
            raise InvalidMigrationSpec(
                f"connection {conn_id!r} is of type {conn_type!r}; migrations need a postgres "
                "connection (host, port, login, password, schema = the database name)"
            )
        if not host or not schema:
            raise InvalidMigrationSpec(
                f"connection {conn_id!r} must set host and schema (the database name)"
            )
        options = {str(key): str(value) for key, value in (extra or {}).items()}
        return cls.from_parts(
            host=host, name=schema, user=login, password=password, port=port, options=options
        )

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int | None:
        parts = urlsplit(self.url)
        return parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())

    @property
    def name(self) -> str:
        return unquote(urlsplit(self.url).path.lstrip("/"))

    @property
    def display(self) -> str:
        """``host:port/name``: what a log may say about the database."""
        port = f":{self.port}" if self.port else ""
        return f"{self.host}{port}/{self.name}"

    @property
    def key(self) -> str:
        """16 hex digits naming this database (host, port, name) on the engine."""
        blob = f"{self.host.lower()}:{self.port or ''}/{self.name}"
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def secrets(self) -> list[str]:
        """What must never be shown: the URL and its password, raw and URL-encoded."""
        found = {self.url}
        password = urlsplit(self.url).password
        if password:
            found |= {password, unquote(password), quote(unquote(password), safe="")}
        return sorted((s for s in found if s), key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text

    def __str__(self) -> str:
        return self.display

    def __repr__(self) -> str:
        return f"Database({self.display!r})"


# -- specification and results -------------------------------------------------------------------


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
class MigrationStatus:
    """What an image's status command says about the database (see :func:`parse_status`)."""

    current_version: int
    applied: tuple[Mapping[str, Any], ...]
    raw: Mapping[str, Any]

    def applied_ids(self) -> list[str]:
        return [_migration_id(row) for row in self.applied]

    def unknown_to_image(self) -> list[Mapping[str, Any]]:
        """Applied migrations the image does not ship (its code is older than them)."""
        if isinstance(self.raw.get("unknown"), list):
            return [row for row in self.raw["unknown"] if isinstance(row, Mapping)]
        image_version = self.raw.get("image_version")
        if isinstance(image_version, int):
            return [row for row in self.applied if int(row.get("version", 0)) > image_version]
        raise StatusUnreadable(
            "the status reports neither `unknown` (applied migrations the image does not ship) "
            "nor `image_version`; a rollback cannot be checked against it"
        )


def parse_status(output: str) -> MigrationStatus:
    """The status JSON object on the last line of ``output`` that holds one."""
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            raw = json.loads(line)
        except ValueError:
            continue
        version = raw.get("current_version") if isinstance(raw, dict) else None
        if isinstance(version, bool) or not isinstance(version, int):
            raise StatusUnreadable(f"the status JSON has no integer current_version: {line[:200]}")
        applied = raw.get("applied") or []
        if not isinstance(applied, list) or not all(isinstance(r, dict) for r in applied):
            raise StatusUnreadable("the status JSON's `applied` is not a list of objects")
        return MigrationStatus(version, tuple(applied), raw)
    raise StatusUnreadable("the status command printed no JSON object")


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


# -- the engine lock -----------------------------------------------------------------------------


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


# -- the runner ----------------------------------------------------------------------------------


class MigrationRunner:
    """Runs migration steps on a Docker Engine; ``log`` gets one masked line at a time.

    ``owner`` names who migrates (stable across retries of one task, e.g. DAG, run and task);
    containers of one owner are found by label (:meth:`cleanup`), and a retry takes over its
    own lock. By default it is unique to this runner.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        log: Callable[[str], None] = print,
        *,
        owner: str | None = None,
        poll: float = 0.25,
    ) -> None:
        self.client = client
        self.log = log
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.run_id = hashlib.sha256(self.owner.encode()).hexdigest()[:12]
        self._poll = poll
        self._database: Database | None = None

    # -- public ----------------------------------------------------------------------------------

    def migrate(self, spec: MigrationSpec, database: Database | str) -> MigrationResult:
        """Run ``spec`` against ``database``; see the module's docstring.

        Raises :class:`MigrationFailed` (the tool's last output lines in the message, the
        versions before and after as attributes), :class:`MigrationTimeout`,
        :class:`MigrationLocked`, :class:`StatusUnreadable`, or :class:`DeliveryError` when the
        image cannot be pulled. Every container it starts is removed before it returns.
        """
        db = Database.coerce(database)
        self._database = db
        log = self._masked_log(db)
        image = spec.pinned_image
        removed = self.cleanup()
        if removed:
            log(f"removed {removed} container(s) left by an earlier try of this migration")
        ensure_image(self.client, image, log)
        with MigrationLock(
            self.client,
            db,
            owner=self.owner,
            image=image,
            wait=spec.lock_wait,
            log=log,
            poll=self._poll,
        ):
            started_at, started = _now(), time.monotonic()
            before = self._status(spec, image, db)
            log(
                f"{db}: schema at version {before.current_version}; running the {spec.phase} "
                f"migration {spec.argv} from {image}"
            )
            code, tail = self._run(spec, image, db, spec.argv, "migration", stream=log)
            after: MigrationStatus | None = None
            try:
                after = self._status(spec, image, db)
            except StatusUnreadable:
                if code == 0:
                    raise
                # The failure's own message says more than this one: keep it.
            finished_at, duration = _now(), time.monotonic() - started
        version_after = after.current_version if after else None
        if code != 0:
            output = "\n".join(db.mask(line) for line in tail) or "(no output)"
            where = "unknown" if version_after is None else str(version_after)
            raise MigrationFailed(
                f"the {spec.phase} migration of {db} failed (exit code {code}) in {image}; the "
                f"schema is at version {where} (was {before.current_version}). The tool's last "
                f"output:\n{output}",
                exit_code=code,
                version_before=before.current_version,
                version_after=version_after,
            )
        assert after is not None
        known = set(before.applied_ids())
        applied = tuple(i for i in after.applied_ids() if i not in known)
        log(
            f"{db}: schema at version {after.current_version} (was {before.current_version}); "
            f"applied {', '.join(applied) if applied else 'nothing: it was up to date'}"
        )
        return MigrationResult(
            version_before=before.current_version,
            version_after=after.current_version,
            applied=applied,
            phase=spec.phase,
            digest=spec.digest,
            image=image,
            database=db.display,
            started_at=started_at,
            finished_at=finished_at,
            duration_s=round(duration, 3),
        )

    def status(self, spec: MigrationSpec, database: Database | str) -> MigrationStatus:
        """The database's migration state, as the status command of ``spec.image`` reads it."""
        db = Database.coerce(database)
        image = spec.pinned_image
        ensure_image(self.client, image, self._masked_log(db))
        return self._status(spec, image, db)

    def check_rollback(self, spec: MigrationSpec, database: Database | str) -> RollbackCheck:
        """Refuse (:class:`RollbackPastContract`) to roll back to ``spec.image`` past a contract.

        ``spec.image`` is the rollback's *target*, pinned by digest. Its status command is run
        against the database: applied contract migrations the target does not ship mean its code
        predates them. Applied expand migrations it does not ship are tolerated (returned).
        """
        db = Database.coerce(database)
        status = self.status(spec, db)
        image = spec.pinned_image
        unknown = status.unknown_to_image()
        contracts = [row for row in unknown if row.get("phase") == "contract"]
        if contracts:
            ids = tuple(_migration_id(row) for row in contracts)
            by = sorted({str(row.get("applied_by") or "an unrecorded image") for row in contracts})
            raise RollbackPastContract(
                f"refusing to roll back to {image}: database {db} has contract migration(s) "
                f"{', '.join(ids)} applied (by {', '.join(by)}), which this image does not ship. "
                "Its code predates them and may use what they removed. Roll forward instead "
                "(deploy a fix on top of the current release), or restore the database to a "
                f"backup from before {ids[0]} and then roll back.",
                image=image,
                contracts=ids,
            )
        tolerated = tuple(_migration_id(row) for row in unknown)
        if tolerated:
            self._masked_log(db)(
                f"rollback to {image} allowed: the expand migration(s) {', '.join(tolerated)} "
                "it does not ship only added to the schema"
            )
        return RollbackCheck(image, status.current_version, tolerated)

    def cleanup(self) -> int:
        """Remove the containers of this owner's migrations (not its lock); return how many."""
        removed = 0
        label = f"{LABEL_MIGRATION_RUN}={self.run_id}"
        for container in self.client.containers.list(
            all=True, filters={"label": label}, ignore_removed=True
        ):
            with contextlib.suppress(docker_errors().NotFound):
                try:
                    container.remove(force=True)
                    removed += 1
                except docker_errors().APIError as error:
                    if error.status_code != 409:  # 409: removal already in progress
                        raise
        return removed

    def release_lock(self) -> None:
        """Release the engine lock of the last database migrated, if this owner holds it."""
        if self._database is not None:
            MigrationLock(
                self.client, self._database, owner=self.owner, image="", wait=0, log=self.log
            ).release()

    # -- steps -----------------------------------------------------------------------------------

    def _masked_log(self, db: Database) -> Callable[[str], None]:
        def log(line: str) -> None:
            self.log(db.mask(line))

        return log

    def _status(self, spec: MigrationSpec, image: str, db: Database) -> MigrationStatus:
        code, lines = self._run(spec, image, db, list(spec.status_command), "status", stream=None)
        output = "\n".join(db.mask(line) for line in lines)
        if code != 0:
            raise StatusUnreadable(
                f"the status command {list(spec.status_command)} of {image} failed for {db} "
                f"(exit code {code}):\n{output[-3000:] or '(no output)'}"
            )
        try:
            return parse_status(output)
        except StatusUnreadable as error:
            raise StatusUnreadable(f"{image} {list(spec.status_command)}: {error}") from None

    def _run(
        self,
        spec: MigrationSpec,
        image: str,
        db: Database,
        argv: list[str],
        role: str,
        *,
        stream: Callable[[str], None] | None,
    ) -> tuple[int, list[str]]:
        """Run ``argv`` in a one-off container; its exit code (-1: killed) and last lines."""
        labels = {
            LABEL_MANAGED: "true",
            LABEL_ROLE: f"migration-{role}",
            LABEL_MIGRATION_RUN: self.run_id,
            LABEL_DATABASE: db.key,
            LABEL_DIGEST: spec.digest,
            LABEL_PHASE: spec.phase,
        }
        environment = {
            **{str(k): str(v) for k, v in spec.env.items()},
            URL_FILE_VARIABLE: SECRET_PATH,
            IMAGE_VARIABLE: image,
        }
        container = self.client.containers.create(
            image,
            argv,
            name=f"dd-migrate-{self.run_id}-{role}-{uuid.uuid4().hex[:6]}",
            environment=environment,
            labels=labels,
            network=spec.network,
            extra_hosts=dict(spec.extra_hosts) or None,
            user=spec.user,
        )
        try:
            self._put_secret(container, image, spec.user, db.url)
            run = run_to_end(
                container, timeout=spec.timeout, on_line=stream, tail_lines=_TAIL_LINES,
                log=stream or print,
            )  # fmt: skip
            if run.exit_code is None:
                raise MigrationTimeout(
                    f"the {role} command {argv} of {image} did not finish within "
                    f"{spec.timeout:g}s and was killed. A migration in a transaction is rolled "
                    "back by the database when its connection drops; raise the timeout if the "
                    f"migration is legitimately slow. Its last output:\n"
                    + "\n".join(db.mask(line) for line in run.tail)
                )
            output = self._all_output(container) if role == "status" else list(run.tail)
            return run.exit_code, output
        finally:
            with contextlib.suppress(docker_errors().APIError):
                container.remove(force=True)

    def _put_secret(self, container: Container, image: str, user: str | None, url: str) -> None:
        """Copy the URL into the created container, readable by its user only."""
        if user is None:
            config = self.client.images.get(image).attrs.get("Config") or {}
            user = str(config.get("User") or "")
        uid, gid, private = _owner_of(user)
        data = url.encode()
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            folder = tarfile.TarInfo(SECRET_DIR)
            folder.type, folder.mode = tarfile.DIRTYPE, 0o700 if private else 0o755
            folder.uid, folder.gid = uid, gid
            tar.addfile(folder)
            secret = tarfile.TarInfo(SECRET_PATH.lstrip("/"))
            secret.size, secret.mode = len(data), 0o400 if private else 0o444
            secret.uid, secret.gid = uid, gid
            tar.addfile(secret, io.BytesIO(data))
        if not container.put_archive("/", archive.getvalue()):
            raise DeliveryError(f"could not copy the database URL into a container of {image}")

    def _all_output(self, container: Container) -> list[str]:
        output = bytes(container.logs(stdout=True, stderr=True)).decode("utf-8", "replace")
        return output.splitlines()


def _owner_of(user: str) -> tuple[int, int, bool]:
    """uid, gid and whether the secret can be private to them, for an image's USER."""
    name, _, group = user.partition(":")
    if name in ("", "root", "0"):
        return 0, int(group) if group.isdigit() else 0, True
    if name.isdigit():
        return int(name), int(group) if group.isdigit() else int(name), True
    return 0, 0, False  # a user name: its uid is unknown here, so the file is world-readable


def _migration_id(row: Mapping[str, Any]) -> str:
    version = row.get("version")
    number = f"{version:04d}" if isinstance(version, int) else str(version)
    return f"{number}_{row['name']}" if row.get("name") else number


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
