"""A control plane that no operator watches, with the CRD installed: for tests that write a
ModelDeployment's status themselves (as the operator would) or leave objects behind.

The session's shared control plane (kube.py) may have test_e2e's operator running on it; it
watches every namespace, and would rewrite such a status and, for objects left behind, keep
calling the session's AWS emulator while other tests use it. A second control plane costs
about 9 s to start, once per session, and only when a test asks for it.

    pytest_plugins = ["kube", "quiet_kube"]

    def test_something(quiet_kubeconfig): ...

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kube import CRD_FILE, CRD_NAME, kubectl, kubectl_path, running_control_plane

from modeldeploy.cluster import ControlPlane, wait_established


@pytest.fixture(scope="session")
def quiet_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    yield from running_control_plane(tmp_path_factory, "quiet-controlplane")


@pytest.fixture(scope="session")
def quiet_kubeconfig(quiet_control_plane: ControlPlane) -> Path:
    """The admin kubeconfig of the quiet control plane, its ModelDeployment CRD Established."""
    path = quiet_control_plane.kubeconfig_path
    kubectl(path, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    wait_established(kubectl_path(), path, CRD_NAME)
    return path
