"""What the triggers that watch a rollout through its router share: open what they read (in a
thread: the Docker SDK blocks), look every ``poll_s`` seconds until a verdict, act at once on a
failure (send the clients back), and fire one event saying how it ended: ``passed``,
``failed``, ``ended`` (someone else moved the traffic meanwhile) or ``error`` (it could not
look; a few failed reads in a row are tolerated)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

READ_ERRORS_TOLERATED = 5  # looks in a row that may fail before the watch gives up


class WatchingTrigger(BaseTrigger):
    """The loop; a subclass says what to open, how to look, how to send clients back and what
    its event holds."""

    poll_s: float = 0.5
    what: str = "the watch"

    def open(self) -> Any:
        """What the looks need (blocking; in a thread)."""
        raise NotImplementedError

    def close(self, opened: Any) -> None:
        """Let go of what :meth:`open` made."""

    def ended(self, opened: Any) -> str | None:
        """Why the watch has no object any more (the traffic was moved meanwhile), or None."""
        raise NotImplementedError

    def look(self, opened: Any) -> tuple[str | None, dict[str, Any], str]:
        """One look: (None | ``passed`` | ``failed``, figures, why it failed)."""
        raise NotImplementedError

    def send_back(self, opened: Any) -> None:
        """On a failure: every client back to what served before, at once."""
        raise NotImplementedError

    def report(self, verdict: str, figures: dict[str, Any], message: str) -> TriggerEvent:
        raise NotImplementedError

    def since(self) -> float:
        """Seconds since what is watched began (the switch, the step's weights)."""
        raise NotImplementedError

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            opened = await asyncio.to_thread(self.open)
        except Exception as exc:  # the engine or a connection: the task says what to do
            yield self.report("error", {}, f"{type(exc).__name__}: {exc}")
            return
        failures = 0
        self.log.info("%s: first look %.1fs after it began", self.what, self.since())
        try:
            while True:
                try:
                    gone = await asyncio.to_thread(self.ended, opened)
                    if gone is not None:
                        yield self.report("ended", {}, gone)
                        return
                    verdict, figures, why = await asyncio.to_thread(self.look, opened)
                    failures = 0
                except Exception as exc:
                    failures += 1
                    self.log.warning("%s: a look failed (%d): %s", self.what, failures, exc)
                    if failures >= READ_ERRORS_TOLERATED:
                        yield self.report("error", {}, f"{type(exc).__name__}: {exc}")
                        return
                    await asyncio.sleep(self.poll_s)
                    continue
                if verdict == "failed":
                    try:
                        await asyncio.to_thread(self.send_back, opened)
                    except Exception as exc:  # the resumed task sends them back again
                        self.log.warning("%s: sending clients back failed: %s", self.what, exc)
                    self.log.info("%s failed: %s", self.what, why)
                    yield self.report("failed", figures, why)
                    return
                if verdict == "passed":
                    self.log.info("%s passed: %s", self.what, figures)
                    yield self.report("passed", figures, "")
                    return
                await asyncio.sleep(self.poll_s)
        finally:
            await asyncio.to_thread(self.close, opened)
