"""The real GitOps engines as local processes against a test control plane: Flux's
source-controller and kustomize-controller, and Argo CD's repo-server and application-controller
with redis, built by hack/build-gitops.sh (`make gitops-e2e` builds them first: ~15-20 min cold).

Every process listens on loopback ports chosen here, logs to a file of its own and is stopped by
its PID. Each engine is set up from the files of the same pinned module versions (CRDs, Argo
CD's base config) plus this project's shipped manifests (manifests/flux, manifests/argocd).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from kube import kubectl

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "hack" / "build-gitops.sh"
# Debian's redis-tools ships the server as redis-check-rdb: redis picks its mode by argv[0].
REDIS = Path("/usr/bin/redis-check-rdb")


def engines_dir() -> Path:
    """The build's directory (bin/, share/): built here when missing."""
    done = subprocess.run(
        ["bash", str(BUILD)], capture_output=True, text=True, check=False, timeout=3600
    )
    if done.returncode != 0:
        raise RuntimeError(f"hack/build-gitops.sh failed:\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip()).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Daemon:
    """One engine process: started with its own log, stopped by its PID."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log = logdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, ready: Callable[[], bool], timeout: float = 60) -> Daemon:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.tail()}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ---\n" + "\n".join(text.splitlines()[-lines:])


def _env(kubeconfig: Path, **extra: str) -> dict[str, str]:
    keep = ("PATH", "LANG", "TZ")
    return {**{k: v for k, v in os.environ.items() if k in keep}, "KUBECONFIG": str(kubeconfig),
            **extra}  # fmt: skip


def apply_files(kubeconfig: Path, *paths: Path, namespace: str | None = None) -> None:
    for path in paths:
        args = ["apply", "--server-side", "--force-conflicts", "-f", str(path)]
        kubectl(kubeconfig, *(["-n", namespace] if namespace else []), *args)


@dataclass
class Engines:
    """Flux and Argo CD, running; `stop()` ends every process."""

    flux: list[Daemon]
    argocd: list[Daemon]

    def daemons(self) -> list[Daemon]:
        return [*self.flux, *self.argocd]

    def assert_alive(self) -> None:
        dead = [d for d in self.daemons() if not d.alive()]
        if dead:
            raise AssertionError("\n".join(d.tail() for d in dead))

    def tail(self) -> str:
        return "\n".join(d.tail(15) for d in self.daemons())

    def stop(self) -> None:
        for daemon in reversed(self.daemons()):
            daemon.stop()


def start_flux(build: Path, kubeconfig: Path, workdir: Path) -> list[Daemon]:
    """source-controller (its artifact server on a loopback port, which kustomize-controller
    downloads from) and kustomize-controller, in flux-system."""
    crds = sorted((build / "share" / "flux-crds").glob("*.yaml"))
    apply_files(kubeconfig, *crds)
    kubectl(kubeconfig, "create", "namespace", "flux-system")
    env = _env(kubeconfig, RUNTIME_NAMESPACE="flux-system", HOME=str(workdir))
    storage, health = free_port(), [free_port(), free_port()]
    (workdir / "storage").mkdir(parents=True)
    daemons = []
    source = Daemon(
        "source-controller",
        [
            str(build / "bin" / "source-controller"),
            f"--storage-path={workdir / 'storage'}",
            f"--storage-addr=127.0.0.1:{storage}",
            f"--storage-adv-addr=127.0.0.1:{storage}",
            f"--metrics-addr=127.0.0.1:{free_port()}",
            f"--health-addr=127.0.0.1:{health[0]}",
            "--log-level=debug",
        ],
        env,
        workdir,
    )
    daemons.append(source.start(lambda: listening(health[0]) and listening(storage)))
    kustomize = Daemon(
        "kustomize-controller",
        [
            str(build / "bin" / "kustomize-controller"),
            f"--metrics-addr=127.0.0.1:{free_port()}",
            f"--health-addr=127.0.0.1:{health[1]}",
            # A new commit cancels a running health check: a gate waiting for a person would
            # otherwise hold the next commit back until `timeout`.
            "--feature-gates=CancelHealthCheckOnNewRevision=true",
            "--log-level=debug",
        ],
        env,
        workdir,
    )
    daemons.append(kustomize.start(lambda: listening(health[1])))
    return daemons


def argocd_cm(build: Path, reconcile_seconds: int) -> dict:
    """Argo CD's base argocd-cm with the shipped health script merged in, and git polled every
    `reconcile_seconds` (the stand-in for a push webhook)."""
    base = yaml.safe_load((build / "share" / "argocd" / "config" / "argocd-cm.yaml").read_text())
    ours = yaml.safe_load((ROOT / "manifests" / "argocd" / "argocd-cm.yaml").read_text())
    base.setdefault("data", {})
    base["data"] = {
        **(base["data"] or {}),
        **ours["data"],
        "timeout.reconciliation": f"{reconcile_seconds}s",
        "timeout.reconciliation.jitter": "0s",
    }
    return base


def start_argocd(
    build: Path, kubeconfig: Path, workdir: Path, reconcile_seconds: int = 5
) -> list[Daemon]:
    """redis, the repo-server and the application-controller, in namespace argocd, with an
    AppProject `default`, as Argo CD's own Procfile runs them."""
    share = build / "share" / "argocd"
    apply_files(kubeconfig, share / "crds" / "application-crd.yaml")
    apply_files(kubeconfig, share / "crds" / "appproject-crd.yaml")
    kubectl(kubeconfig, "create", "namespace", "argocd")
    apply_files(kubeconfig, *sorted((share / "config").glob("*.yaml")), namespace="argocd")
    kubectl(
        kubeconfig, "-n", "argocd", "apply", "-f", "-",
        input=json.dumps(argocd_cm(build, reconcile_seconds)),
    )  # fmt: skip
    project = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "default", "namespace": "argocd"},
        "spec": {
            "sourceRepos": ["*"],
            "destinations": [{"server": "*", "namespace": "*"}],
            "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
        },
    }
    kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(project))

    # Argo CD verifies commits through this script (v3.6 always calls it); a copy with its
    # execute bit, since module files are read-only without one.
    tools = workdir / "bin"
    tools.mkdir(parents=True)
    shutil.copy(share / "git-verify-wrapper.sh", tools / "git-verify-wrapper.sh")
    (tools / "git-verify-wrapper.sh").chmod(0o755)
    (tools / "redis-server").symlink_to(REDIS)
    path = f"{tools}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    env = _env(
        kubeconfig, PATH=path, HOME=str(workdir), TMPDIR=str(workdir), ARGOCD_FAKE_IN_CLUSTER="true"
    )
    redis_port, repo_port = free_port(), free_port()
    redis = Daemon(
        "redis",
        [str(tools / "redis-server"), "--bind", "127.0.0.1", "--port", str(redis_port),
         "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        env,
        workdir,
    ).start(lambda: listening(redis_port))  # fmt: skip
    argocd = str(build / "bin" / "argocd")
    repo_server = Daemon(
        "argocd-repo-server",
        [argocd, "--address", "127.0.0.1", "--port", str(repo_port),
         "--metrics-address", "127.0.0.1", "--metrics-port", str(free_port()),
         "--redis", f"127.0.0.1:{redis_port}", "--loglevel", "debug"],
        {**env, "ARGOCD_BINARY_NAME": "argocd-repo-server"},
        workdir,
    ).start(lambda: listening(repo_port))  # fmt: skip
    metrics = free_port()
    controller = Daemon(
        "argocd-application-controller",
        [argocd, "--namespace", "argocd", "--redis", f"127.0.0.1:{redis_port}",
         "--repo-server", f"127.0.0.1:{repo_port}",
         "--metrics-port", str(metrics), "--persist-resource-health",
         "--self-heal-timeout-seconds", "2", "--loglevel", "debug"],
        {**env, "ARGOCD_BINARY_NAME": "argocd-application-controller",
         "HOSTNAME": "argocd-application-controller-0"},
        workdir,
    ).start(lambda: listening(metrics))  # fmt: skip
    return [redis, repo_server, controller]
