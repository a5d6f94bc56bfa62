"""The relay's pool of streams for probes: one stream while probes come one after another, more
only while probes run at once and the busy ones do not free up in time, never more than most."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from docker_delivery.targets.relay import _ended, _Pool


class FakeRelay:
    def __init__(self, made: list[Any]) -> None:
        self.made = made

    def sibling(self) -> FakeRelay:
        other = FakeRelay(self.made)
        self.made.append(other)
        return other


def test_one_stream_serves_probes_that_come_one_after_another() -> None:
    made: list[Any] = []
    first = FakeRelay(made)
    pool = _Pool(first, most=3, patience=0.01)  # type: ignore[arg-type]
    for _ in range(5):
        stream = pool.take()
        assert stream is first
        pool.give(stream)
    assert made == [] and pool.count == 1


def test_probes_at_once_grow_the_pool_up_to_most_and_then_wait() -> None:
    made: list[Any] = []
    first = FakeRelay(made)
    pool = _Pool(first, most=2, patience=0.01)  # type: ignore[arg-type]
    a, b = pool.take(), pool.take()
    assert a is first and b is made[0] and pool.count == 2
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(pool.take()))
    waiter.start()
    time.sleep(0.1)
    assert got == []  # at most 2 streams: the third probe waits for one
    pool.give(a)
    waiter.join(2)
    assert got == [a] and pool.count == 2


def test_a_kept_stream_that_has_something_to_read_is_taken_for_ended() -> None:
    left, right = socket.socketpair()
    try:
        assert not _ended(left)
        right.close()  # the process in the container went away: EOF is readable
        assert _ended(left)
    finally:
        left.close()
