"""The error hierarchy of docker-delivery.

Every error the domain raises derives from :class:`DeliveryError`, so callers (operators, the CLI)
can catch one type. Messages say what went wrong and, where there is one, what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence

MESSAGE_LIMIT = 300
"""The most characters one line of an error message takes, whatever the input it quotes."""


def clip(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (``'aaaa...'`` and how long it was): an error
    quotes what it got, never a whole 100,000-character input."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}... ({len(str(value)):,} characters)"


def clip_line(line: str, limit: int = MESSAGE_LIMIT) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."


class DeliveryError(Exception):
    """Base class of every error raised by docker-delivery."""


class NotDeployed(DeliveryError):
    """A step refused before it changed anything (another delivery held the lock): nothing was
    deployed, so the ledger records the attempt as ``not_deployed``, not as a failed
    deployment."""


class SpecInvalid(DeliveryError, ValueError):
    """A spec that cannot be used. ``problems`` holds one line per problem, each starting with
    the field's path (``environments.prod.replicas: must be >= 0``) or the place in the file
    (``YAML: line 3, column 5: ...``). Each line is at most :data:`MESSAGE_LIMIT` characters
    and at most :attr:`SHOWN` are shown, whatever the input."""

    SHOWN = 20

    def __init__(self, origin: str, problems: Sequence[str]) -> None:
        self.origin = clip_line(origin, 120)
        self.problems = [clip_line(p) for p in problems]
        count = f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        lines = "\n".join(f"  - {p}" for p in self.problems[: self.SHOWN])
        more = len(self.problems) - self.SHOWN
        if more > 0:
            lines += f"\n  - ... and {more} more"
        super().__init__(f"invalid spec ({self.origin}), {count}:\n{lines}")


class InvalidReference(DeliveryError, ValueError):
    """An image reference that does not parse, or is not what the caller needs (e.g. not pinned).
    ``reference`` is what was given; the message quotes at most its first 80 characters."""

    def __init__(self, reference: str, reason: str) -> None:
        self.reference = reference
        self.reason = reason
        super().__init__(f"invalid image reference {clip(reference)}: {clip_line(reason, 200)}")


class RegistryError(DeliveryError):
    """An OCI registry refused or failed a request.

    ``registry`` is the registry's address (``host[:port]``) when known. Every subclass takes the
    whole message as its one positional argument, so it can be raised with a message of its own.
    """

    def __init__(self, message: str, *, registry: str | None = None) -> None:
        self.registry = registry
        super().__init__(message)


class ImageNotFound(RegistryError):
    """A manifest, blob, tag or repository the registry does not know.

    ``reference`` is what was looked up (``registry/repository:tag``, ``...@sha256:...``).
    """

    def __init__(
        self, message: str, *, registry: str | None = None, reference: str | None = None
    ) -> None:
        self.reference = reference
        super().__init__(message, registry=registry)


class Unauthorized(RegistryError):
    """The registry (or its token service) refused the credentials, or asked for some."""


class RegistryUnavailable(RegistryError):
    """The registry did not answer usefully (connection error, timeout, 5xx, 429) after retries.

    ``attempts`` is how many requests were made; ``last_error`` describes the last failure.
    """

    def __init__(
        self,
        message: str,
        *,
        registry: str | None = None,
        attempts: int | None = None,
        last_error: str | None = None,
    ) -> None:
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(message, registry=registry)


class RegistryProtocolError(RegistryError):
    """The registry answered something unexpected: a digest mismatch, an unknown status."""
