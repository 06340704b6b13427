"""The sagemaker provider keeps under the region's rate limits (issue 12): our token bucket caps
control-plane calls, and botocore's adaptive retry mode backs off when SageMaker throttles."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from emulator import REGION, Emulator
from faultproxy import FaultProxy

from modeldeploy.providers.sagemaker import SageMakerProvider
from modeldeploy.providers.sagemaker.limits import TokenBucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_bucket_lets_a_burst_through_then_paces_at_its_rate() -> None:
    t = FakeTime()
    bucket = TokenBucket(10, burst=5, clock=t.clock, sleep=t.sleep)
    for _ in range(25):
        bucket.acquire()
    assert len(t.slept) == 20  # the first 5 went at once
    assert t.now == pytest.approx(2.0)  # 20 more at 10 per second
    t.now += 10  # idle: the bucket refills, but only up to its burst
    before = len(t.slept)
    for _ in range(5):
        bucket.acquire()
    assert len(t.slept) == before


def test_concurrent_callers_share_one_rate(monkeypatch: pytest.MonkeyPatch, aws_env) -> None:
    monkeypatch.setenv("MODELDEPLOY_AWS_MAX_TPS", "20")
    provider = SageMakerProvider(REGION)
    calls_per_thread, threads = 12, 5  # 60 calls: 20 at once, 40 more at 20 per second

    def work() -> None:
        for _ in range(calls_per_thread):
            provider.registry.sm.list_model_package_groups(MaxResults=1)

    start = time.monotonic()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert time.monotonic() - start >= 1.8
    assert provider.rate_limit is not None and provider.rate_limit.waited > 0


def test_the_cap_can_be_turned_off(monkeypatch: pytest.MonkeyPatch, aws_env) -> None:
    monkeypatch.setenv("MODELDEPLOY_AWS_MAX_TPS", "0")
    assert SageMakerProvider(REGION).rate_limit is None


@pytest.fixture
def proxy(aws_env: Emulator) -> Iterator[FaultProxy]:
    proxy = FaultProxy(aws_env.url, rate=0.0).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def test_throttled_calls_are_retried_by_the_adaptive_limiter(
    monkeypatch: pytest.MonkeyPatch, proxy: FaultProxy
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    provider = SageMakerProvider(REGION)
    sm = provider.registry.sm
    assert sm.meta.config.retries["mode"] == "adaptive"
    proxy.force("ListModelPackageGroups", "throttle", "before", times=2)
    sm.list_model_package_groups(MaxResults=1)  # succeeds on the third attempt
    assert proxy.tally.calls["ListModelPackageGroups"] == 3
