"""`modeldeploy serve`: an HTTP inference server that follows the SageMaker first-party XGBoost
container contract (GET /ping, POST /invocations; text/csv and text/libsvm in; CSV, JSON or
JSON Lines out; 204/400/406/413/415 as the container answers them).

Imports stay lazy so that `modeldeploy` commands that do not serve never load xgboost.
"""

from __future__ import annotations

from pathlib import Path


def serve_main(
    model: Path, port: int | None = None, host: str = "127.0.0.1", workers: int = 1
) -> int:
    """Serve until SIGTERM/SIGINT (blocking); returns the exit code. See workers.serve_main."""
    from modeldeploy.serving.workers import serve_main as _serve_main

    return _serve_main(model, port=port, host=host, workers=workers)


__all__ = ["serve_main"]
