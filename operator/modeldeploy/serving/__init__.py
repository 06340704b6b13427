"""`modeldeploy serve`: an HTTP inference server that follows the SageMaker first-party XGBoost
container contract (GET /ping, POST /invocations; text/csv and text/libsvm in; CSV, JSON or
JSON Lines out; 204/400/406/413/415 as the container answers them, and 408/414/431 for
requests that stall or are too large in their head, serving/limits.py).

Its command line is declared here once, for both `modeldeploy serve` and
`python -m modeldeploy.serving`. Imports stay lazy so that `modeldeploy` commands that do not
serve never load xgboost.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "serve a model over the SageMaker XGBoost container's HTTP contract"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add serve's options (--model, --port, --host, --workers) to `parser`."""
    parser.add_argument(
        "--model", required=True, type=Path, help="model.tar.gz, an xgboost-model file or dir"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="default: $SAGEMAKER_BIND_TO_PORT, else 8080"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")


def serve(args: argparse.Namespace) -> int:
    """Serve what `add_serve_arguments` parsed until SIGTERM/SIGINT; the exit code."""
    from modeldeploy.serving.workers import serve_main

    return serve_main(args.model, port=args.port, host=args.host, workers=args.workers)


__all__ = ["HELP", "add_serve_arguments", "serve"]
