"""Inspect an untrusted model artifact in a subprocess with memory and time limits.

Whatever an artifact costs to decompress and parse, it costs a child process: its address
space is capped (RLIMIT_AS) and so is its CPU time (RLIMIT_CPU) and wall time. Over a limit is
an UnsafeArtifactError naming the limit, never an operator or server that runs out of memory.
The child runs `python -m modeldeploy.artifacts.guard REQUEST MEMORY_MB SECONDS` and prints one
JSON verdict.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from modeldeploy.artifacts import limits
from modeldeploy.artifacts.inspect import ModelInfo
from modeldeploy.artifacts.package import UnsafeArtifactError

EXIT_MEMORY = 3
# Peak resident memory (KiB) of the last inspection that finished within the limits, for
# measurements (the artifact corpus test prints it); None after one that went over.
last_peak_kb: int | None = None


class ArtifactLimitError(UnsafeArtifactError):
    """Inspecting the artifact went over the memory or time limit."""


def _memory_message(mb: int) -> str:
    return (
        f"inspecting the model needs more than {mb} MiB (the artifact memory limit, "
        f"{limits.MEMORY_ENV}); refused"
    )


def _time_message(secs: int) -> str:
    return (
        f"inspecting the model takes more than {secs} s (the artifact time limit, "
        f"{limits.SECONDS_ENV}); refused"
    )


def _info_from(data: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        xgboost_version=tuple(data["xgboost_version"]),
        format=data["format"],
        base_score_is_vector=bool(data["base_score_is_vector"]),
        num_feature=int(data["num_feature"]),
        objective=str(data["objective"]),
        base_score=tuple(data["base_score"]),
        attributes=tuple((str(k), str(v)) for k, v in data["attributes"]),
    )


def _verdict(proc: subprocess.CompletedProcess, mb: int, secs: int) -> tuple[ModelInfo, str]:
    global last_peak_kb
    last_peak_kb = None
    if proc.returncode == EXIT_MEMORY:
        raise ArtifactLimitError(_memory_message(mb))
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise ArtifactLimitError(_time_message(secs))
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        out = None
    if isinstance(out, dict):
        last_peak_kb = out.get("peak_kb")
    else:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise UnsafeArtifactError(
            f"the model inspection failed (exit status {proc.returncode}: "
            f"{tail[0][:300] if tail else 'no output'}); refused"
        )
    if out.get("ok"):
        return _info_from(out["info"]), str(out["framework"])
    if out.get("kind") == "IncompatibleArtifactError":
        from modeldeploy.artifacts.compat import IncompatibleArtifactError

        raise IncompatibleArtifactError(out["message"])
    raise UnsafeArtifactError(out["message"])


def inspect_file(
    path: Path,
    *,
    tar: bool = True,
    framework_version: str | None = None,
    image: str | None = None,
    check: bool = True,
) -> tuple[ModelInfo, str]:
    """Inspect the model in `path` (a model.tar.gz if `tar`, else a bare model file) within the
    limits, and with `check` also the version-skew check (`compat.check_info`). Returns (what
    it found, the frameworkVersion to register with, "" without `check`)."""
    request = {
        "path": str(path),
        "tar": tar,
        "framework_version": framework_version,
        "image": image,
        "check": check,
    }
    mb, secs = limits.memory_mb(), limits.seconds()
    cmd = [sys.executable, "-m", "modeldeploy.artifacts.guard", json.dumps(request), str(mb)]
    try:
        proc = subprocess.run(
            [*cmd, str(secs)], capture_output=True, timeout=secs + 2, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        global last_peak_kb
        last_peak_kb = None
        raise ArtifactLimitError(_time_message(secs)) from exc
    return _verdict(proc, mb, secs)


# --- the child ---------------------------------------------------------------------------


def _run(request: dict[str, Any]) -> dict[str, Any]:
    from modeldeploy.artifacts import compat
    from modeldeploy.artifacts.inspect import inspect_model_bytes
    from modeldeploy.artifacts.package import MAX_MODEL_BYTES, read_model_member

    path = Path(request["path"])
    if request["tar"]:
        data = read_model_member(path)
    else:
        with open(path, "rb") as f:
            data = f.read(MAX_MODEL_BYTES + 1)
        if len(data) > MAX_MODEL_BYTES:
            raise UnsafeArtifactError(f"{path} is over the {MAX_MODEL_BYTES}-byte model limit")
    info = inspect_model_bytes(data)
    framework = ""
    if request["check"]:
        framework = compat.check_info(info, request["framework_version"], request["image"])
    return {"ok": True, "info": asdict(info), "framework": framework}


def main(argv: list[str]) -> int:
    request, mb, secs = json.loads(argv[1]), int(argv[2]), int(argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))
    resource.setrlimit(resource.RLIMIT_CPU, (secs, secs + 1))
    try:
        out = _run(request)
    except MemoryError:
        os._exit(EXIT_MEMORY)
    except ValueError as exc:  # UnsafeArtifactError, IncompatibleArtifactError
        out = {"ok": False, "kind": type(exc).__name__, "message": str(exc)}
    except (OSError, EOFError, RecursionError, LookupError, TypeError) as exc:
        out = {
            "ok": False,
            "kind": "UnsafeArtifactError",
            "message": f"cannot inspect the model: {type(exc).__name__}: {exc}",
        }
    out["peak_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stdout.write(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
