"""Every Prometheus metric of modeldeploy: the operator's and `modeldeploy serve`'s.

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

`modeldeploy serve` exports on its own port, at `/metrics` (not counted itself):
`modeldeploy_serve_requests_total{route, status}`,
`modeldeploy_serve_request_duration_seconds{route}`, `modeldeploy_serve_rows_total` (rows
predicted) and `modeldeploy_serve_errors_total{status}` (answers of 400 and above). Its workers
are separate processes: each adds to its own slot of a shared memory page (a memfd, as the
connection board in serving/accept.py), and whichever worker answers /metrics sums the slots.
That costs a few array increments per request, where prometheus_client's multiprocess mode
costs a lock and an mmap write per value (measured in bench/metrics.py), leaves no files behind,
and keeps a restarted worker's counts (the new worker takes over its slot).
"""

from __future__ import annotations

import functools
import logging
import mmap
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, Protocol, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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
RESOURCE_PHASE = Gauge(
    "modeldeploy_resource_phase",
    "1 for the phase each ModelDeployment is in, 0 for the other phases.",
    ["namespace", "name", "phase"],
    registry=REGISTRY,
)
RESOURCE_CONDITION = Gauge(
    "modeldeploy_resource_condition",
    "1 for the status (True, False, Unknown) of each condition of each ModelDeployment, 0 for "
    "the other two.",
    ["namespace", "name", "condition", "status"],
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
# Series set per resource, so that deleting it removes exactly those.
_resources: dict[tuple[str, str], set[tuple[str, ...]]] = {}
_resources_lock = threading.Lock()


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
    phase = status.get("phase")
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    with _resources_lock:
        series = _resources.setdefault((namespace, name), set())
        if phase:  # a pass that ends before any phase (a first transient error) says nothing
            for each in Phase:
                RESOURCE_PHASE.labels(namespace, name, each.value).set(1 if each == phase else 0)
                series.add(("phase", each.value))
        for ctype, cstatus in conditions.items():
            if not ctype:
                continue
            for each in CONDITION_STATUSES:
                value = 1 if each == cstatus else 0
                RESOURCE_CONDITION.labels(namespace, name, ctype, each).set(value)
                series.add(("condition", ctype, each))


def forget_resource(body: Any) -> None:
    """The resource is gone: drop its phase and condition series."""
    meta = body.get("metadata") or {}
    key = (meta.get("namespace", "default"), meta.get("name", ""))
    with _resources_lock:
        for labels in _resources.pop(key, set()):
            if labels[0] == "phase":
                RESOURCE_PHASE.remove(*key, labels[1])
            else:
                RESOURCE_CONDITION.remove(*key, *labels[1:])


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
    import kopf  # here only: `modeldeploy serve` imports this module and never needs kopf

    raise kopf.PermanentError(message)


def stop_server() -> None:
    global _server
    with _server_lock:
        if _server is not None:
            _server[0].shutdown()
            _server[0].server_close()
            _server = None


# -- `modeldeploy serve` --------------------------------------------------------------------------

SERVE_ROUTES = (b"/invocations", b"/ping", b"/execution-parameters")
ROUTE_NAMES = ("invocations", "ping", "execution-parameters", "other")
# The statuses the server answers with (serving/server.py); any other is counted as "other".
SERVE_STATUSES = (200, 204, 400, 404, 405, 406, 413, 415, 500)
SERVE_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
_ROUTE_INDEX = {path: i for i, path in enumerate(SERVE_ROUTES)}
_OTHER_ROUTE = len(SERVE_ROUTES)
_STATUS_INDEX = {status: i for i, status in enumerate(SERVE_STATUSES)}
_OTHER_STATUS = len(SERVE_STATUSES)
_BOUNDS_NS = tuple(round(b * 1e9) for b in SERVE_BUCKETS)
# One slot per worker, int64 each: requests[route][status], buckets[route][bucket] (the last
# is +Inf), duration sum in ns per route, rows.
_ROUTES, _STATUSES, _BUCKETS = len(ROUTE_NAMES), len(SERVE_STATUSES) + 1, len(SERVE_BUCKETS) + 1
_REQUESTS_AT = 0
_BUCKETS_AT = _REQUESTS_AT + _ROUTES * _STATUSES
_SUM_AT = _BUCKETS_AT + _ROUTES * _BUCKETS
_ROWS_AT = _SUM_AT + _ROUTES
_SLOT = _ROWS_AT + 1


def create_serve_board(workers: int) -> int:
    """A zeroed shared memory file with a slot for each of `workers`; its descriptor."""
    fd = os.memfd_create("modeldeploy-serve-metrics", 0)
    os.ftruncate(fd, 8 * _SLOT * workers)
    return fd


class ServeMetrics:
    """One worker's counters in the shared board, and /metrics summed over every worker."""

    def __init__(self, fd: int | None = None, slot: int = 0) -> None:
        """`fd` from `create_serve_board`; None: a board of one slot for this process alone."""
        own = fd is None
        if fd is None:
            fd = create_serve_board(1)
        try:
            self._map = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            if own:
                os.close(fd)
        self.counts = memoryview(self._map).cast("q")
        self.workers = len(self.counts) // _SLOT
        if not 0 <= slot < self.workers:
            raise ValueError(f"slot {slot} is not on a board of {self.workers} workers")
        self._base = slot * _SLOT
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    # The hot path: a dict lookup, a bisect and three increments of shared int64s.

    def request(self, path: bytes, status: int, started_ns: int) -> None:
        """One answered request on `path`, `started_ns` (time.perf_counter_ns) when it began."""
        if path == b"/metrics":
            return
        elapsed = time.perf_counter_ns() - started_ns
        route = _ROUTE_INDEX.get(path, _OTHER_ROUTE)
        counts, base = self.counts, self._base
        counts[base + route * _STATUSES + _STATUS_INDEX.get(status, _OTHER_STATUS)] += 1
        counts[base + _BUCKETS_AT + route * _BUCKETS + bisect_left(_BOUNDS_NS, elapsed)] += 1
        counts[base + _SUM_AT + route] += elapsed

    def rows(self, count: int) -> None:
        self.counts[self._base + _ROWS_AT] += count

    # /metrics

    def exposition(self) -> tuple[bytes, bytes]:
        """(content type, body) of /metrics."""
        return CONTENT_TYPE_LATEST.encode(), generate_latest(self._registry)

    def totals(self) -> list[int]:
        """Every counter summed over the workers' slots."""
        counts = self.counts
        return [sum(counts[slot * _SLOT + i] for slot in range(self.workers)) for i in range(_SLOT)]

    def collect(self) -> Iterator[Metric]:
        totals = self.totals()
        requests = CounterMetricFamily(
            "modeldeploy_serve_requests",
            "Requests answered (not /metrics), by route and status.",
            labels=["route", "status"],
        )
        errors = CounterMetricFamily(
            "modeldeploy_serve_errors",
            "Requests answered with an error status (400 and above), by status.",
            labels=["status"],
        )
        by_error: dict[str, int] = {}
        for r, route in enumerate(ROUTE_NAMES):
            for s in range(_STATUSES):
                n = totals[_REQUESTS_AT + r * _STATUSES + s]
                if not n:
                    continue
                status = str(SERVE_STATUSES[s]) if s < len(SERVE_STATUSES) else "other"
                requests.add_metric([route, status], n)
                if status == "other" or int(status) >= 400:
                    by_error[status] = by_error.get(status, 0) + n
        for status, n in sorted(by_error.items()):
            errors.add_metric([status], n)
        duration = HistogramMetricFamily(
            "modeldeploy_serve_request_duration_seconds",
            "Time from a request's first byte to its answer being written, by route.",
            labels=["route"],
        )
        for r, route in enumerate(ROUTE_NAMES):
            at = _BUCKETS_AT + r * _BUCKETS
            cumulative, buckets = 0, []
            for b, bound in enumerate((*SERVE_BUCKETS, float("inf"))):
                cumulative += totals[at + b]
                buckets.append((_le(bound), cumulative))
            if cumulative:
                duration.add_metric([route], buckets, totals[_SUM_AT + r] / 1e9)
        rows = CounterMetricFamily(
            "modeldeploy_serve_rows", "Rows predicted (one score or class per row)."
        )
        rows.add_metric([], totals[_ROWS_AT])
        yield from (requests, duration, rows, errors)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
