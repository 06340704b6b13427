"""Where the control-plane binaries come from: hack/build-controlplane.sh in a source checkout.

The script builds kube-apiserver, kubectl and etcd from the Go module proxy into a cache
directory keyed by the pins and is a no-op when they are up to date, so calling it every time
is cheap. The script and its pins (hack/controlplane/go.mod) are not in the wheel, so an
installed package needs one of:
- MODELDEPLOY_CONTROLPLANE_BIN_DIR: a directory of prebuilt kube-apiserver, etcd and kubectl;
- MODELDEPLOY_SOURCE_DIR: a checkout of the repository, whose script builds them (needs Go).
An editable install (`make install`) finds its own checkout without either.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

BIN_DIR_ENV = "MODELDEPLOY_CONTROLPLANE_BIN_DIR"
SOURCE_DIR_ENV = "MODELDEPLOY_SOURCE_DIR"
SCRIPT = Path("hack", "build-controlplane.sh")
NODE_SCRIPT = Path("hack", "build-node.sh")
NODE_BINARIES = (
    "kubelet",
    "kube-proxy",
    "kube-scheduler",
    "kube-controller-manager",
    "pause",
    "coredns",
)
_HERE = Path(__file__).resolve()


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


def _checkout_of_this_module() -> Path | None:
    """The repository root when this module is imported from a checkout (editable install):
    <root>/operator/modeldeploy/cluster/binaries.py. None from an installed wheel."""
    root = _HERE.parents[3]
    if _HERE.parents[2].name == "operator" and (root / SCRIPT).is_file():
        return root
    return None


def build_script(script_path: Path = SCRIPT) -> Path:
    """hack/build-controlplane.sh (or another build script) of $MODELDEPLOY_SOURCE_DIR, else of
    the checkout this package runs from; BinariesError naming both ways out when there is none."""
    source = os.environ.get(SOURCE_DIR_ENV)
    if source:
        script = Path(source) / script_path
        if not script.is_file():
            raise BinariesError(
                f"{SOURCE_DIR_ENV}={source} has no {script_path}: point it at a checkout of the "
                "modeldeploy repository"
            )
        return script
    root = _checkout_of_this_module()
    if root is None:
        raise BinariesError(
            "the local control plane needs kube-apiserver, etcd and kubectl, and this installed "
            f"package ({_HERE.parents[1]}) has no source tree to build them from: set "
            f"{BIN_DIR_ENV} to a directory holding the three binaries, or {SOURCE_DIR_ENV} to "
            f"a checkout of the modeldeploy repository (its {SCRIPT} builds them with Go)"
        )
    return root / script_path


def ensure_binaries(*, build: bool = True) -> Binaries:
    """The binaries for the current pins, building them first if needed (and `build` allows).

    Building from scratch takes minutes; the script's progress goes to our stderr.
    """
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        return Binaries.in_dir(Path(override))
    script = build_script()
    return Binaries.in_dir(_built(script, build))


def ensure_node_binaries() -> Path:
    """The directory of the node's binaries (NODE_BINARIES) for the current pins, built first
    when needed (hack/build-node.sh: minutes)."""
    bin_dir = _built(build_script(NODE_SCRIPT), build=True)
    missing = [b for b in NODE_BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        raise BinariesError(f"not executable in {bin_dir}: {', '.join(missing)}")
    return bin_dir


def _built(script: Path, build: bool) -> Path:
    args = [str(script)] if build else [str(script), "--print-dir"]
    # stderr passes through: a cold build prints its progress and timings there.
    proc = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise BinariesError(f"{script.name} failed with exit code {proc.returncode}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise BinariesError(f"{script.name} printed no directory")
    bin_dir = Path(lines[-1])
    if not build and not bin_dir.is_dir():
        raise BinariesError(f"{bin_dir} does not exist; run {script} first")
    return bin_dir
