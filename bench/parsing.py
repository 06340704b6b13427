"""Per-request costs inside one worker: CSV parsing candidates and the two prediction paths.

CPU time per call (best of 7 repeats, thread CPU time, so other tenants of the machine count
less), for a 1-row and a 1,000-row body of the held-out data (30 features):

    .venv/bin/python bench/parsing.py
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import simdjson

from modeldeploy.serving import codecs
from modeldeploy.serving.model import load_model
from modeldeploy.training.train import train

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_us(fn: Callable[[], object], calls: int) -> float:
    fn()
    best = float("inf")
    for _ in range(7):
        start = time.thread_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.thread_time() - start) / calls)
    return best * 1e6


def candidates(body: bytes, columns: int) -> dict[str, Callable[[], object]]:
    flat = body.strip().replace(b"\n", b",")
    parser = simdjson.Parser()
    found: dict[str, Callable[[], object]] = {
        "np.loadtxt": lambda: np.loadtxt(io.BytesIO(body), delimiter=",", ndmin=2),
        "np.fromstring(sep=',')": lambda: np.fromstring(flat, sep=","),
        "np.array(split).astype(float)": lambda: np.array(flat.split(b",")).astype(np.float64),
        "list(map(float, split))": lambda: np.array(list(map(float, flat.split(b","))), float),
        "orjson.loads + np.fromiter": lambda: np.fromiter(
            orjson.loads(b"[" + flat + b"]"), dtype=np.float64
        ),
        "simdjson as_buffer": lambda: np.frombuffer(
            parser.parse(b"[" + flat + b"]").as_buffer(of_type="d"), dtype=np.float64
        ),
        "codecs.parse_csv (all checks)": lambda: codecs.parse_csv(body, columns),
    }
    try:
        import pandas as pd

        found["pandas.read_csv (C engine)"] = lambda: pd.read_csv(
            io.BytesIO(body), header=None, dtype=np.float64
        ).to_numpy()
    except ImportError:
        pass
    return found


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        result = train(Path(tmp), progress=False)
        lines = [line.split(",", 1)[1] for line in result.heldout.read_text().splitlines()]
        model = load_model(result.model_tar)
    bodies = {
        1: (lines[0] + "\n").encode(),
        1000: ("\n".join(lines[i % len(lines)] for i in range(1000)) + "\n").encode(),
    }
    report: dict[str, dict[str, float]] = {}
    for rows, body in bodies.items():
        calls = 2000 if rows == 1 else 30
        X = codecs.parse_csv(body, model.num_feature)
        timings = {name: cpu_us(fn, calls) for name, fn in candidates(body, 30).items()}
        timings["Booster.inplace_predict"] = cpu_us(
            lambda X=X: model.booster.inplace_predict(X), calls
        )
        timings["Model.predict (direct C call)"] = cpu_us(lambda X=X: model.predict(X), calls)
        predictions = model.predict(X)
        timings["codecs.encode text/csv"] = cpu_us(
            lambda p=predictions: codecs.encode(p, codecs.CSV), calls
        )
        report[f"{rows} rows"] = timings
    print("| step | 1 row (us) | 1000 rows (us) |")
    print("|---|---:|---:|")
    for name in report["1 rows"]:
        print(f"| {name} | {report['1 rows'][name]:,.1f} | {report['1000 rows'][name]:,.0f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "parsing.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
