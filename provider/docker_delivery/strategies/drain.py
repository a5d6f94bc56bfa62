"""The one way an instance leaves a router's backend without a request lost: no new request is
sent to its slot, the requests in flight finish, then what served in it stops, then the slot is
freed for the next instance.

``mode="drain"`` lets clients that are stuck to a server by cookie keep reaching it while it
drains (the cookie-free groups: min in-service, rolling, infrastructure changes);
``mode="maint"`` sends it nothing new at all (a sticky A/B backend, a blue/green colour leaving).

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

__all__ = ["take_out"]


def take_out(
    router: Any,
    backend: str,
    slots: Sequence[int],
    *,
    timeout: float,
    stop: Callable[[], object] | None = None,
    mode: Literal["drain", "maint"] = "drain",
) -> None:
    """``slots`` of ``backend`` out of service: set to ``mode``, their requests in flight waited
    for (RouterError past ``timeout`` seconds, nothing cut), ``stop()`` called (what served in
    them), the slots freed."""
    for slot in slots:
        router.set_state(backend, slot, mode)
    for slot in slots:
        router.wait_drained(backend, slot, timeout)
    if stop is not None:
        stop()
    for slot in slots:
        router.release(backend, slot)
