"""Test support for a real node (kubelet + containerd) beside the control plane.

    pytest_plugins = ["kube", "node"]

    def test_something(node_cluster):
        kubectl(node_cluster.cp.kubeconfig_path, "apply", ...)

The node needs root and containerd; `make test` installs containerd and builds the node's
binaries and the operator image first when it runs as root (`make node-if-root`,
`make image-if-root`). Elsewhere the node fixtures skip and say why.
PYTEST_DONT_REWRITE: imported by test modules before pytest registers it as a plugin.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xgboost

from modeldeploy import __version__
from modeldeploy.cluster import ControlPlane
from modeldeploy.cluster.apiserver import SERVICE_CLUSTER_IP_RANGE
from modeldeploy.cluster.images import import_image
from modeldeploy.cluster.node import Node

ROOT = Path(__file__).resolve().parents[1]
IMAGE = f"localhost/modeldeploy:{__version__}"
# The emulator's credentials: as environment variables (pods) and as boto3 arguments.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
AWS_KEYS = {k.lower(): v for k, v in CREDENTIALS.items()}
# Host paths a node may create; each must be as it was after `down`.
HOST_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/netns",
    "/run/containerd",
    "/run/modeldeploy-node",
    "/opt/containerd",
    "/etc/cni/net.d/10-modeldeploy.conflist",
)
# Counters the kernel moves on its own (files opened, pids handed out, entropy).
VOLATILE_SYSCTLS = (
    "fs.dentry-state",
    "fs.inode-nr",
    "fs.inode-state",
    "fs.file-nr",
    "fs.quota.",
    "kernel.ns_last_pid",
    "kernel.random.",
    "kernel.pty.nr",
    "net.netfilter.nf_conntrack_count",
)


def skip_unless_node_possible() -> None:
    if os.geteuid() != 0:
        pytest.skip("a real node needs root (kubelet, containerd, iptables): run as root")
    if shutil.which("containerd") is None:
        pytest.skip("a real node needs containerd: `apt-get install -y containerd`")


def operator_image_archive() -> Path:
    """The OCI archive `make image` built (the build is a no-op when current)."""
    proc = subprocess.run(
        [str(ROOT / "hack" / "build-image.sh")], capture_output=True, text=True, timeout=3600
    )
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


# -- the host, as `down` must leave it -----------------------------------------------------------


def _lines(*argv: str) -> list[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.stdout.splitlines()


def _sysctls() -> dict[str, str]:
    values = {}
    for line in _lines("sysctl", "-a"):
        key, _, value = line.partition(" = ")
        if not key.startswith(VOLATILE_SYSCTLS):
            values[key] = value
    return values


def host_snapshot() -> dict[str, object]:
    """Sysctls, iptables rules and tables, mounts, links and host paths, read with the host's
    own tools (not with what `down` uses to restore them)."""
    rules = {}
    for save in ("iptables-save", "ip6tables-save"):
        # Counters and the dump's timestamp comments change by themselves.
        rules[save] = [
            line.split(" [")[0] if line.startswith(":") else line
            for line in _lines(save)
            if not line.startswith("#")
        ]
    with open("/proc/self/mountinfo") as f:
        mounts = Counter(line.split()[4] for line in f)
    return {
        "sysctls": _sysctls(),
        "iptables": rules,
        "nft tables": sorted(_lines("nft", "list", "tables")) if shutil.which("nft") else [],
        "mounts": mounts,
        "links": sorted(os.listdir("/sys/class/net")),
        "paths": [p for p in HOST_PATHS if os.path.lexists(p)],
    }


def host_differences(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """What differs, a sysctl by its key, anything else as before/after."""
    b, a = before["sysctls"], after["sysctls"]
    assert isinstance(b, dict) and isinstance(a, dict)
    keys = sorted(set(b) | set(a))
    out = [f"sysctl {k}: {b.get(k)!r} -> {a.get(k)!r}" for k in keys if b.get(k) != a.get(k)]
    for what in before:
        if what != "sysctls" and before[what] != after[what]:
            out.append(f"{what}: before {before[what]!r}\n  after {after[what]!r}")
    return out


# -- what a model served on the node answers --------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def local_prediction(model_tar: Path, row: str) -> float:
    with tarfile.open(model_tar) as tar:
        raw = tar.extractfile("xgboost-model").read()  # type: ignore[union-attr]
    booster = xgboost.Booster()
    booster.load_model(bytearray(raw))
    features = np.array([[float(x) for x in row.split(",")]])
    return float(booster.predict(xgboost.DMatrix(features))[0])


def post_row(url: str, row: str, within: float = 20) -> float:
    request = urllib.request.Request(
        url, data=row.encode(), headers={"Content-Type": "text/csv"}, method="POST"
    )
    with open_within(request, within) as response:
        return float(response.read().decode().split()[0])


def open_within(request: urllib.request.Request | str, seconds: float):
    """The answer once there is one. A ClusterIP answers only once kube-proxy has written its
    rule: before that the host routes the address out of the machine (where this sandbox's
    network answered 404 once, and 'no route to host' another time), and for a moment after a
    rollout the rule still names a pod that is gone (the connection hangs): so wait for the
    rule, and try each connection briefly."""
    url = request if isinstance(request, str) else request.full_url
    host = urllib.parse.urlsplit(url).hostname or ""
    deadline = time.monotonic() + seconds
    if _is_cluster_ip(host):
        _wait_for_service_rule(host, deadline)
    while True:
        try:
            return _OPENER.open(request, timeout=5)
        except urllib.error.HTTPError:
            raise
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _is_cluster_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE)
    except ValueError:
        return False


def _wait_for_service_rule(ip: str, deadline: float) -> None:
    while True:
        rules = subprocess.run(
            ["iptables", "-t", "nat", "-S", "KUBE-SERVICES"], capture_output=True, text=True
        ).stdout
        if any(f"-d {ip}/32" in line and "-j KUBE-SVC-" in line for line in rules.splitlines()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"kube-proxy wrote no rule for {ip}:\n{rules}")
        time.sleep(0.2)


# -- a node for a test module --------------------------------------------------------------------


@dataclass
class NodeCluster:
    cp: ControlPlane
    node: Node
    up_seconds: float

    @property
    def kubeconfig(self) -> Path:
        return self.cp.kubeconfig_path


@pytest.fixture(scope="module")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    """A control plane in node mode with a Ready node holding the operator image; stopped and
    the host put back (asserted) when the module is done."""
    skip_unless_node_possible()
    archive = operator_image_archive()
    cp = ControlPlane(tmp_path_factory.mktemp("node-cp"), detach=False)
    node = Node(cp)
    try:
        t = time.monotonic()
        node.up()
        up = time.monotonic() - t
        import_image(node.ctr, archive)
        print(f"node Ready {up:.1f}s after up; image imported {time.monotonic() - t - up:.1f}s")
        yield NodeCluster(cp, node, up)
    finally:
        problems = node.down()
        cp.down()
        assert not problems, problems
