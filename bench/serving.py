"""Serving benchmark: `modeldeploy serve` against the in-process ceiling and MLServer.

Run from the repository root with the project's venv (it installs what it lacks: wrk from
Debian, MLServer into its own venv under .cache/bench-venv, never into .venv):

    .venv/bin/python bench/serving.py            # 3 interleaved rounds, ~10 minutes
    .venv/bin/python bench/serving.py --rounds 1 --seconds 3 --only ours-1w   # a quick look

Every HTTP target is loaded by the same wrk (one thread, the same connections) with the same
rows: 1-row and 1,000-row requests of the held-out breast-cancer data (30 features), CSV for
our server, the same numbers as a V2 JSON tensor for MLServer. Rounds interleave the targets so
that the machine's background load falls on all of them alike; the table gives the median
round and the spread. Results go to bench/results/serving.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
BENCH_VENV = ROOT / ".cache" / "bench-venv"
# MLServer's parallel workers crash on start with uvloop 0.23; 0.21 works.
MLSERVER_PACKAGES = ["mlserver==1.7.1", "uvloop==0.21.0", "xgboost-cpu==3.2.0", "scikit-learn"]
# mlserver-xgboost asks for `xgboost[scikit-learn]`, the full wheel with CUDA libraries;
# xgboost-cpu is the same module, so it goes in without its dependencies.
MLSERVER_NODEPS = ["mlserver-xgboost==1.7.1"]
BATCHES = {"1 row": 1, "1000 rows": 1000}
MODEL_NAME = "churn"


@dataclass
class Target:
    name: str
    description: str
    kind: str  # "http" or "inprocess"
    start: Callable[[Path, int], subprocess.Popen[bytes]] | None = None
    path: str = "/invocations"
    content_type: str = "text/csv"
    processes: int = 1
    body_suffix: str = "csv"
    settings: dict = field(default_factory=dict)


# --- setup -------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    print("installing wrk from Debian's packages ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk") or "wrk"


def ensure_mlserver() -> Path:
    python = BENCH_VENV / "bin" / "python"
    probe = [str(python), "-c", "import mlserver, mlserver_xgboost, sklearn, uvloop, xgboost"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"installing MLServer into {BENCH_VENV} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, *MLSERVER_PACKAGES], check=True)
    subprocess.run([*pip, "--no-deps", *MLSERVER_NODEPS], check=True)
    return python


def prepare(work: Path) -> dict:
    """Train the model, write it in each server's layout, and write the request bodies."""
    import numpy as np

    from modeldeploy.artifacts.package import read_model_member
    from modeldeploy.training.train import train

    result = train(work / "model", progress=False)
    features = np.loadtxt(result.heldout, delimiter=",")[:, 1:]
    text_rows = [line.split(",", 1)[1] for line in result.heldout.read_text().splitlines()]
    mlserver_repo = work / "mlserver-models" / MODEL_NAME
    mlserver_repo.mkdir(parents=True)
    (mlserver_repo / "model.ubj").write_bytes(read_model_member(result.model_tar))
    (mlserver_repo / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL_NAME,
                "implementation": "mlserver_xgboost.XGBoostModel",
                "parameters": {"uri": "./model.ubj", "version": "v1"},
            }
        )
    )
    bodies: dict[str, dict[str, Path]] = {}
    for label, count in BATCHES.items():
        picks = [i % len(text_rows) for i in range(count)]
        csv_path = work / f"body-{count}.csv"
        csv_path.write_text("\n".join(text_rows[i] for i in picks) + "\n")
        # The same numbers, as MLServer's V2 protocol wants them.
        rows = [[float(v) for v in text_rows[i].split(",")] for i in picks]
        v2 = {
            "inputs": [
                {
                    "name": "predict",
                    "shape": [count, features.shape[1]],
                    "datatype": "FP64",
                    "data": rows,
                }
            ]
        }
        v2_path = work / f"body-{count}.json"
        v2_path.write_text(json.dumps(v2))
        bodies[label] = {"csv": csv_path, "v2": v2_path}
    return {"tar": result.model_tar, "mlserver_repo": mlserver_repo.parent, "bodies": bodies}


# --- targets ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ours(workers: int) -> Callable[[Path, int], subprocess.Popen[bytes]]:
    def start(model: Path, port: int) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "modeldeploy.serving", "--model", str(model)]
        command += ["--port", str(port), "--workers", str(workers)]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return start


