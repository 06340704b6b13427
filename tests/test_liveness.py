"""The liveness probe's verdict: alive while the API server answers, and through an outage
shorter than the grace; dead (kopf's /healthz answers 500) once the silence is longer. The
probe against a real API server that goes away is in test_faults.py."""

from __future__ import annotations

import pytest

from modeldeploy.liveness import GRACE_ENV, ApiServerLost, ApiWatchdog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_within_the_grace_is_reported_not_fatal() -> None:
    clock, answers = Clock(), [True]

    def check() -> None:
        if not answers[-1]:
            raise ConnectionRefusedError("connection refused")

    dog = ApiWatchdog(check, grace=60, clock=clock)
    assert dog.probe() == "ok"
    answers.append(False)
    clock.now += 59
    assert dog.probe() == "no answer for 59s (restart after 60s): connection refused"
    clock.now += 2
    with pytest.raises(ApiServerLost, match=r"^the API server has not answered for 61s"):
        dog.probe()
    answers.append(True)  # it came back before the kubelet acted: alive again, clock reset
    assert dog.probe() == "ok"
    answers.append(False)
    clock.now += 30
    assert dog.probe().startswith("no answer for 30s")


def test_the_grace_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GRACE_ENV, "12.5")
    assert ApiWatchdog(lambda: None).grace == 12.5
    monkeypatch.delenv(GRACE_ENV)
    assert ApiWatchdog(lambda: None).grace == 300
