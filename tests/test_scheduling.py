"""Per-object pacing (issue 12): no global tick, steady resyncs spread, wakes on reschedule."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from modeldeploy.reconcile.types import Timing
from modeldeploy.scheduling import JITTER, Pacer, next_delay

TIMING = Timing(act=1, poll=30, resync=600)


class Stopped:
    """What kopf hands a daemon: falsy until set, and an awaitable wait(timeout)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __bool__(self) -> bool:
        return self.event.is_set()

    async def wait(self, timeout: float | None = None) -> Stopped:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)
        return self


def test_steady_resyncs_are_spread_and_short_requeues_are_kept() -> None:
    assert next_delay(TIMING.act, TIMING, rng=lambda: 0.0) == TIMING.act
    assert next_delay(TIMING.poll, TIMING, rng=lambda: 1.0) == TIMING.poll
    low = next_delay(TIMING.resync, TIMING, rng=lambda: 0.0)
    high = next_delay(TIMING.resync, TIMING, rng=lambda: 1.0)
    assert (low, high) == pytest.approx((600 * (1 - JITTER), 600 * (1 + JITTER)))
    spread = {round(next_delay(TIMING.resync, TIMING), 3) for _ in range(50)}
    assert len(spread) > 40  # resources created together do not resync together


def test_a_pacer_sleeps_until_due_and_wakes_when_rescheduled() -> None:
    async def scenario() -> tuple[float, float]:
        pacer, stopped = Pacer(), Stopped()
        pacer.schedule(0.2)
        start = time.monotonic()
        assert await pacer.sleep_until_due(stopped)
        first = time.monotonic() - start

        pacer.schedule(3600)  # steady: an hour away
        asyncio.get_running_loop().call_later(0.1, pacer.schedule, 0.1)  # a spec change
        start = time.monotonic()
        assert await pacer.sleep_until_due(stopped)
        return first, time.monotonic() - start

    first, rescheduled = asyncio.run(scenario())
    assert 0.2 <= first < 1.0
    assert 0.2 <= rescheduled < 1.0  # woke for the new due time, not the hour


def test_a_pacer_before_its_first_pass_waits_and_ends_when_stopped() -> None:
    async def scenario() -> bool:
        pacer, stopped = Pacer(), Stopped()  # nothing scheduled: on_change runs the first pass
        asyncio.get_running_loop().call_later(0.1, stopped.event.set)
        return await asyncio.wait_for(pacer.sleep_until_due(stopped), 5)

    assert asyncio.run(scenario()) is False
