"""Sharing one listening socket between worker processes, fairly.

asyncio's and uvloop's servers accept every pending connection at once, so with several
workers on one socket the first to wake takes a whole burst of clients and keeps them
(keep-alive) while the others idle; SO_REUSEPORT spreads connections by a hash, which for a
handful of clients is often lopsided too. Instead each worker accepts one connection per wake-up
and, while it holds more connections than the least loaded worker, steps back for a moment so
that one can take it; a connection nobody else took is accepted anyway after that moment.
The counts live in a small shared memory page (a memfd the supervisor hands to every worker).
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

# How long a busier worker leaves a pending connection to the others.
DEFER_SECONDS = 0.005
_SLOT = 8  # one int64 count per worker


def create_board(workers: int) -> int:
    """A shared memory file for `workers` connection counts; returns its descriptor."""
    fd = os.memfd_create("modeldeploy-serve-connections", 0)
    os.ftruncate(fd, _SLOT * workers)
    return fd


def clear_slot(fd: int, slot: int) -> None:
    """Zero a dead worker's count (its connections died with it)."""
    os.pwrite(fd, bytes(_SLOT), _SLOT * slot)


class ConnectionBoard:
    """This worker's view of every worker's live connection count."""

    def __init__(self, fd: int, slot: int) -> None:
        size = os.fstat(fd).st_size
        self._map = mmap.mmap(fd, size)
        self.counts = memoryview(self._map).cast("q")
        self.slot = slot

    def add(self, delta: int) -> None:
        self.counts[self.slot] += delta

    def busier_than_others(self) -> bool:
        return self.counts[self.slot] > min(self.counts)


class Acceptor:
    """Accepts connections on a shared listening socket, one per wake-up."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        board: ConnectionBoard | None = None,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.factory = factory
        self.board = board
        self.deferred = False
        self.closed = False
        self.tasks: set[asyncio.Task[object]] = set()
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        if self.board is not None and not self.deferred and self.board.busier_than_others():
            self.deferred = True
            self.loop.remove_reader(self.sock.fileno())
            self.loop.call_later(DEFER_SECONDS, self._resume)
            return
        self.deferred = False
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it
        except OSError as exc:  # e.g. out of file descriptors: keep serving the others
            log.warning("accept failed: %s", exc)
            return
        conn.setblocking(False)
        # Count it now: the protocol only starts on a later loop iteration, and the next
        # wake-up must already see this connection.
        if self.board is not None:
            self.board.add(1)
        task = self.loop.create_task(self._start(conn))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _start(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.factory, conn)
        except OSError as exc:  # the client left already
            log.debug("connection lost before it started: %s", exc)
            conn.close()
            if self.board is not None:
                self.board.add(-1)

    def _resume(self) -> None:
        # Still `deferred`: whatever is pending now was left by the others, so take it.
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._on_readable)

    def close(self) -> None:
        self.closed = True
        self.loop.remove_reader(self.sock.fileno())
