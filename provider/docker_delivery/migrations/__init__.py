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

This is pure domain code: it must never import airflow."""

from __future__ import annotations

from docker_delivery.errors import InvalidMigrationSpec as InvalidMigrationSpec
from docker_delivery.errors import MigrationError as MigrationError
from docker_delivery.errors import MigrationFailed as MigrationFailed
from docker_delivery.errors import MigrationLocked as MigrationLocked
from docker_delivery.errors import MigrationTimeout as MigrationTimeout
from docker_delivery.errors import RollbackPastContract as RollbackPastContract
from docker_delivery.errors import StatusUnreadable as StatusUnreadable
from docker_delivery.migrations.database import Database as Database
from docker_delivery.migrations.lock import MigrationLock as MigrationLock
from docker_delivery.migrations.runner import MigrationRunner as MigrationRunner
from docker_delivery.migrations.spec import DEFAULT_COMMAND as DEFAULT_COMMAND
from docker_delivery.migrations.spec import DEFAULT_STATUS_COMMAND as DEFAULT_STATUS_COMMAND
from docker_delivery.migrations.spec import IMAGE_VARIABLE as IMAGE_VARIABLE
from docker_delivery.migrations.spec import PHASES as PHASES
from docker_delivery.migrations.spec import SECRET_DIR as SECRET_DIR
from docker_delivery.migrations.spec import SECRET_PATH as SECRET_PATH
from docker_delivery.migrations.spec import URL_FILE_VARIABLE as URL_FILE_VARIABLE
from docker_delivery.migrations.spec import MigrationResult as MigrationResult
from docker_delivery.migrations.spec import MigrationSpec as MigrationSpec
from docker_delivery.migrations.spec import Phase as Phase
from docker_delivery.migrations.spec import RollbackCheck as RollbackCheck
from docker_delivery.migrations.status import MigrationStatus as MigrationStatus
from docker_delivery.migrations.status import migration_id as migration_id
from docker_delivery.migrations.status import parse_status as parse_status

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
