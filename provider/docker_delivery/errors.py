"""The error hierarchy of docker-delivery.

Every error the domain raises derives from :class:`DeliveryError`, so callers (operators, the CLI)
can catch one type. Messages say what went wrong and, where there is one, what to do about it.
"""

from __future__ import annotations


class DeliveryError(Exception):
    """Base class of every error raised by docker-delivery."""


class NotDeployed(DeliveryError):
    """A step refused before it changed anything (another delivery held the lock): nothing was
    deployed, so the ledger records the attempt as ``not_deployed``, not as a failed
    deployment."""


class InvalidReference(DeliveryError, ValueError):
    """An image reference that does not parse, or is not what the caller needs (e.g. not pinned)."""

    def __init__(self, reference: str, reason: str) -> None:
        self.reference = reference
        self.reason = reason
        super().__init__(f"invalid image reference {reference!r}: {reason}")


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
