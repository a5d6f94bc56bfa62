"""The outcome of one image test run, as pushed to XCom."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class TestSummary:
    """The outcome of one test run, as pushed to XCom (:meth:`as_dict`)."""

    __test__: ClassVar[bool] = False

    passed: int
    failed: int
    errors: int
    skipped: int
    exit_code: int
    duration_s: float
    report_found: bool

    @property
    def ok(self) -> bool:
        """True when the command exited 0 and no test failed or errored."""
        return self.exit_code == 0 and self.failed == 0 and self.errors == 0

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-compatible dict (``TestSummary(**d)`` rebuilds the summary)."""
        return asdict(self)

    def describe(self) -> str:
        """``N passed, F failed, E errors, S skipped (exit code X)``."""
        return (
            f"{self.passed} passed, {self.failed} failed, {self.errors} errors, "
            f"{self.skipped} skipped (exit code {self.exit_code})"
        )
