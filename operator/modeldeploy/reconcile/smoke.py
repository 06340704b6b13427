"""The staging smoke test: when to run it (a planner step), and how to judge its answers."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Literal

from modeldeploy.reconcile.actions import SmokeTest
from modeldeploy.reconcile.pass_state import PassState
from modeldeploy.remote import InvokeResult

SMOKE_REQUESTS = 3  # at most: one unless the answers are only too slow


@dataclass(frozen=True)
class Smoke:
    state: Literal["absent", "passed", "running", "failed"]
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.state == "passed"


def decide_smoke(s: PassState) -> Smoke:
    """Test the version staging serves once it serves it: once per config and version; a
    failure holds for this generation."""
    staging, candidate = s.new.staging, s.candidate
    if candidate is None or s.staging is None or s.staging.state != "serving" or staging is None:
        return Smoke("absent")
    test = s.spec.staging.smokeTest
    if test is None:
        return Smoke("passed")
    config = staging.endpointConfigName or ""
    last = staging.smokeTest
    if last is not None and (last.configName, last.version) == (config, candidate.version):
        if last.passed:
            return Smoke("passed", f"smoke test passed in {last.latencyMs} ms")
        if last.generation == s.ctx.generation:
            text = f"smoke test of version {candidate.version} failed: {last.message}"
            return Smoke("failed", text)
    s.actions.append(
        SmokeTest(
            endpoint_name=staging.endpointName or "",
            version=candidate.version,
            config_name=config,
            payload=test.payload,
            content_type=test.contentType,
            max_latency_ms=test.maxLatencyMs,
        )
    )
    return Smoke("running", f"running the smoke test against version {candidate.version}")


def judge(results: list[InvokeResult], payload: str, max_latency_ms: int) -> tuple[float, str]:
    """(the fastest latency, a problem or ""): every answer must hold one prediction per
    payload row, and the fastest is held against maxLatencyMs (a first request after a cold
    start may be slow)."""
    fastest = min(r.latency_ms for r in results)
    problem = next((p for r in results if (p := check_predictions(r, payload))), "")
    if not problem and fastest > max_latency_ms:
        problem = f"latency {fastest:.0f} ms exceeds maxLatencyMs {max_latency_ms}"
    return fastest, problem


def settled(result: InvokeResult, action: SmokeTest) -> bool:
    """One answer decides the test unless it is well formed and only too slow."""
    return bool(check_predictions(result, action.payload)) or (
        result.latency_ms <= action.max_latency_ms
    )


def check_predictions(result: InvokeResult, payload: str) -> str:
    """Return a problem description, or "" when the body holds one number per payload row."""
    rows = [line for line in payload.splitlines() if line.strip()]
    text = result.body.decode("utf-8", "replace").strip()
    try:
        if result.content_type.startswith("application/json"):
            doc = json.loads(text)
            values = [p["score"] if isinstance(p, dict) else p for p in doc["predictions"]]
        else:
            values = [cell for row in csv.reader(io.StringIO(text)) for cell in row if cell]
        scores = [float(v) for v in values]
    except (ValueError, KeyError, TypeError):
        return f"the response is not a list of predictions: {text[:120]!r}"
    if len(scores) != len(rows):
        return f"expected {len(rows)} predictions, got {len(scores)}"
    return ""
