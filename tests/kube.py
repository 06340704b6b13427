"""Test support for a real Kubernetes API: one control plane per session, and kubectl.

Use from a test module:

    from kube import kubectl

    pytest_plugins = ["kube"]  # the fixtures control_plane and kubeconfig

    def test_something(kubeconfig):
        out = kubectl(kubeconfig, "get", "namespaces", "-o", "name").stdout

(or put `pytest_plugins = ["kube"]` in tests/conftest.py once for every module.)
PYTEST_DONT_REWRITE: test modules import this before pytest registers it as a plugin, and it
has no bare asserts to rewrite (the marker silences pytest's "already imported" warning).
The binaries come from hack/build-controlplane.sh: build them before pytest (`make controlplane`),
since a cold build takes longer than a test's timeout.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldeploy.cluster import ControlPlane, ensure_binaries, wait_established


@functools.cache
def kubectl_path() -> Path:
    """kubectl of the pinned release (built with the control plane), not whatever is on PATH."""
    return ensure_binaries().kubectl


def kubectl(
    kubeconfig: Path,
    *args: str,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against `kubeconfig` only (no ~/.kube/config, no KUBECONFIG from outside)."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    proc = subprocess.run(
        [str(kubectl_path()), f"--kubeconfig={kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def running_control_plane(
    tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver in a fresh state dir, stopped (no process left) when done."""
    cp = ControlPlane(tmp_path_factory.mktemp(name), detach=False)
    try:
        cp.up()
        yield cp
    finally:
        cp.down()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The session's control plane."""
    yield from running_control_plane(tmp_path_factory, "controlplane")


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    """The admin (system:masters) kubeconfig of the session's control plane."""
    return control_plane.kubeconfig_path


CRD_FILE = Path(__file__).resolve().parents[1] / "crds" / "modeldeployment.yaml"
CRD_NAME = "modeldeployments.mlops.modeldeploy.dev"


@pytest.fixture(scope="session")
def crd(kubeconfig: Path) -> None:
    """The ModelDeployment CRD from crds/, applied once per session and Established."""
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    wait_established(kubectl_path(), kubeconfig, CRD_NAME)
