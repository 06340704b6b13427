"""When each ModelDeployment's next pass runs: per object, at the time its last pass asked for.

There is no global tick. Each object has a Pacer in its memo, which a kopf daemon sleeps on until
the pass is due or a change handler reschedules it; a sleeping object costs nothing. Steady
resyncs are spread by ±10 % so resources created together do not move in lockstep, and passes
run in a bounded pool of worker threads (their remote calls wait on I/O; CPU-heavy artifact
inspection runs in subprocesses).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from modeldeploy.reconcile.types import Timing

JITTER = 0.1


def next_delay(
    requeue_after: float, timing: Timing, rng: Callable[[], float] = random.random
) -> float:
    """Seconds until the next pass: as asked, a steady resync spread by ±JITTER."""
    if requeue_after >= timing.resync:
        return requeue_after * (1 - JITTER + 2 * JITTER * rng())
    return requeue_after


def worker_count() -> int:
    """How many threads passes run in (MODELDEPLOY_WORKERS, 16 by default)."""
    return max(1, int(os.environ.get("MODELDEPLOY_WORKERS", "16")))


def worker_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=worker_count(), thread_name_prefix="modeldeploy-pass")


class Pacer:
    """One object's next due time, and a way to wake whoever sleeps until it."""

    def __init__(self) -> None:
        self.due: float | None = None  # loop time; None until the first pass has run
        self._changed = asyncio.Event()

    def schedule(self, delay: float) -> None:
        self.due = asyncio.get_running_loop().time() + delay
        self._changed.set()

    async def sleep_until_due(self, stopped: object) -> bool:
        """True when the pass is due; False once `stopped` (a kopf DaemonStopped) is set."""
        loop = asyncio.get_running_loop()
        while not stopped:
            if self.due is not None and loop.time() >= self.due:
                return True
            timeout = None if self.due is None else self.due - loop.time()
            self._changed.clear()
            changed = asyncio.ensure_future(self._changed.wait())
            stopping = asyncio.ensure_future(stopped.wait(timeout))  # type: ignore[attr-defined]
            _, pending = await asyncio.wait({changed, stopping}, return_when="FIRST_COMPLETED")
            for waiter in pending:
                waiter.cancel()
        return False
