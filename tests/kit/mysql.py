"""The bed's MariaDB (MySQL) from the host: a database of a test's own, created as the bed's
``ledger`` user (password from its file) and dropped at the end.

``mysql_database(bed)`` yields the SQLAlchemy URL of that database (``mysql+pymysql``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymysql
from sqlalchemy import URL


def _connect(bed: Any) -> pymysql.connections.Connection:
    if not bed.mysql_port:
        import pytest

        pytest.fail("the bed has no MariaDB (bed.env predates it): run tests/bed/up")
    return pymysql.connect(
        host=bed.mysql_host,
        port=bed.mysql_port,
        user=bed.mysql_user,
        password=bed.mysql_password(),
        connect_timeout=10,
        autocommit=True,
    )


@contextmanager
def mysql_database(bed: Any) -> Iterator[URL]:
    """A new, empty database with a random name (utf8mb4); yields its URL; dropped at the end."""
    name = f"test_{secrets.token_hex(6)}"  # letters, digits and _: no quoting issue
    with _connect(bed) as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    try:
        yield URL.create(
            "mysql+pymysql",
            username=bed.mysql_user,
            password=bed.mysql_password(),
            host=bed.mysql_host,
            port=bed.mysql_port,
            database=name,
        )
    finally:
        with _connect(bed) as connection, connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
