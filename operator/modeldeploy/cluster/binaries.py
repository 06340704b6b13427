"""Where the control-plane binaries come from: hack/build-controlplane.sh, run from the checkout.

The script builds kube-apiserver, kubectl and etcd from the Go module proxy into a cache
directory keyed by the pins and is a no-op when they are up to date, so calling it every time
is cheap.
MODELDEPLOY_CONTROLPLANE_BIN_DIR points at prebuilt binaries instead (an install without the
checkout, or binaries built elsewhere).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

BIN_DIR_ENV = "MODELDEPLOY_CONTROLPLANE_BIN_DIR"
# operator/modeldeploy/cluster/binaries.py -> the repository root.
REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-controlplane.sh"


class BinariesError(RuntimeError):
    pass


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    etcd: Path
    # The client of the same release: no version skew with the server.
    kubectl: Path

    @classmethod
    def in_dir(cls, bin_dir: Path) -> Binaries:
        found = cls(
            kube_apiserver=bin_dir / "kube-apiserver",
            etcd=bin_dir / "etcd",
            kubectl=bin_dir / "kubectl",
        )
        paths = (found.kube_apiserver, found.etcd, found.kubectl)
        missing = [p for p in paths if not os.access(p, os.X_OK)]
        if missing:
            raise BinariesError(f"not executable: {', '.join(map(str, missing))}")
        return found


def ensure_binaries(*, build: bool = True) -> Binaries:
    """The binaries for the current pins, building them first if needed (and `build` allows).

    Building from scratch takes minutes; the script's progress goes to our stderr.
    """
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        return Binaries.in_dir(Path(override))
    if not BUILD_SCRIPT.is_file():
        raise BinariesError(
            f"{BUILD_SCRIPT} not found: run from a checkout of the repository or set {BIN_DIR_ENV}"
        )
    args = [str(BUILD_SCRIPT)] if build else [str(BUILD_SCRIPT), "--print-dir"]
    # stderr passes through: a cold build prints its progress and timings there.
    proc = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise BinariesError(f"{BUILD_SCRIPT.name} failed with exit code {proc.returncode}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise BinariesError(f"{BUILD_SCRIPT.name} printed no directory")
    bin_dir = Path(lines[-1])
    try:
        return Binaries.in_dir(bin_dir)
    except BinariesError as e:
        if build:
            raise
        raise BinariesError(f"{e}; run {BUILD_SCRIPT} (or `make controlplane`) first") from None
