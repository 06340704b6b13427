"""`python -m modeldeploy.serving --model PATH [--port N] [--host H] [--workers W]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modeldeploy.serving import serve_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modeldeploy.serving",
        description="Serve an XGBoost model over the SageMaker XGBoost container contract.",
    )
    parser.add_argument("--model", required=True, type=Path, help="model.tar.gz, file or dir")
    parser.add_argument(
        "--port", type=int, default=None, help="default: $SAGEMAKER_BIND_TO_PORT, else 8080"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    args = parser.parse_args(argv)
    return serve_main(args.model, port=args.port, host=args.host, workers=args.workers)


if __name__ == "__main__":
    sys.exit(main())