def start_mlserver(python: Path, tuned: bool) -> Callable[[Path, int], subprocess.Popen[bytes]]:
    def start(repo: Path, port: int) -> subprocess.Popen[bytes]:
        settings: dict = {
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "host": "127.0.0.1",
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER")}
        if tuned:
            settings.update({"debug": False, "parallel_workers": 2})
            env["OMP_NUM_THREADS"] = "1"
        (repo / "settings.json").write_text(json.dumps(settings))
        mlserver = python.parent / "mlserver"
        return subprocess.Popen(
            [str(mlserver), "start", str(repo)],
            cwd=repo,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    return start


def targets(mlserver_python: Path | None) -> list[Target]:
    found = [
        Target("ceiling-1p", "in-process inplace_predict, 1 process", "inprocess", processes=1),
        Target("ceiling-2p", "in-process inplace_predict, 2 processes", "inprocess", processes=2),
    ]
    if mlserver_python is not None:
        for tuned in (False, True):
            found.append(
                Target(
                    f"mlserver-{'tuned' if tuned else 'default'}",
                    "MLServer 1.7.1 + mlserver-xgboost, V2 JSON, "
                    + (
                        "OMP_NUM_THREADS=1, debug off, parallel_workers=2"
                        if tuned
                        else "default settings"
                    ),
                    "http",
                    start=start_mlserver(mlserver_python, tuned),
                    path=f"/v2/models/{MODEL_NAME}/infer",
                    content_type="application/json",
                    body_suffix="v2",
                )
            )
    for workers in (1, 2):
        found.append(
            Target(
                f"ours-{workers}w",
                f"modeldeploy serve, {workers} worker{'s' if workers > 1 else ''}, CSV",
                "http",
                start=start_ours(workers),
            )
        )
    return found


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{url}: not ready after {timeout} s")


def _signal(proc: subprocess.Popen[bytes], signum: int) -> None:
    # MLServer runs in a session of its own (its workers with it); ours forwards SIGTERM itself.
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        _signal(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def running(target: Target, setup: dict) -> Iterator[int | None]:
    if target.kind != "http" or target.start is None:
        yield None
        return
    port = free_port()
    source = setup["mlserver_repo"] if target.name.startswith("mlserver") else setup["tar"]
    proc = target.start(source, port)
    try:
        ready = f"http://127.0.0.1:{port}" + (
            f"/v2/models/{MODEL_NAME}/ready" if target.name.startswith("mlserver") else "/ping"
        )
        wait_ready(ready, proc)
        yield port
    finally:
        stop(proc)


def check_answer(target: Target, port: int, body: Path, expected_first: float) -> None:
    """One request by hand: the target must answer 200 with the right first score."""
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{target.path}",
        data=body.read_bytes(),
        headers={"Content-Type": target.content_type},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = response.read()
    if target.body_suffix == "v2":
        first = float(json.loads(payload)["outputs"][0]["data"][0])
    else:
        first = float(payload.split(b"\n", 1)[0])
    if abs(first - expected_first) > 1e-5:
        raise RuntimeError(f"{target.name}: first score {first}, expected {expected_first}")


def run_wrk(
    wrk: str, target: Target, port: int, body: Path, seconds: int, connections: int
) -> dict:
    env = {**os.environ, "BODY_FILE": str(body), "CONTENT_TYPE": target.content_type}
    command = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / "post.lua"),
        f"http://127.0.0.1:{port}{target.path}",
    ]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    raw = json.loads(line.removeprefix("RESULT "))
    return {
        "requests_per_s": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": raw["socket_errors"] + raw["http_errors"],
        "requests": raw["requests"],
    }


def run_inprocess(target: Target, setup: dict, rows: int, seconds: float) -> dict:
    command = [sys.executable, str(Path(__file__)), "--ceiling-worker", str(setup["tar"])]
    command += ["--rows", str(rows), "--seconds", str(seconds)]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        for _ in range(target.processes)
    ]
    results = [json.loads(p.communicate()[0]) for p in procs]
    return {
        "requests_per_s": sum(r["calls_per_s"] for r in results),
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "errors": 0,
        "requests": sum(r["calls"] for r in results),
    }


def ceiling_worker(tar: Path, rows: int, seconds: float) -> None:
    """One process calling Booster.inplace_predict in a loop on already-parsed rows."""
    import numpy as np
    import xgboost

    from modeldeploy.artifacts.package import read_model_member

    booster = xgboost.Booster(params={"nthread": 1})
    booster.load_model(bytearray(read_model_member(tar)))
    X = np.random.default_rng(0).normal(size=(rows, booster.num_features()))
    for _ in range(50):
        booster.inplace_predict(X)
    times = []
    start = time.perf_counter()
    end = start + seconds
    now = start
    while now < end:
        booster.inplace_predict(X)
        after = time.perf_counter()
        times.append(after - now)
        now = after
    lat = np.array(times) * 1000
    print(
        json.dumps(
            {
                "calls": len(times),
                "calls_per_s": len(times) / (now - start),
                "p50_ms": float(np.percentile(lat, 50)),
                "p99_ms": float(np.percentile(lat, 99)),
            }
        )
    )


# --- report -------------------------------------------------------------------------------------


