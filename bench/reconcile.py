"""Operator-side costs: how fast the pure planner decides, and how much memory the operator
holds. Prints a table and saves bench/results/reconcile.{json,md}. Asserts nothing.

    .venv/bin/python bench/reconcile.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from modeldeploy import naming
from modeldeploy.reconcile.finalize import finalize
from modeldeploy.reconcile.planner import plan
from modeldeploy.reconcile.stages import desired_config
from modeldeploy.reconcile.types import Context
from modeldeploy.remote import Endpoint, ModelVersion, Observed
from modeldeploy.spec import ModelDeploymentSpec, parse_spec
from modeldeploy.status import ModelDeploymentStatus, parse_status

RESULTS = Path(__file__).parent / "results"
NOW = datetime(2026, 11, 26, tzinfo=UTC)


def scenario(n: int) -> tuple:
    """A steady, deployed resource with `n` versions in its group."""
    spec = parse_spec(
        {
            "provider": "local",
            "modelPackageGroup": {"name": "bench"},
            "staging": {"smokeTest": {"payload": "1,2,3"}},
            "production": {"promotedVersion": n},
        }
    )
    versions = tuple(
        ModelVersion(v, f"local:model-package/bench/{v}", "Approved", metrics={"auc": 0.97})
        for v in range(n, 0, -1)
    )
    top = versions[0]
    ctx = Context("ns", "bench", 1, NOW)
    endpoints, status = [], {}
    for stage in ("staging", "production"):
        name = naming.endpoint_name("ns", "bench", stage)
        config = desired_config(name, top, "ml.m5.large", 1, 0)
        endpoints.append(Endpoint(name, "InService", config))
        status[stage] = {
            "endpointName": name,
            "endpointConfigName": config,
            "targetConfigName": config,
            "version": n,
            "targetVersion": n,
        }
    status["staging"]["smokeTest"] = {
        "passed": True,
        "version": n,
        "configName": status["staging"]["endpointConfigName"],
        "generation": 1,
    }
    observed = Observed("local:model-package-group/bench", versions, *endpoints)
    return spec, one_pass(spec, parse_status(status), observed, ctx), observed, ctx


def one_pass(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, observed: Observed, ctx: Context
) -> ModelDeploymentStatus:
    """A pass without I/O: plan, then write the verdict into status."""
    the_plan = plan(spec, status, observed, ctx)
    return finalize(status, the_plan.status, the_plan.verdict, ctx)[0]


def passes_per_second(n_versions: int, seconds: float = 2.0) -> float:
    spec, status, observed, ctx = scenario(n_versions)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        one_pass(spec, status, observed, ctx)
        count += 1
    return count / (time.perf_counter() - start)


def status_bytes(resources: int) -> int:
    """Memory the operator keeps per resource: its last status (kopf's memo)."""
    tracemalloc.start()
    kept = [json.loads(json.dumps(scenario(5)[1].to_dict())) for _ in range(resources)]
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return size // resources


def operator_rss_mib() -> float:
    """Peak RSS of a process that has imported everything the operator imports."""
    code = (
        "import resource, modeldeploy.handlers, modeldeploy.providers.sagemaker, "
        "modeldeploy.providers.local;"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def main() -> None:
    rows = [
        ("planner passes/s, steady resource, 5 versions", f"{passes_per_second(5):,.0f}"),
        ("planner passes/s, steady resource, 50 versions", f"{passes_per_second(50):,.0f}"),
        ("status kept per resource (bytes)", f"{status_bytes(1000):,}"),
        ("operator process peak RSS after imports (MiB)", f"{operator_rss_mib():.0f}"),
    ]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    table = "\n".join(f"| {what} | {value} |" for what, value in rows)
    md = f"# Reconcile benchmark ({stamp})\n\n| measure | value |\n|---|---:|\n{table}\n"
    print(md)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reconcile.md").write_text(md)
    (RESULTS / "reconcile.json").write_text(json.dumps(dict(rows), indent=2) + "\n")


if __name__ == "__main__":
    main()
