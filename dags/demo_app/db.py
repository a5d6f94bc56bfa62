"""The demo app's way to PostgreSQL: the database URL, a driver, and masked error messages.

The URL comes from ``DATABASE_URL_FILE`` (a file holding it, which is how the delivery tool
passes it: a file copied into the container, so it never shows in ``docker inspect``) or from
``DATABASE_URL``. It is never printed: :func:`mask` hides its password (and the URL as a whole)
in any text before it is shown.

The driver is whichever is installed: psycopg2 (Debian's python3-psycopg2, on the test bed's
Debian base image) or psycopg 3 (pip's ``psycopg[binary]``, on python:3.12-slim). Both are
DB-API 2 drivers; only what they share is used here.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

APPLICATION_NAME = "demo-app"


class DatabaseNotConfigured(RuntimeError):
    """Neither DATABASE_URL_FILE nor DATABASE_URL is set."""


class DriverMissing(RuntimeError):
    """No PostgreSQL driver (psycopg2 or psycopg) is installed in this image."""


def database_url(env: Mapping[str, str] = os.environ) -> str | None:
    """The database URL: the content of DATABASE_URL_FILE, else DATABASE_URL, else None."""
    path = env.get("DATABASE_URL_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError as error:
            raise DatabaseNotConfigured(
                f"DATABASE_URL_FILE={path} cannot be read: {error.strerror}"
            ) from None
    return env.get("DATABASE_URL") or None


def require_url(env: Mapping[str, str] = os.environ) -> str:
    url = database_url(env)
    if not url:
        raise DatabaseNotConfigured(
            "no database configured: set DATABASE_URL (postgresql://user:password@host:port/db) "
            "or DATABASE_URL_FILE (a file holding that URL)"
        )
    return url


def secrets_of(url: str | None) -> list[str]:
    """What must never be shown: the URL, and its password (as written and decoded)."""
    if not url:
        return []
    found = [url]
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        found += [password, unquote(password)]
    match = re.search(r"(?:^|\s)password\s*=\s*'?([^'\s]+)", url)  # key=value conninfo
    if match:
        found.append(match.group(1))
    return sorted({s for s in found if s}, key=len, reverse=True)


def mask(text: str, url: str | None) -> str:
    """``text`` with the URL and its password replaced by ``***``."""
    for secret in secrets_of(url):
        text = text.replace(secret, "***")
    return text


def describe_url(url: str) -> str:
    """``host:port/dbname`` of a URL, for messages (no user, no password)."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
    except ValueError:
        return "(an unparsable URL)"


def driver_name() -> str:
    try:
        import psycopg2  # noqa: F401

        return "psycopg2"
    except ImportError:
        pass
    try:
        import psycopg  # noqa: F401

        return "psycopg"
    except ImportError:
        raise DriverMissing(
            "no PostgreSQL driver in this image: install python3-psycopg2 (Debian) "
            "or psycopg[binary] (pip)"
        ) from None


def connect(url: str, *, application_name: str = APPLICATION_NAME, timeout: int = 10) -> Any:
    """A connection in autocommit mode: transactions are opened explicitly with BEGIN."""
    if driver_name() == "psycopg2":
        import psycopg2

        conn = psycopg2.connect(url, application_name=application_name, connect_timeout=timeout)
    else:
        import psycopg

        conn = psycopg.connect(url, application_name=application_name, connect_timeout=timeout)
    conn.autocommit = True
    return conn


def is_database_error(error: BaseException) -> bool:
    """True for the driver's own errors (connection refused, SQL error, ...)."""
    kinds: list[type[BaseException]] = []
    for module in ("psycopg2", "psycopg"):
        with contextlib.suppress(ImportError):
            kinds.append(__import__(module).Error)
    return isinstance(error, tuple(kinds))


def error_text(error: BaseException, url: str | None) -> str:
    """The database's own message for ``error`` (with SQLSTATE when there is one), masked."""
    text = str(error).strip() or type(error).__name__
    diag = getattr(error, "diag", None)
    sqlstate = getattr(diag, "sqlstate", None) or getattr(error, "pgcode", None)
    if sqlstate and sqlstate not in text:
        text = f"{text} (SQLSTATE {sqlstate})"
    return mask(text, url)
