"""A local Kubernetes control plane (etcd + kube-apiserver) for tests and `modeldeploy cluster`."""

from .binaries import Binaries, BinariesError, ensure_binaries
from .command import cluster_command
from .controlplane import ControlPlane, ControlPlaneError
from .crds import wait_established
from .pki import ClusterPKI

__all__ = [
    "Binaries",
    "BinariesError",
    "ClusterPKI",
    "ControlPlane",
    "ControlPlaneError",
    "cluster_command",
    "ensure_binaries",
    "wait_established",
]
