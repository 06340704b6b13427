"""What `modeldeploy serve`'s metrics cost per request, and what the alternative would have.

    .venv/bin/python bench/metrics.py                      # CPU per call, ~20 s
    .venv/bin/python bench/metrics.py --before /tmp/old    # also the HTTP loop against a
                                                           # checkout without metrics

1. CPU time per request (thread CPU time, best of 7) of the hooks a request runs: ours
   (`ServeMetrics.request` + `.rows` on the shared board) against prometheus_client's
   multiprocess mode doing the same (a labelled counter, a labelled histogram, a counter; in a
   child process started with PROMETHEUS_MULTIPROC_DIR, as its workers would be) and its
   in-process mode; next to it, one 1-row request's own work (parse, predict, encode).
2. A /metrics scrape: `ServeMetrics.exposition()` over two workers' slots.
3. With `--before DIR`: requests/s of a keep-alive HTTP loop (one client process, 1-row CSV
   bodies, plain http.client) against `python -m modeldeploy.serving` from this tree and from
   DIR (its `operator/` goes first on PYTHONPATH), alternating rounds; the median round.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from parsing import cpu_us  # bench/ is the script's own directory, so first on sys.path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

PROMETHEUS_CLIENT_COST = textwrap.dedent(
    """
    import json, os, sys, tempfile, time
    multiprocess = sys.argv[1] == "multiprocess"
    if multiprocess:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp()
    from prometheus_client import CollectorRegistry, Counter, Histogram
    registry = None if multiprocess else CollectorRegistry()
    requests = Counter("r", "r", ["route", "status"], registry=registry)
    seconds = Histogram("s", "s", ["route"], registry=registry,
                        buckets=(.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1))
    rows = Counter("rows", "rows", registry=registry)
    def hooks():
        requests.labels("invocations", "200").inc()
        seconds.labels("invocations").observe(0.0003)
        rows.inc(1)
    hooks()
    best = float("inf")
    for _ in range(7):
        start = time.thread_time()
        for _ in range(20000):
            hooks()
        best = min(best, (time.thread_time() - start) / 20000)
    print(json.dumps(best * 1e6))
    """
)


def per_call(model_tar: Path, body: bytes) -> dict[str, float]:
    from modeldeploy.serving.metrics import ServeMetrics, create_serve_board
    from modeldeploy.serving.model import load_model
    from modeldeploy.serving.server import App

    fd = create_serve_board(2)
    ours, other = ServeMetrics(fd, 0), ServeMetrics(fd, 1)
    other.request(b"/invocations", 200, time.perf_counter_ns())

    def hooks() -> None:
        ours.request(b"/invocations", 200, time.perf_counter_ns())
        ours.rows(1)

    app = App(load_model(model_tar), 6 * 1024 * 1024, metrics=ours)
    found = {
        "request's own work (App.handle, 1 row)": cpu_us(
            lambda: app.handle(b"POST", b"/invocations", b"text/csv", None, body), 3000
        ),
        "ours: ServeMetrics.request + rows": cpu_us(hooks, 20000),
    }
    for mode in ("multiprocess", "in-process"):
        out = subprocess.run(
            [sys.executable, "-c", PROMETHEUS_CLIENT_COST, mode],
            capture_output=True,
            text=True,
            check=True,
        )
        found[f"prometheus_client {mode}: counter + histogram + counter"] = json.loads(out.stdout)
    found["a /metrics scrape (2 workers)"] = cpu_us(ours.exposition, 500)
    os.close(fd)
    return found


def start(model_tar: Path, pythonpath: str | None) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.Popen(
        [sys.executable, "-m", "modeldeploy.serving", "--model", str(model_tar), "--port", "0"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if match := re.search(r"on http://127\.0\.0\.1:(\d+)", line):
            return proc, int(match.group(1))
    raise RuntimeError("the server did not start")


def loop(port: int, body: bytes, seconds: float) -> float:
    """Requests/s of one keep-alive client sending `body` for `seconds`."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "text/csv"}
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.request("POST", "/invocations", body, headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        done += 1
    conn.close()
    return done / seconds


def http_rounds(model_tar: Path, body: bytes, before: Path, rounds: int) -> dict[str, float]:
    targets = {"with metrics (this tree)": None, "before (--before)": str(before / "operator")}
    seen: dict[str, list[float]] = {name: [] for name in targets}
    for index in range(rounds):
        order = list(targets) if index % 2 == 0 else list(reversed(targets))
        for name in order:
            proc, port = start(model_tar, targets[name])
            try:
                loop(port, body, 1.0)  # warm-up
                seen[name].append(loop(port, body, 5.0))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=20)
    return {name: statistics.median(values) for name, values in seen.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a checkout without the metrics")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from modeldeploy.training.train import train

    with tempfile.TemporaryDirectory() as tmp:
        result = train(Path(tmp), progress=False)
        line = result.heldout.read_text().splitlines()[0].split(",", 1)[1]
        body = (line + "\n").encode()
        report: dict[str, dict[str, float]] = {"cpu us per call": per_call(result.model_tar, body)}
        if args.before:
            report["requests/s, keep-alive loop"] = http_rounds(
                result.model_tar, body, args.before, args.rounds
            )
    for section, values in report.items():
        print(f"| {section} | |\n|---|---:|")
        for name, value in values.items():
            print(f"| {name} | {value:,.2f} |")
        print()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
