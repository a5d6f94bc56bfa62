"""The database a migration runs against: its URL is a secret; what may be shown of it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, unquote, urlencode, urlsplit

from docker_delivery.errors import InvalidMigrationSpec

_DEFAULT_PORTS: Final = {"postgres": 5432, "postgresql": 5432, "mysql": 3306, "mariadb": 3306}


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
