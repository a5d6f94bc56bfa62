"""Runs migration steps as one-off containers of the release image; the URL goes in as a file."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import os
import socket
import tarfile
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from docker_delivery.errors import (
    DeliveryError,
    MigrationFailed,
    MigrationTimeout,
    RollbackPastContract,
    StatusUnreadable,
)
from docker_delivery.migrations.database import Database
from docker_delivery.migrations.lock import MigrationLock
from docker_delivery.migrations.spec import (
    IMAGE_VARIABLE,
    SECRET_DIR,
    SECRET_PATH,
    URL_FILE_VARIABLE,
    MigrationResult,
    MigrationSpec,
    RollbackCheck,
)
from docker_delivery.migrations.status import MigrationStatus, migration_id, parse_status
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

_TAIL_LINES: Final = 40


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
            ids = tuple(migration_id(row) for row in contracts)
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
        tolerated = tuple(migration_id(row) for row in unknown)
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


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
