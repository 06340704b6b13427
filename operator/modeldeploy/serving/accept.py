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

from modeldeploy.serving.limits import Limits

log = logging.getLogger(__name__)

# How long a busier worker leaves a pending connection to the others.
DEFER_SECONDS = 0.005
# How long accept() rests after a failure, doubling while failures go on.
MIN_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 2.0
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
    """Accepts connections on a shared listening socket, one per wake-up.

    It stops watching the socket while this worker holds `limits.max_connections` connections
    (back-pressure: the kernel queues new clients, or another worker takes them) and starts
    again below that; when `accept()` itself fails (out of file descriptors, EMFILE/ENFILE,
    or out of buffers) it backs off, doubling up to MAX_BACKOFF_SECONDS, and logs once per
    `limits.accept_log_interval` with the number of failures since the last log.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        board: ConnectionBoard | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.factory = factory
        self.board = board
        self.limits = limits or Limits()
        self.open = 0  # this worker's connections, counted at accept()
        self.deferred = False
        self.waiting = False  # a deferral or a back-off is pending
        self.full = False
        self.reading = False
        self.closed = False
        self.backoff = 0.0
        self.failures = 0
        self.logged_at = -float("inf")
        self.tasks: set[asyncio.Task[object]] = set()
        sock.setblocking(False)
        self._update_reader()

    def _update_reader(self) -> None:
        wanted = not (self.closed or self.full or self.waiting)
        if wanted != self.reading:
            self.reading = wanted
            if wanted:
                self.loop.add_reader(self.sock.fileno(), self._on_readable)
            else:
                self.loop.remove_reader(self.sock.fileno())

    def _wait(self, seconds: float) -> None:
        self.waiting = True
        self._update_reader()
        self.loop.call_later(seconds, self._resume)

    def _resume(self) -> None:
        # After a deferral `deferred` stays set: what is pending now was left by the others.
        self.waiting = False
        self._update_reader()

    def _on_readable(self) -> None:
        if self.board is not None and not self.deferred and self.board.busier_than_others():
            self.deferred = True
            self._wait(DEFER_SECONDS)
            return
        self.deferred = False
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it
        except OSError as exc:  # e.g. out of file descriptors: keep serving the others
            self._accept_failed(exc)
            return
        self.backoff = 0.0
        conn.setblocking(False)
        # Count it now: the protocol only starts on a later loop iteration, and the next
        # wake-up must already see this connection.
        self.open += 1
        if self.board is not None:
            self.board.add(1)
        task = self.loop.create_task(self._start(conn))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if self.open >= self.limits.max_connections:
            self.full = True
            self._update_reader()
            self._report(
                f"{self.open} connections open, the cap (MODELDEPLOY_SERVE_MAX_CONNECTIONS)"
            )

    def _accept_failed(self, exc: OSError) -> None:
        self.backoff = min(MAX_BACKOFF_SECONDS, max(MIN_BACKOFF_SECONDS, self.backoff * 2))
        self.failures += 1
        self._report(f"accept() failed: {exc}")
        self._wait(self.backoff)

    def _report(self, what: str) -> None:
        """Log `what` unless something was logged within the interval."""
        now = self.loop.time()
        if now - self.logged_at < self.limits.accept_log_interval:
            return
        self.logged_at = now
        log.warning(
            "%s; not accepting for now (%d accept() failures since the last report, "
            "%d connections open, back-off %.2f s)",
            what,
            self.failures,
            self.open,
            self.backoff,
        )
        self.failures = 0

    def connection_closed(self) -> None:
        """One of this worker's connections closed: accept again if it was at the cap."""
        self.open -= 1
        if self.full and self.open < self.limits.max_connections:
            self.full = False
            self._update_reader()

    async def _start(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.factory, conn)
        except OSError as exc:  # the client left already
            log.debug("connection lost before it started: %s", exc)
            conn.close()
            if self.board is not None:
                self.board.add(-1)
            self.connection_closed()

    def close(self) -> None:
        self.closed = True
        self._update_reader()
