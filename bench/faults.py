"""A batch of ModelDeployments (sagemaker provider) driven to Ready through tests/faultproxy.py's
fault-injecting proxy in front of the AWS emulator: what the faults cost (requests, passes,
wall time) and what they must not cost (duplicates, terminal stalls). Prints the figures and
saves bench/results/faults.json. Asserts no timings; exits 1 on a duplicate, a terminal stall
or a batch that never became Ready.

    .venv/bin/python bench/faults.py [--resources 20] [--rate 0.2] [--seed 11]

It reuses the tests' emulator, proxy, driver and model builder (tests/ goes on sys.path, as
pytest puts it there for the tests).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import build_model_tar
from driver import Resource
from emulator import REGION, ROLE_ARN, Emulator
from faultproxy import (
    SMOKE_ANSWER,
    FaultProxy,
    audit,
    batch_spec,
    drive,
    operator_providers,
)

RESULTS = Path(__file__).parent / "results"
BUCKET = "modeldeploy-bench"


def aws_env(tmp: str) -> None:
    """Fake credentials and none of the host's AWS configuration (as tests/conftest.py)."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        os.environ.pop(var, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=f"{tmp}/absent",
        AWS_SHARED_CREDENTIALS_FILE=f"{tmp}/absent",
        NO_PROXY=",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1"])),
    )


def run(args: argparse.Namespace, emulator: Emulator) -> dict:
    direct = Config(retries={"mode": "standard", "max_attempts": 1})
    s3 = boto3.client("s3", endpoint_url=emulator.url, config=direct)
    sm = boto3.client("sagemaker", endpoint_url=emulator.url, config=direct)
    s3.create_bucket(Bucket=BUCKET)
    model = build_model_tar()
    emulator.set_invoke_results([SMOKE_ANSWER])
    providers = operator_providers(args.read_timeout)
    resources = []
    for i in range(args.resources):
        s3.put_object(Bucket=BUCKET, Key=f"faults/{i}/model.tar.gz", Body=model)
        spec = batch_spec(i, f"s3://{BUCKET}/faults/{i}/model.tar.gz", ROLE_ARN, REGION)
        resources.append(Resource(spec, providers=providers, name=f"model-{i}", namespace="b"))

    proxy = FaultProxy(emulator.url, rate=args.rate, seed=args.seed, delay=args.read_timeout + 0.5)
    proxy.start()
    try:
        os.environ["AWS_ENDPOINT_URL"] = proxy.url  # the provider's clients are made lazily
        start = time.monotonic()
        result = drive(resources, args.max_rounds)
        wall = time.monotonic() - start
    finally:
        proxy.stop()
    problems = audit(sm, resources)
    tally = proxy.tally.as_dict()
    return {
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "resources": args.resources,
        "fault_rate": args.rate,
        "seed": args.seed,
        "client_read_timeout_s": args.read_timeout,
        "all_ready": result.ready,
        "rounds": result.rounds,
        "passes": result.passes,
        "wall_seconds": round(wall, 1),
        "duplicates_or_leftovers": len(problems),
        "problems": problems,
        "terminal_stalls": len(result.stalls),
        "stalls": result.stalls,
        **tally,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=20)
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--read-timeout", type=float, default=1.0)
    parser.add_argument("--max-rounds", type=int, default=60)
    parser.add_argument("--out", type=Path, default=RESULTS / "faults.json")
    args = parser.parse_args()
    # Each injected fault makes a pass log its retry: the figures below count them instead.
    logging.getLogger("modeldeploy").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        aws_env(tmp)
        emulator = Emulator.start()
        try:
            figures = run(args, emulator)
        finally:
            emulator.stop()
    for key in ("resources", "fault_rate", "requests", "forwarded", "faults", "all_ready"):
        print(f"{key:>24}: {figures[key]}")
    for key in ("rounds", "passes", "wall_seconds", "duplicates_or_leftovers", "terminal_stalls"):
        print(f"{key:>24}: {figures[key]}")
    for kind, n in figures["faults_by_kind"].items():
        print(f"{'fault ' + kind:>24}: {n}")
    for line in figures["problems"] + figures["stalls"]:
        print("  !", line)
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    # Timings are figures; a duplicate, a stall or a batch that never converged is a failure
    # (`make reliability` stops on it).
    broken = figures["duplicates_or_leftovers"] or figures["terminal_stalls"]
    return 1 if broken or not figures["all_ready"] else 0


if __name__ == "__main__":
    sys.exit(main())
