"""The configuration files of the local node: containerd, the bridge CNI network, the kubelet
and kube-proxy. Every path is under the node's own directory or socket directory, so the
node touches the host only where the kubelet and the CNI plugins insist (see hoststate)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from .images import PAUSE_IMAGE
from .pki import NODE_IP

NODE_NAME = "modeldeploy-node"
BRIDGE = "mdnode0"
POD_CIDR = "10.244.0.0/24"
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
CLUSTER_DOMAIN = "cluster.local"
COREDNS_USER = "modeldeploy:coredns"
# What CoreDNS's kubernetes plugin reads, for the user its client certificate names.
COREDNS_RBAC = f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "{COREDNS_USER}"}}
rules:
- apiGroups: [""]
  resources: [services, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "{COREDNS_USER}"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "{COREDNS_USER}"}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: "{COREDNS_USER}"}}
"""


@dataclass(frozen=True)
class NodePaths:
    """Everything of one node under `root` (the control plane's state dir + /node) and `run`."""

    root: Path
    # Unix sockets are limited to 108 bytes: containerd and the kubelet (whose root holds
    # several) live in a short directory of their own.
    run: Path

    @property
    def containerd_sock(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni"

    @property
    def kubelet_root(self) -> Path:
        return self.run / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    @property
    def corefile(self) -> Path:
        return self.root / "Corefile"

    @property
    def host_before(self) -> Path:
        return self.root / "host-before.json"


def containerd_toml(p: NodePaths) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{p.root / "containerd"}"
state = "{p.run / "state"}"

[grpc]
  address = "{p.containerd_sock}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{p.root / "opt"}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Root here lacks CAP_SYS_RESOURCE, so lowering a sandbox's oom_score_adj (-998) fails
  # ("can't get final child's PID from pipe: EOF"); this keeps it at or above ours.
  restrict_oom_score_adj = true

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{p.cni_conf_dir}"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
"""


def cni_conflist(p: NodePaths) -> str:
    network = {
        "cniVersion": "0.4.0",
        "name": "modeldeploy",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(p.root / "cni-ipam"),
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }
    return json.dumps(network, indent=2) + "\n"


def kubelet_yaml(p: NodePaths, ca: Path) -> str:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "containerRuntimeEndpoint": f"unix://{p.containerd_sock}",
        # A VM with hybrid cgroup v1 and no systemd: cgroupfs, no QoS hierarchy.
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "podLogsDir": str(p.root / "pod-logs"),
        # A shared development disk: never garbage-collect the imported images, evict only
        # when it is really full.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "serializeImagePulls": False,
        # CoreDNS runs beside the kubelet on the node's address (see corefile).
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
    }
    return yaml.safe_dump(config, sort_keys=False)


def corefile(kubeconfig: Path) -> str:
    """Service names of the cluster, and everything else forwarded to the host's resolvers;
    bound to the node's address only, where pods reach it through their gateway."""
    return f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {NODE_IP}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods disabled
    }}
    cache 5
    errors
}}
.:53 {{
    bind {NODE_IP}
    forward . /etc/resolv.conf
    cache 30
    errors
}}
"""


def kube_proxy_yaml(kubeconfig: Path) -> str:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Leaves net.ipv4.conf.all.route_localnet alone.
        "iptables": {"localhostNodePorts": False},
        # Leaves the conntrack sysctls alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }
    return yaml.safe_dump(config, sort_keys=False)
