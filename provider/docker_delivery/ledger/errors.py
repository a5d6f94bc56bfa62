"""Errors of the ledger: a record that does not validate, a ledger file that cannot be written
(defined with every other error in :mod:`docker_delivery.errors`)."""

from __future__ import annotations

from docker_delivery.errors import InvalidRecord as InvalidRecord
from docker_delivery.errors import LedgerError as LedgerError

__all__ = ["InvalidRecord", "LedgerError"]
