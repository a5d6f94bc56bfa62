"""Errors of the ledger: a record that does not validate, a ledger file that cannot be written.

Both derive from :class:`~docker_delivery.errors.DeliveryError`, so callers can catch one type.
"""

from __future__ import annotations

from docker_delivery.errors import DeliveryError

__all__ = ["InvalidRecord", "LedgerError"]


class LedgerError(DeliveryError):
    """The ledger could not be read or written (a permission, a full disk, a bad argument)."""


class InvalidRecord(LedgerError, ValueError):
    """A deployment record with a missing or invalid field.

    ``field`` names the field at fault, so a caller (or a person reading a log) knows what to fix.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"invalid deployment record: {field}: {problem}")
