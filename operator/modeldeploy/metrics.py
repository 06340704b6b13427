"""The operator's Prometheus metrics (`modeldeploy serve`'s are in serving/metrics.py).

The call sites hold one-line hooks; what is counted, with which labels, lives here.

The operator (`modeldeploy run`) exports, on MODELDEPLOY_METRICS_ADDRESS:MODELDEPLOY_METRICS_PORT
(off unless the port is set; the chart sets 8080), from `REGISTRY`:

- `modeldeploy_reconcile_total{result}` and `modeldeploy_reconcile_duration_seconds{result}`:
  passes, ok / transient (retried with backoff) / stalled (waiting for a spec change);
- `modeldeploy_actions_total{action, outcome}`: EnsureGroup, RegisterVersion, SetApproval,
  DeployEndpoint, SmokeTest, DeleteEndpoint; ok / transient / failed;
- `modeldeploy_resource_phase{namespace, name, phase}` and
  `modeldeploy_resource_condition{namespace, name, condition, status}`: 1 for what each
  resource is now, 0 for the rest (kube-state-metrics' style, so `sum by (phase)` counts);
  the series of a resource go when it is deleted;
- `modeldeploy_remote_calls_total{provider, operation, result}`: ok / throttled / failed, from
  botocore's event hooks on the sagemaker provider's clients (each call once, after botocore's
  own retries) and at the local provider's registry and hosting methods;
  `modeldeploy_remote_throttled_attempts_total{provider, operation}`: attempts botocore saw
  throttled, retried or not;
- `modeldeploy_smoke_tests_total{provider, result}` and
  `modeldeploy_smoke_test_latency_seconds{provider}`: the fastest of the smoke test's answers,
  the one the gate judges;
- the process and Python collectors (`process_*`, `python_*`).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, Protocol, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily

from modeldeploy.reconcile.reasons import Phase

log = logging.getLogger(__name__)

PORT_ENV = "MODELDEPLOY_METRICS_PORT"
ADDRESS_ENV = "MODELDEPLOY_METRICS_ADDRESS"
DEFAULT_ADDRESS = "127.0.0.1"  # by hand, metrics stay on this machine; the chart sets 0.0.0.0

# -- the operator ---------------------------------------------------------------------------------

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# A pass is one observe (one or two list calls when steady, more when something moves) plus
# whatever actions it runs; a registration downloads and inspects an artifact.
PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SMOKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

RECONCILE_TOTAL = Counter(
    "modeldeploy_reconcile",
    "Reconcile passes by result: ok, transient (retried with backoff), stalled (waits for a "
    "spec change or a person).",
    ["result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "modeldeploy_reconcile_duration_seconds",
    "Duration of reconcile passes (observe, plan, actions, status), by result.",
    ["result"],
    buckets=PASS_BUCKETS,
    registry=REGISTRY,
)
ACTIONS = Counter(
    "modeldeploy_actions",
    "Actions carried out through a provider, by kind and outcome (ok, transient, failed).",
    ["action", "outcome"],
    registry=REGISTRY,
)
REMOTE_CALLS = Counter(
    "modeldeploy_remote_calls",
    "Calls to a provider's backend (AWS API operations; the local provider's registry and "
    "hosting), by result: ok, throttled, failed.",
    ["provider", "operation", "result"],
    registry=REGISTRY,
)
THROTTLED_ATTEMPTS = Counter(
    "modeldeploy_remote_throttled_attempts",
    "Attempts of an AWS call answered with throttling (botocore retries them while attempts "
    "remain).",
    ["provider", "operation"],
    registry=REGISTRY,
)
SMOKE_TESTS = Counter(
    "modeldeploy_smoke_tests",
    "Smoke tests of staging endpoints, by result (passed, failed).",
    ["provider", "result"],
    registry=REGISTRY,
)
SMOKE_SECONDS = Histogram(
    "modeldeploy_smoke_test_latency_seconds",
    "The fastest answer of each smoke test (what maxLatencyMs is compared with).",
    ["provider"],
    buckets=SMOKE_BUCKETS,
    registry=REGISTRY,
)

CONDITION_STATUSES = ("True", "False", "Unknown")


class ResourceStates:
    """`modeldeploy_resource_phase` and `modeldeploy_resource_condition`, made at each scrape
    from what each resource is now. (A labelled Gauge child per series, 27 per resource, held
    24 MiB per 1,000 resources; this holds a phase and a few condition strings each.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (namespace, name) -> (phase or None, {condition type: status})
        self._now: dict[tuple[str, str], tuple[str | None, dict[str, str]]] = {}

    def set(self, key: tuple[str, str], phase: str | None, conditions: dict[str, str]) -> None:
        with self._lock:
            known_phase, known = self._now.get(key, (None, {}))
            # A pass that ends before any phase (a first transient error) keeps the last ones.
            self._now[key] = (phase or known_phase, conditions or known)

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._now.pop(key, None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            now = list(self._now.items())
        phases = GaugeMetricFamily(
            "modeldeploy_resource_phase",
            "1 for the phase each ModelDeployment is in, 0 for the other phases.",
            labels=["namespace", "name", "phase"],
        )
        conditions = GaugeMetricFamily(
            "modeldeploy_resource_condition",
            "1 for the status (True, False, Unknown) of each condition of each "
            "ModelDeployment, 0 for the other two.",
            labels=["namespace", "name", "condition", "status"],
        )
        for (namespace, name), (phase, states) in now:
            if phase:
                for each in Phase:
                    phases.add_metric([namespace, name, each.value], 1 if each == phase else 0)
            for ctype, cstatus in states.items():
                for each in CONDITION_STATUSES:
                    value = 1 if each == cstatus else 0
                    conditions.add_metric([namespace, name, ctype, each], value)
        yield phases
        yield conditions


RESOURCE_STATES = ResourceStates()
REGISTRY.register(RESOURCE_STATES)


class _PassResult(Protocol):
    status: dict
    transient: bool


R = TypeVar("R", bound=_PassResult)


def pass_result(status: dict, transient: bool) -> str:
    if transient:
        return "transient"
    stalled = any(
        c.get("type") == "Stalled" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return "stalled" if stalled else "ok"


def timed_pass(run: Callable[..., R]) -> Callable[..., R]:
    """Decorates `controller.run_pass(body, ...)`: counts and times the pass, and sets the
    resource's phase and condition gauges from the status it wrote."""

    @functools.wraps(run)
    def wrapper(body: dict, *args: Any, **kwargs: Any) -> R:
        start = time.perf_counter()
        result = run(body, *args, **kwargs)
        outcome = pass_result(result.status, result.transient)
        RECONCILE_TOTAL.labels(outcome).inc()
        RECONCILE_SECONDS.labels(outcome).observe(time.perf_counter() - start)
        meta = body.get("metadata") or {}
        set_resource(meta.get("namespace", "default"), meta.get("name", ""), result.status)
        return result

    return wrapper


def set_resource(namespace: str, name: str, status: dict) -> None:
    conditions = {
        c["type"]: c.get("status") or "Unknown"
        for c in status.get("conditions") or []
        if c.get("type")
    }
    RESOURCE_STATES.set((namespace, name), status.get("phase"), conditions)


def forget_resource(body: Any) -> None:
    """The resource is gone: drop its phase and condition series."""
    meta = body.get("metadata") or {}
    RESOURCE_STATES.forget((meta.get("namespace", "default"), meta.get("name", "")))


@contextmanager
def action(act: object) -> Iterator[None]:
    """Counts one action of the executor by the error that ends it, if any."""
    from modeldeploy.providers.errors import TransientError

    kind = type(act).__name__
    try:
        yield
    except TransientError:
        ACTIONS.labels(kind, "transient").inc()
        raise
    except Exception:
        ACTIONS.labels(kind, "failed").inc()
        raise
    ACTIONS.labels(kind, "ok").inc()


def smoke_test(provider: str, passed: bool, latency_ms: float | None) -> None:
    SMOKE_TESTS.labels(provider, "passed" if passed else "failed").inc()
    if latency_ms is not None:
        SMOKE_SECONDS.labels(provider).observe(latency_ms / 1000)


# -- remote calls ---------------------------------------------------------------------------------

# The throttling subset of providers.errors.AWS_TRANSIENT_CODES (the rest are 5xx and timeouts).
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "SlowDown",
    }
)


def _throttled(status: int, parsed: Any) -> bool:
    error = parsed.get("Error", {}) if isinstance(parsed, dict) else {}
    return status == 429 or error.get("Code") in THROTTLING_CODES


def watch_aws_clients(provider: str, *clients: Any) -> None:
    """Count every call of these botocore clients through their event hooks.

    `after-call` fires once per call with the last HTTP answer (after botocore's retries),
    `after-call-error` when no answer came (connection refused, timeout), `needs-retry` after
    each attempt. The unique ids make a client shared by two providers count once."""

    def after_call(http_response: Any, parsed: Any, model: Any, **_: Any) -> None:
        status = getattr(http_response, "status_code", 0)
        throttled = status >= 300 and _throttled(status, parsed)
        result = "ok" if status < 300 else "throttled" if throttled else "failed"
        REMOTE_CALLS.labels(provider, model.name, result).inc()

    def after_call_error(event_name: str, **_: Any) -> None:
        REMOTE_CALLS.labels(provider, event_name.rsplit(".", 1)[-1], "failed").inc()

    def needs_retry(response: Any, operation: Any, **_: Any) -> None:
        if response is not None:
            http, parsed = response
            if _throttled(getattr(http, "status_code", 0), parsed):
                THROTTLED_ATTEMPTS.labels(provider, operation.name).inc()

    for client in clients:
        events = client.meta.events
        events.register("after-call", after_call, unique_id="modeldeploy-metrics-after-call")
        events.register(
            "after-call-error", after_call_error, unique_id="modeldeploy-metrics-after-call-error"
        )
        events.register("needs-retry", needs_retry, unique_id="modeldeploy-metrics-needs-retry")


# The methods of providers.interface.Registry and Hosting: the boundary the reconciler calls.
REGISTRY_METHODS = ("group_arn", "ensure_group", "register_version", "set_approval")
HOSTING_METHODS = ("describe", "names", "deploy", "invoke", "delete")
_depth = threading.local()


def _counted(provider: str, operation: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        depth = getattr(_depth, "value", 0)
        if depth:  # called by another counted method (invoke looks up the endpoint): not a call
            return method(*args, **kwargs)
        _depth.value = 1
        result = "failed"
        try:
            value = method(*args, **kwargs)
            result = "ok"
            return value
        finally:
            _depth.value = 0
            REMOTE_CALLS.labels(provider, operation, result).inc()

    return call


def watch_calls(provider: str, registry: object, hosting: object) -> None:
    """Count the calls of a provider's registry and hosting that reach their backend (here:
    SQLite, the artifact store, local server processes or the Kubernetes API). The methods are
    replaced on these instances only; a method another counted method calls is not counted."""
    for target, methods in ((registry, REGISTRY_METHODS), (hosting, HOSTING_METHODS)):
        if getattr(target, "_modeldeploy_counted", False):
            continue
        for name in methods:
            method = getattr(target, name, None)
            if callable(method):
                setattr(target, name, _counted(provider, name, method))
        target._modeldeploy_counted = True  # type: ignore[attr-defined]


# -- the operator's endpoint -----------------------------------------------------------------------

_server: tuple[Any, threading.Thread] | None = None
_server_lock = threading.Lock()


def serve_from_env() -> int | None:
    """Start the operator's /metrics from MODELDEPLOY_METRICS_PORT (0 or unset: off) and
    MODELDEPLOY_METRICS_ADDRESS (default 127.0.0.1); the bound port, or None when off.

    Called from kopf's startup handler; a second call keeps the running server. A port that
    is taken or a setting that is not a port stops the operator: running without the metrics
    it was configured to export would go unnoticed until someone looks at a dashboard."""
    global _server
    raw = os.environ.get(PORT_ENV, "").strip() or "0"
    address = os.environ.get(ADDRESS_ENV, "").strip() or DEFAULT_ADDRESS
    with _server_lock:
        if _server is not None:
            return int(_server[0].server_port)
        try:
            port = int(raw)
            if not 0 <= port <= 65535:
                raise ValueError(raw)
        except ValueError:
            _fatal(f"{PORT_ENV}={raw!r}: expected a port number (0 turns metrics off)")
        if port == 0:
            return None
        from prometheus_client import start_http_server

        try:
            _server = start_http_server(port, addr=address, registry=REGISTRY)
        except OSError as err:
            _fatal(f"cannot serve metrics on {address}:{port}: {err}")
        bound = int(_server[0].server_port)
        log.info("metrics on http://%s:%d/metrics", address, bound)
        return bound


def _fatal(message: str) -> NoReturn:
    import kopf  # here only: the providers import this module without loading kopf

    raise kopf.PermanentError(message)


def stop_server() -> None:
    global _server
    with _server_lock:
        if _server is not None:
            _server[0].shutdown()
            _server[0].server_close()
            _server = None
