"""`modeldeploy cluster up|down|status|kubeconfig|purge`: human output and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from modeldeploy import processes
from modeldeploy.cluster.binaries import BinariesError, ensure_binaries
from modeldeploy.cluster.controlplane import ControlPlane, ControlPlaneError
from modeldeploy.cluster.images import import_image
from modeldeploy.cluster.node import Node
from modeldeploy.cluster.nodeconfig import NODE_NAME
from modeldeploy.cluster.pki import NODE_IP


def cluster_command(
    action: str, state_dir: Path, *, with_node: bool = False, images: Sequence[Path] = ()
) -> int:
    cp = ControlPlane(state_dir)
    if action == "up":
        try:
            binaries = ensure_binaries()
            started = ControlPlane(state_dir, binaries)
            node = Node(started) if with_node else None
            kubeconfig = node.up() if node else started.up()
            for image in images:
                names = import_image(node.ctr, image) if node else []
                print(f"imported {image}: {', '.join(names) or 'no image name'}")
        except (ControlPlaneError, BinariesError, RuntimeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        for notice in started.notices:
            print(f"warning: {notice}", file=sys.stderr)
        st = cp.status()
        api, etcd = st["apiserver"] or {}, st["etcd"] or {}
        print(f"control plane ready: {api.get('url')}")
        print(f"  kube-apiserver {api.get('version')} (pid {api.get('pid')})")
        print(f"  etcd {etcd.get('version')} (pid {etcd.get('pid')})")
        if node:
            print(f"  node {NODE_NAME} Ready on {NODE_IP} (containerd, kubelet, kube-proxy)")
        print(f"  kubectl of the same release: {binaries.kubectl}")
        print(f"  logs: {cp.state_dir}")
        print(f"export KUBECONFIG={kubeconfig}")
        return 0
    if images and not with_node:
        print("error: --image needs --with-node (images are loaded into the node)", file=sys.stderr)
        return 2
    if action in ("down", "purge"):
        problems = Node(cp).down() if Node.present(cp) else []
        # A host not yet put back keeps its record (in the state dir) for the next `down`.
        was = cp.down(purge=action == "purge" and not problems)
        print("control plane stopped" if was else "control plane was not running")
        for problem in problems:
            print(f"error: the host is not as it was: {problem}", file=sys.stderr)
        if problems:
            return 1
        if action == "purge":
            print(f"removed {cp.state_dir}")
        return 0
    if action == "status":
        st = cp.status()
        for name in ("etcd", "apiserver"):
            entry = st[name]
            if entry is None:
                print(f"{name}: not running")
                continue
            health = "running" if entry["alive"] else "stopped"
            if name == "apiserver" and entry["alive"]:
                health += ", ready" if entry["ready"] else ", not ready"
            version = f" {entry['version']}" if entry.get("version") else ""
            print(f"{name}:{version} {health} (pid {entry['pid']}, {entry['url']})")
        for name, entry in (cp.read_state().get("node") or {}).items():
            alive = "running" if processes.alive(entry["pid"], entry["argv0"]) else "stopped"
            print(f"node {name}: {alive} (pid {entry['pid']})")
        print(f"kubeconfig: {st['kubeconfig']}")
        return 0 if st["ready"] else 1
    if action == "kubeconfig":
        if not cp.kubeconfig_path.is_file():
            print("no kubeconfig: run `modeldeploy cluster up`", file=sys.stderr)
            return 1
        print(cp.kubeconfig_path)
        return 0
    print(
        f"unknown action {action!r}: expected up, down, status, kubeconfig or purge",
        file=sys.stderr,
    )
    return 2
