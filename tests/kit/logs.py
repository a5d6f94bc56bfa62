"""Test helper: a log callback that keeps what it is given (thread-safe), for the ``log=``
argument every domain runner takes."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Lines:
    """``log=Lines()``: every line it was given, in order; ``text`` joins them."""

    lines: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)

    @property
    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def starting(self, prefix: str) -> list[str]:
        """The lines that start with ``prefix``."""
        with self._lock:
            return [line for line in self.lines if line.startswith(prefix)]
