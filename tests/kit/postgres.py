"""The bed's PostgreSQL from the host: psql as the bed's user, with its password from its file."""

from __future__ import annotations

import os
import subprocess
from typing import Any


def psql(bed: Any, database: str, sql: str) -> str:
    """Runs ``sql`` in ``database``; its rows, unaligned (``-tA``)."""
    run = subprocess.run(
        [str(bed.postgres_bin / "psql"), "-X", "-tA", "-v", "ON_ERROR_STOP=1", "-h",
         bed.postgres_host, "-p", str(bed.postgres_port), "-U", bed.postgres_user, "-d", database,
         "-c", sql],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "PGPASSWORD": bed.postgres_password()},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()
