"""`modeldeploy cluster up --with-node`: a real node (containerd, kubelet, kube-proxy, the
controllers) runs pods of the operator image, serves them through a Service, gives them a
token for the API server, resolves Service names (CoreDNS), and `cluster down` leaves the
host exactly as it found it.

Runs as root with containerd (`make test` installs it); skips with the reason elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kube import kubectl
from node import (
    IMAGE,
    host_differences,
    host_snapshot,
    open_within,
    operator_image_archive,
    skip_unless_node_possible,
)

from modeldeploy.cluster import node as node_module
from modeldeploy.cluster.hoststate import empty_new_tables, undo_script

pytestmark = pytest.mark.node
pytest_plugins = ["kube"]


WORKLOAD = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: {IMAGE}
        imagePullPolicy: Never
        command: [python3, -m, http.server, "8080"]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"""

# From inside the pod: the API server through the `kubernetes` Service with the pod's token.
IN_POD_API_CALL = """
import os, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
ctx = ssl.create_default_context(cafile=sa + "ca.crt")
req = urllib.request.Request(
    "https://" + os.environ["KUBERNETES_SERVICE_HOST"] + "/version",
    headers={"Authorization": "Bearer " + open(sa + "token").read()},
)
print(urllib.request.urlopen(req, context=ctx).status)
"""


def _cli(state_dir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "modeldeploy", "cluster", *args, "--state-dir", str(state_dir)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def test_a_node_runs_pods_and_down_leaves_the_host_as_it_was(tmp_path: Path) -> None:
    skip_unless_node_possible()
    archive = operator_image_archive()
    state_dir = tmp_path / "cluster"
    before = host_snapshot()
    try:
        t = time.monotonic()
        up = _cli(state_dir, "up", "--with-node", "--image", str(archive))
        assert up.returncode == 0, up.stderr
        print(f"cluster up --with-node (image import included): {time.monotonic() - t:.1f}s")
        assert "node modeldeploy-node Ready" in up.stdout
        assert f"imported {archive}: {IMAGE}" in up.stdout
        kubeconfig = state_dir / "kubeconfig"

        t = time.monotonic()
        kubectl(kubeconfig, "apply", "-f", "-", input=WORKLOAD)
        kubectl(kubeconfig, "wait", "--for=condition=Available", "deploy/web", "--timeout=120s")
        print(f"kubectl apply -> Deployment Available: {time.monotonic() - t:.1f}s")

        ip = kubectl(kubeconfig, "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}").stdout
        with open_within(f"http://{ip}/", 20) as r:  # kube-proxy's rules, from the host
            assert r.status == 200
        call = kubectl(kubeconfig, "exec", "deploy/web", "--", "python3", "-c", IN_POD_API_CALL)
        assert call.stdout.strip() == "200"
        # Cluster DNS (CoreDNS beside the kubelet): a Service by its short and its full name.
        resolve = "import socket; print(socket.gethostbyname('web'), socket.gethostbyname("
        resolve += "'kubernetes.default.svc.cluster.local'))"
        names = kubectl(kubeconfig, "exec", "deploy/web", "--", "python3", "-c", resolve).stdout
        assert names.split() == [ip, "10.0.0.1"]
        logs = kubectl(kubeconfig, "logs", "deploy/web").stdout  # the API server -> kubelet
        assert "GET / HTTP/1.1" in logs
    finally:
        down = _cli(state_dir, "down")
    assert down.returncode == 0, down.stderr
    differences = host_differences(before, host_snapshot())
    assert not differences, "\n".join(differences)
    leftover = [p for p in ("kubelet", "containerd", "kube-proxy") if _running(p, state_dir)]
    assert not leftover


def _running(name: str, state_dir: Path) -> bool:
    """A process of `name` whose command line mentions this cluster's state dir."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if name in cmd.split("\0")[0] and str(state_dir) in cmd:
            return True
    return False


def test_without_root_it_says_so_with_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module.os, "geteuid", lambda: 1000)
    with pytest.raises(node_module.NodeError, match=r"needs root: run `sudo modeldeploy"):
        node_module.preflight()


def test_without_containerd_it_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module.os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(node_module.NodeError, match=r"apt-get install -y containerd"):
        node_module.preflight()


BEFORE = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:PODMAN-X - [0:0]
-A FORWARD -j PODMAN-X
COMMIT
"""
NOW = """*filter
:INPUT ACCEPT [5:300]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
:PODMAN-X - [0:0]
-A INPUT -j KUBE-FIREWALL
-A FORWARD -j PODMAN-X
-A FORWARD -s 10.88.0.0/16 -j ACCEPT
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL -d 127.0.0.0/8 -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
"""


def test_the_iptables_undo_removes_only_the_nodes_rules_and_chains() -> None:
    script = undo_script(BEFORE, NOW)
    assert script.splitlines() == [
        "*filter",
        "-D INPUT -j KUBE-FIREWALL",
        "-D OUTPUT -j KUBE-FIREWALL",
        "-F KUBE-FIREWALL",
        "-X KUBE-FIREWALL",
        "COMMIT",
    ]
    # A rule another program added meanwhile stays, as does an older chain.
    assert "10.88.0.0" not in script and "PODMAN" not in script
    assert empty_new_tables(BEFORE, NOW) == ["nat"]
