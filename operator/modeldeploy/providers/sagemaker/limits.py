"""Keeping one region's SageMaker calls under its rate limits.

Two layers: a token bucket of our own caps the region's control-plane calls at
MODELDEPLOY_AWS_MAX_TPS (SageMaker's per-account quotas are a few to a few tens of calls per
second per API; 0 turns the cap off), shared by every resource of the region because the
clients are; and botocore's `adaptive` retry mode, which slows the client down when SageMaker
throttles anyway and speeds it up again after. So a thousand resources converging at once
queue in the bucket instead of causing a throttling storm.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.config import Config

DEFAULT_MAX_TPS = 20.0


def client_config() -> Config:
    # Attempts are left to AWS_MAX_ATTEMPTS (botocore: 3 by default).
    return Config(retries={"mode": "adaptive"})


def max_tps() -> float:
    return float(os.environ.get("MODELDEPLOY_AWS_MAX_TPS", DEFAULT_MAX_TPS))


class TokenBucket:
    """At most `rate` calls per second on average, in bursts of up to `burst`. Callers over
    the rate are made to wait their turn, in arrival order of their reservations."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._at = clock()
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds callers spent waiting, for metrics and tests

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= 1  # reserved now, even when it has to be waited for
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            self.waited += wait
        if wait > 0:
            self._sleep(wait)


def limit(client: Any, bucket: TokenBucket) -> None:
    """Every attempt the client sends (retries too) takes a token first."""
    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(
        f"before-send.{service}", lambda **_: bucket.acquire(), unique_id="modeldeploy-rate-limit"
    )
