"""`modeldeploy serve`'s Prometheus metrics, exported on its own port at `/metrics` (not
counted itself): `modeldeploy_serve_requests_total{route, status}`,
`modeldeploy_serve_request_duration_seconds{route}`, `modeldeploy_serve_rows_total` (rows
predicted) and `modeldeploy_serve_errors_total{status}` (answers of 400 and above). The
operator's metrics are in modeldeploy/metrics.py.

Its workers are separate processes: each adds to its own slot of a shared memory page (a memfd,
as the connection board in serving/accept.py), and whichever worker answers /metrics sums the
slots. That costs a few array increments per request, where prometheus_client's multiprocess
mode costs a lock and an mmap write per value (measured in bench/metrics.py), leaves no files
behind, and keeps a restarted worker's counts (the new worker takes over its slot).
"""

from __future__ import annotations

import mmap
import os
import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

SERVE_ROUTES = (b"/invocations", b"/ping", b"/execution-parameters")
ROUTE_NAMES = ("invocations", "ping", "execution-parameters", "other")
# The statuses the server answers with (serving/server.py, serving/protocol.py); any other
# is counted as "other".
SERVE_STATUSES = (200, 204, 400, 404, 405, 406, 408, 413, 414, 415, 431, 500)
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
