"""Test helper: which TCP connections this process opens (every thread), to show what a
delivery does NOT connect to."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def outgoing_connections() -> Iterator[list[tuple[str, int]]]:
    """The (host, port) of every TCP connection opened meanwhile, by any thread of this process
    (the docker SDK, httpx, asyncio and the load generator all connect through socket.connect)."""
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def note(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            with lock:
                seen.append((str(address[0]), int(address[1])))

    def recording_connect(self: socket.socket, address: Any) -> None:
        note(self, address)
        connect(self, address)

    def recording_connect_ex(self: socket.socket, address: Any) -> int:
        note(self, address)
        return connect_ex(self, address)

    socket.socket.connect = recording_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = recording_connect_ex  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        socket.socket.connect, socket.socket.connect_ex = connect, connect_ex  # type: ignore[method-assign]
