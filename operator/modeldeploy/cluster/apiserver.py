"""kube-apiserver's command line: envtest's flag set on loopback, or a node's on its address."""

from __future__ import annotations

from pathlib import Path

from .binaries import Binaries
from .kubeconfig import LOOPBACK
from .pki import ClusterPKI

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# A constant issuer (not the URL with its port) keeps tokens valid when the port changes.
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


def apiserver_argv(
    binaries: Binaries, pki: ClusterPKI, etcd_url: str, port: int, cert_dir: Path, host: str
) -> list[str]:
    """Without a node (`host` is loopback): RBAC only and no ServiceAccount admission (no
    controller creates the default ServiceAccount). With a node (`host` is its address, which
    its pods reach through the `kubernetes` Service): the Node authorizer and NodeRestriction
    for the kubelet, ServiceAccount admission so pods get tokens, and a client certificate to
    reach the kubelet for `kubectl logs` and `exec`."""
    argv = [
        str(binaries.kube_apiserver),
        f"--etcd-servers={etcd_url}",
        f"--etcd-cafile={pki.etcd_ca.cert}",
        f"--etcd-certfile={pki.etcd_client.cert}",
        f"--etcd-keyfile={pki.etcd_client.key}",
        f"--bind-address={host}",
        f"--advertise-address={host}",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
        f"--tls-cert-file={pki.serving.cert}",
        f"--tls-private-key-file={pki.serving.key}",
        f"--client-ca-file={pki.ca.cert}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.sa_public_key}",
        f"--service-account-signing-key-file={pki.sa_private_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--allow-privileged=true",
    ]
    if host == LOOPBACK:
        return [*argv, "--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount"]
    return [
        *argv,
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--kubelet-client-certificate={pki.kubelet_client.cert}",
        f"--kubelet-client-key={pki.kubelet_client.key}",
        "--kubelet-preferred-address-types=InternalIP",
    ]
