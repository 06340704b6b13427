"""A real Kubernetes node beside the local control plane: containerd (CRI, runc, cgroupfs) with
the bridge CNI plugin, the kubelet, kube-proxy (iptables), and the two controllers a node needs
to be useful (kube-controller-manager for ReplicaSets, ServiceAccounts and endpoints,
kube-scheduler for placement). Images come from no registry: `import_image` loads OCI archives
and pods use `imagePullPolicy: Never`.

The node needs root and changes the host; `HostState` is taken before the first `up` and `down`
puts it back. Its pod network is a bridge `mdnode0` holding NODE_IP, which is also where the API
server binds in node mode: a host-only address that pods reach through their gateway and that
nothing outside this machine routes to. CoreDNS runs beside the kubelet on that address and is
the pods' resolver: the local provider's endpoint URLs are Service names.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from modeldeploy import processes

from .binaries import ensure_binaries, ensure_node_binaries
from .controlplane import ControlPlane, ControlPlaneError
from .hoststate import HostState
from .images import CRI_NAMESPACE, PAUSE_IMAGE, import_image, write_single_binary_image
from .nodeconfig import (
    BRIDGE,
    CNI_BIN_DIR,
    COREDNS_RBAC,
    COREDNS_USER,
    NODE_NAME,
    POD_CIDR,
    NodePaths,
    cni_conflist,
    containerd_toml,
    corefile,
    kube_proxy_yaml,
    kubelet_yaml,
)
from .pki import NODE_IP

RUN_DIR = Path("/run/modeldeploy-node")
DRAIN_SECONDS = 60.0


class NodeError(ControlPlaneError):
    pass


def preflight() -> None:
    """One line naming what is missing and the command that fixes it."""
    if os.geteuid() != 0:
        raise NodeError("a local node needs root: run `sudo modeldeploy cluster up --with-node`")
    for tool, package in (("containerd", "containerd"), ("ctr", "containerd")):
        if shutil.which(tool) is None:
            raise NodeError(f"a local node needs {tool}: run `apt-get install -y {package}`")
    if not (CNI_BIN_DIR / "bridge").is_file():
        raise NodeError(
            "a local node needs the CNI plugins in /usr/lib/cni: run "
            "`apt-get install -y containernetworking-plugins`"
        )
    if shutil.which("iptables") is None:
        raise NodeError("a local node needs iptables: run `apt-get install -y iptables`")


class Node:
    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.paths = NodePaths(cp.state_dir / "node", RUN_DIR)

    @staticmethod
    def present(cp: ControlPlane) -> bool:
        """A node is up, or went down without putting the host back."""
        return "node" in cp.read_state() or Node(cp).paths.host_before.exists()

    @property
    def ctr(self) -> list[str]:
        return ["ctr", "--address", str(self.paths.containerd_sock)]

    @functools.cached_property
    def _kubectl(self) -> Path:
        # Asked once: the build script runs each time it is asked (node readiness polls).
        return ensure_binaries(build=False).kubectl

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self._kubectl), f"--kubeconfig={self.cp.kubeconfig_path}", *args]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise NodeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    # -- up ----------------------------------------------------------------------------------

    def up(self, timeout: float = 120.0) -> Path:
        preflight()
        bin_dir = ensure_node_binaries()
        processes.private_dir(self.paths.root)
        if HostState.load(self.paths.host_before) is None:
            # Only the first `up` records: a second one would take the node's changes as normal.
            HostState.take().save(self.paths.host_before)
        self._bridge()
        kubeconfig = self.cp.up(timeout, node_ip=NODE_IP)
        self._write_configs()
        state = self.cp.read_state()
        node = state.setdefault("node", {})
        deadline = time.monotonic() + timeout
        if not self._running(node.get("containerd")):
            node["containerd"] = self._spawn(
                ["containerd", "--config", str(self.paths.containerd_config)], "containerd"
            )
            self.cp.write_state(state)
            self._wait(lambda: self.paths.containerd_sock.exists(), "containerd", deadline)
        pause = write_single_binary_image(
            bin_dir / "pause", PAUSE_IMAGE, self.paths.root / "pause.oci.tar"
        )
        import_image(self.ctr, pause)
        self.kubectl("apply", "-f", "-", input=COREDNS_RBAC)
        for name, argv in self._argv(bin_dir).items():
            if not self._running(node.get(name)):
                node[name] = self._spawn(argv, name)
                self.cp.write_state(state)
        self._wait(self._node_ready, "node Ready", deadline)
        return kubeconfig

    def _bridge(self) -> None:
        if os.path.exists(f"/sys/class/net/{BRIDGE}"):
            return
        for argv in (
            ["ip", "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "addr", "add", f"{NODE_IP}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE],
            ["ip", "link", "set", BRIDGE, "up"],
        ):
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise NodeError(f"{' '.join(argv)}: {proc.stderr.strip()}")

    def _write_configs(self) -> None:
        p = self.paths
        processes.private_dir(p.run)
        processes.private_dir(p.cni_conf_dir)
        users = {
            "kubelet": (f"system:node:{NODE_NAME}", ["system:nodes"]),
            "kube-proxy": ("system:kube-proxy", []),
            "kube-scheduler": ("system:kube-scheduler", []),
            "kube-controller-manager": ("system:kube-controller-manager", []),
            "coredns": (COREDNS_USER, []),
        }
        self.kubeconfigs = {
            name: self.cp.user_kubeconfig(user, groups) for name, (user, groups) in users.items()
        }
        files = {
            p.containerd_config: containerd_toml(p),
            p.cni_conf_dir / "10-modeldeploy.conflist": cni_conflist(p),
            p.kubelet_config: kubelet_yaml(p, self.cp.pki.ca.cert),
            p.kube_proxy_config: kube_proxy_yaml(self.kubeconfigs["kube-proxy"]),
            p.corefile: corefile(self.kubeconfigs["coredns"]),
        }
        for path, text in files.items():
            with open(path, "w", opener=processes.private_file) as f:
                f.write(text)

    def _argv(self, bin_dir: Path) -> dict[str, list[str]]:
        pki, kc = self.cp.pki, self.kubeconfigs
        return {
            "kube-controller-manager": [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kc['kube-controller-manager']}",
                f"--service-account-private-key-file={pki.sa_private_key}",
                f"--root-ca-file={pki.ca.cert}",
                f"--cluster-signing-cert-file={pki.ca.cert}",
                f"--cluster-signing-key-file={pki.ca.key}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--secure-port=0",
            ],
            "kube-scheduler": [
                str(bin_dir / "kube-scheduler"),
                f"--kubeconfig={kc['kube-scheduler']}",
                "--leader-elect=false",
                "--secure-port=0",
            ],
            "coredns": [str(bin_dir / "coredns"), "-conf", str(self.paths.corefile)],
            "kube-proxy": [
                str(bin_dir / "kube-proxy"),
                f"--config={self.paths.kube_proxy_config}",
            ],
            "kubelet": [
                str(bin_dir / "kubelet"),
                f"--config={self.paths.kubelet_config}",
                f"--kubeconfig={kc['kubelet']}",
                f"--root-dir={self.paths.kubelet_root}",
                f"--cert-dir={self.paths.root / 'kubelet-pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
            ],
        }

    def _spawn(self, argv: list[str], name: str) -> dict[str, Any]:
        pid = self.cp.spawn(argv, self.cp.state_dir / f"{name}.log")
        return {"pid": pid, "argv0": argv[0]}

    @staticmethod
    def _running(entry: dict[str, Any] | None) -> bool:
        return bool(entry) and processes.alive(entry["pid"], entry["argv0"])

    def _node_ready(self) -> bool:
        proc = self.kubectl(
            "get",
            "node",
            NODE_NAME,
            "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            check=False,
        )
        return proc.stdout.strip() == "True"

    def _wait(self, done: Any, what: str, deadline: float) -> None:
        state = self.cp.read_state().get("node", {})
        while not done():
            for name, entry in state.items():
                if not self._running(entry):
                    log = self.cp.state_dir / f"{name}.log"
                    raise NodeError(f"{name} exited; {log}:\n{processes.log_tail(log)}")
            if time.monotonic() > deadline:
                raise NodeError(f"{what} not reached in time; logs in {self.cp.state_dir}")
            time.sleep(0.2)

    # -- down --------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop the node, its pods and the controllers, and put the host back as it was.
        What could not be put back (empty when everything was)."""
        state = self.cp.read_state()
        node: dict[str, Any] = state.get("node") or {}
        for name in ("kube-controller-manager", "kube-scheduler"):
            self._stop(node.pop(name, None))
        if self._running(node.get("kubelet")) and self._running(node.get("containerd")):
            self._drain()
        kube_proxy = (node.get("kube-proxy") or {}).get("argv0")  # the binary it ran
        for name in ("kubelet", "kube-proxy", "coredns"):
            self._stop(node.pop(name, None))
        if kube_proxy and self.paths.kube_proxy_config.is_file():
            # Removes kube-proxy's chains (the KUBE-* of kube-proxy) the way it knows best.
            cleanup = [kube_proxy, f"--config={self.paths.kube_proxy_config}", "--cleanup"]
            subprocess.run(cleanup, capture_output=True, check=False)
        self._stop_tasks()
        self._stop(node.pop("containerd", None))
        self._kill_shims()
        state.pop("node", None)
        self.cp.write_state(state)
        before = HostState.load(self.paths.host_before)
        if before is None:
            return []
        problems = before.restore(
            [self.paths.root, self.paths.run, Path("/var/lib/kubelet"), Path("/run/netns")],
            [BRIDGE],
        )
        shutil.rmtree(self.paths.run, ignore_errors=True)
        if not problems:
            self.paths.host_before.unlink()
        return problems

    def _drain(self) -> None:
        """Delete every pod so the kubelet tears each sandbox down through CNI (its veth, its
        address, its iptables rules); the controllers are stopped, so none comes back."""
        self.kubectl(
            "delete",
            "pods",
            "--all",
            "--all-namespaces",
            "--grace-period=1",
            "--wait=false",
            check=False,
        )
        deadline = time.monotonic() + DRAIN_SECONDS
        while self._tasks() and time.monotonic() < deadline:
            time.sleep(0.5)

    def _tasks(self) -> list[str]:
        """The containers containerd runs for the kubelet (sandboxes included)."""
        listing = subprocess.run(
            [*self.ctr, "-n", CRI_NAMESPACE, "tasks", "list", "-q"],
            capture_output=True,
            text=True,
            check=False,
        )
        return listing.stdout.split()

    def _stop_tasks(self) -> None:
        """Containers the drain did not reach (a kubelet already gone): killed through
        containerd, so no shim keeps a mount or a network namespace."""
        if not self.paths.containerd_sock.exists():
            return
        for task in self._tasks():
            for action in (["kill", "-s", "SIGKILL", task], ["delete", "--force", task]):
                subprocess.run(
                    [*self.ctr, "-n", CRI_NAMESPACE, "tasks", *action],
                    capture_output=True,
                    check=False,
                )

    def _kill_shims(self) -> None:
        """containerd's shims outlive it by design; ours are those started with our socket."""
        address = str(self.paths.containerd_sock)
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                cmdline = (pid_dir / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and b"containerd-shim" in cmdline[0] and address.encode() in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid_dir.name), signal.SIGKILL)

    def _stop(self, entry: dict[str, Any] | None) -> None:
        if entry and processes.alive(entry["pid"], entry["argv0"]):
            processes.stop(entry["pid"], entry["argv0"], grace=10.0)
