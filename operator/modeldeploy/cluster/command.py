"""`modeldeploy cluster up|down|status|kubeconfig|purge`: human output and an exit code."""

from __future__ import annotations

import sys
from pathlib import Path

from modeldeploy.cluster.binaries import BinariesError, ensure_binaries
from modeldeploy.cluster.controlplane import ControlPlane, ControlPlaneError


def cluster_command(action: str, state_dir: Path) -> int:
    cp = ControlPlane(state_dir)
    if action == "up":
        try:
            binaries = ensure_binaries()
            started = ControlPlane(state_dir, binaries)
            kubeconfig = started.up()
        except (ControlPlaneError, BinariesError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        for notice in started.notices:
            print(f"warning: {notice}", file=sys.stderr)
        st = cp.status()
        api, etcd = st["apiserver"] or {}, st["etcd"] or {}
        print(f"control plane ready: {api.get('url')}")
        print(f"  kube-apiserver {api.get('version')} (pid {api.get('pid')})")
        print(f"  etcd {etcd.get('version')} (pid {etcd.get('pid')})")
        print(f"  kubectl of the same release: {binaries.kubectl}")
        print(f"  logs: {cp.state_dir}")
        print(f"export KUBECONFIG={kubeconfig}")
        return 0
    if action in ("down", "purge"):
        was = cp.down(purge=action == "purge")
        print("control plane stopped" if was else "control plane was not running")
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