def summarize(runs: list[dict]) -> list[dict]:
    rows = []
    keys = sorted({(r["target"], r["batch"]) for r in runs}, key=lambda k: (k[1], k[0]))
    for name, batch in keys:
        mine = [r for r in runs if r["target"] == name and r["batch"] == batch]
        rps = [r["requests_per_s"] for r in mine]
        # The median round by throughput, reported whole (its own latencies).
        median = sorted(mine, key=lambda r: r["requests_per_s"])[len(mine) // 2]
        rows.append(
            {
                "target": name,
                "description": mine[0]["description"],
                "batch": batch,
                "rows_per_request": BATCHES[batch],
                "requests_per_s": median["requests_per_s"],
                "rows_per_s": median["requests_per_s"] * BATCHES[batch],
                "p50_ms": median["p50_ms"],
                "p99_ms": median["p99_ms"],
                "min_requests_per_s": min(rps),
                "max_requests_per_s": max(rps),
                "rounds": len(mine),
                "errors": sum(r["errors"] for r in mine),
            }
        )
    return rows


def markdown(summary: list[dict], meta: dict) -> str:
    lines = [
        f"# Serving benchmark ({meta['date']})",
        "",
        f"Machine: {meta['cpus']} CPUs ({meta['cpu']}), load average at start "
        f"{meta['load_start']}, at end {meta['load_end']}. Python {meta['python']}, "
        f"xgboost {meta['xgboost']}, {meta['wrk']}.",
        f"Load: wrk -t1 -c{meta['connections']}, {meta['seconds']} s per run, "
        f"{meta['rounds']} interleaved rounds; the median round is shown, with the range of "
        "requests/s over the rounds. In-process rows call `Booster.inplace_predict` in a loop "
        "on parsed rows (no HTTP, no parsing): the ceiling.",
        "",
        "| target | rows/request | requests/s | rows/s | p50 ms | p99 ms | requests/s range | "
        "errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary:
        lines.append(
            f"| {row['target']} | {row['rows_per_request']} | {row['requests_per_s']:,.0f} | "
            f"{row['rows_per_s']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{row['min_requests_per_s']:,.0f} to {row['max_requests_per_s']:,.0f} | "
            f"{row['errors']} |"
        )
    lines += ["", "Targets:", ""]
    seen = set()
    for row in summary:
        if row["target"] not in seen:
            seen.add(row["target"])
            lines.append(f"- `{row['target']}`: {row['description']}")
    return "\n".join(lines) + "\n"


def machine_meta(args: argparse.Namespace, wrk: str) -> dict:
    import xgboost

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    version = subprocess.run([wrk, "--version"], capture_output=True, text=True)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "xgboost": xgboost.__version__,
        "wrk": (version.stdout or version.stderr).split(" [", 1)[0].strip(),
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "load_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--only", action="append", help="run only these targets (repeatable)")
    parser.add_argument("--no-mlserver", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--ceiling-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ceiling_worker:
        ceiling_worker(args.ceiling_worker, args.rows, args.seconds)
        return 0

    wrk = ensure_wrk()
    wanted = set(args.only or [])
    need_mlserver = not args.no_mlserver and (
        not wanted or any(w.startswith("mlserver") for w in wanted)
    )
    mlserver_python = ensure_mlserver() if need_mlserver else None
    meta = machine_meta(args, wrk)
    chosen = [t for t in targets(mlserver_python) if not wanted or t.name in wanted]
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="modeldeploy-bench-") as tmp:
        setup = prepare(Path(tmp))
        import numpy as np

        from modeldeploy.serving.model import load_model

        model = load_model(setup["tar"])
        first = np.loadtxt(setup["bodies"]["1 row"]["csv"], delimiter=",", ndmin=2)
        expected_first = float(model.predict(np.ascontiguousarray(first))[0])
        for round_no in range(1, args.rounds + 1):
            # Alternate the order each round, so no target always runs first or last.
            order = chosen if round_no % 2 else list(reversed(chosen))
            for target in order:
                with running(target, setup) as port:
                    for batch in BATCHES:
                        if target.kind == "inprocess":
                            result = run_inprocess(target, setup, BATCHES[batch], args.seconds)
                        else:
                            assert port is not None
                            body = setup["bodies"][batch][target.body_suffix]
                            check_answer(target, port, body, expected_first)
                            run_wrk(wrk, target, port, body, 1, args.connections)  # warm up
                            result = run_wrk(
                                wrk, target, port, body, args.seconds, args.connections
                            )
                        result.update(
                            target=target.name,
                            description=target.description,
                            batch=batch,
                            round=round_no,
                        )
                        runs.append(result)
                        print(
                            f"round {round_no} {target.name:16s} {batch:9s} "
                            f"{result['requests_per_s']:9.0f} req/s "
                            f"{result['requests_per_s'] * BATCHES[batch]:11.0f} rows/s "
                            f"p50 {result['p50_ms']:7.2f} ms p99 {result['p99_ms']:7.2f} ms "
                            f"errors {result['errors']}",
                            flush=True,
                        )
    meta["load_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    summary = summarize(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    document = json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2) + "\n"
    table = markdown(summary, meta)
    # serving.* is the latest run; the stamped copies keep earlier ones.
    stamp = time.strftime("%Y%m%dT%H%MZ", time.gmtime())
    for name in ("serving", f"serving-{stamp}"):
        (args.out / f"{name}.json").write_text(document)
        (args.out / f"{name}.md").write_text(table)
    print()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
