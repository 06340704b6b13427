"""The real GitOps engines as local processes against a test control plane: Flux's
source-controller and kustomize-controller, and Argo CD's repo-server and application-controller
with redis, built by hack/build-gitops.sh (`make gitops-e2e` builds them first: ~21 min cold).

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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kube import kubectl
from operator_process import free_port

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

    def start(self, ready: Callable[[], bool], timeout: float = 60) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.tail()}")
            time.sleep(0.2)

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
    """The engines' processes; each is listed before it starts, so `stop()` ends every one
    started, also when a later one fails to start."""

    daemons: list[Daemon] = field(default_factory=list)

    def start(self, daemon: Daemon, ready: Callable[[], bool]) -> None:
        self.daemons.append(daemon)
        daemon.start(ready)

    def assert_alive(self) -> None:
        dead = [d for d in self.daemons if not d.alive()]
        if dead:
            raise AssertionError("\n".join(d.tail() for d in dead))

    def tail(self) -> str:
        return "\n".join(d.tail(15) for d in self.daemons)

    def stop(self) -> None:
        for daemon in reversed(self.daemons):
            daemon.stop()


def start_flux(engines: Engines, build: Path, kubeconfig: Path, workdir: Path) -> None:
    """source-controller (its artifact server on a loopback port, which kustomize-controller
    downloads from) and kustomize-controller, in flux-system."""
    crds = sorted((build / "share" / "flux-crds").glob("*.yaml"))
    apply_files(kubeconfig, *crds)
    kubectl(kubeconfig, "create", "namespace", "flux-system")
    env = _env(kubeconfig, RUNTIME_NAMESPACE="flux-system", HOME=str(workdir))
    storage, source_health, kustomize_health = free_port(), free_port(), free_port()
    (workdir / "storage").mkdir(parents=True)
    source = Daemon(
        "source-controller",
        [
            str(build / "bin" / "source-controller"),
            f"--storage-path={workdir / 'storage'}",
            f"--storage-addr=127.0.0.1:{storage}",
            f"--storage-adv-addr=127.0.0.1:{storage}",
            f"--metrics-addr=127.0.0.1:{free_port()}",
            f"--health-addr=127.0.0.1:{source_health}",
            "--log-level=debug",
        ],
        env,
        workdir,
    )
    engines.start(source, lambda: listening(source_health) and listening(storage))
    kustomize = Daemon(
        "kustomize-controller",
        [
            str(build / "bin" / "kustomize-controller"),
            f"--metrics-addr=127.0.0.1:{free_port()}",
            f"--health-addr=127.0.0.1:{kustomize_health}",
            # A new commit cancels a running health check: a gate waiting for a person would
            # otherwise hold the next commit back until `timeout`.
            "--feature-gates=CancelHealthCheckOnNewRevision=true",
            "--log-level=debug",
        ],
        env,
        workdir,
    )
    engines.start(kustomize, lambda: listening(kustomize_health))


def argocd_cm(build: Path) -> dict:
    """Argo CD's base argocd-cm with the shipped health script merged in."""
    base = yaml.safe_load((build / "share" / "argocd" / "config" / "argocd-cm.yaml").read_text())
    ours = yaml.safe_load((ROOT / "manifests" / "argocd" / "argocd-cm.yaml").read_text())
    base["data"] = {**(base.get("data") or {}), **ours["data"]}
    return base


def start_argocd(
    engines: Engines, build: Path, kubeconfig: Path, workdir: Path, reconcile_seconds: int = 5
) -> None:
    """redis, the repo-server and the application-controller, in namespace argocd, with an
    AppProject `default`, as Argo CD's own Procfile runs them."""
    if not REDIS.exists():
        raise RuntimeError(f"{REDIS} is missing: `make redis` installs Debian's redis-tools")
    share = build / "share" / "argocd"
    apply_files(kubeconfig, share / "crds" / "application-crd.yaml")
    apply_files(kubeconfig, share / "crds" / "appproject-crd.yaml")
    kubectl(kubeconfig, "create", "namespace", "argocd")
    apply_files(kubeconfig, *sorted((share / "config").glob("argocd-*.yaml")), namespace="argocd")
    kubectl(
        kubeconfig, "-n", "argocd", "apply", "-f", "-",
        input=json.dumps(argocd_cm(build)),
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
    # Where an installed Argo CD mounts its config (/app/config/...): directories of its own.
    data = {key: workdir / sub for key, sub in (("ARGOCD_GNUPGHOME", "gpg/keys"),
            ("ARGOCD_TLS_DATA_PATH", "tls"), ("ARGOCD_SSH_DATA_PATH", "ssh"))}  # fmt: skip
    for directory in data.values():
        directory.mkdir(parents=True)
    env = _env(
        kubeconfig,
        PATH=path,
        HOME=str(workdir),
        TMPDIR=str(workdir),
        ARGOCD_FAKE_IN_CLUSTER="true",
        ARGOCD_GPG_ENABLED="false",  # no signed commits to verify here
        **{key: str(directory) for key, directory in data.items()},
    )
    redis_port, repo_port = free_port(), free_port()
    redis = Daemon(
        "redis",
        [str(tools / "redis-server"), "--bind", "127.0.0.1", "--port", str(redis_port),
         "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        env,
        workdir,
    )  # fmt: skip
    engines.start(redis, lambda: listening(redis_port))
    argocd = str(build / "bin" / "argocd")
    repo_server = Daemon(
        "argocd-repo-server",
        [argocd, "--address", "127.0.0.1", "--port", str(repo_port),
         "--metrics-address", "127.0.0.1", "--metrics-port", str(free_port()),
         "--redis", f"127.0.0.1:{redis_port}", "--loglevel", "debug",
         # What a branch points to is cached 3 min by default; a push webhook would refresh it.
         "--revision-cache-expiration", "1s"],
        {**env, "ARGOCD_BINARY_NAME": "argocd-repo-server"},
        workdir,
    )  # fmt: skip
    engines.start(repo_server, lambda: listening(repo_port))
    metrics = free_port()
    controller = Daemon(
        "argocd-application-controller",
        [argocd, "--namespace", "argocd", "--redis", f"127.0.0.1:{redis_port}",
         "--repo-server", f"127.0.0.1:{repo_port}",
         "--metrics-port", str(metrics), "--persist-resource-health",
         "--self-heal-timeout-seconds", "2", "--loglevel", "debug",
         # git polled every few seconds: the stand-in for a push webhook
         "--app-resync", str(reconcile_seconds), "--app-resync-jitter", "0"],
        {**env, "ARGOCD_BINARY_NAME": "argocd-application-controller",
         "HOSTNAME": "argocd-application-controller-0"},
        workdir,
    )  # fmt: skip
    engines.start(controller, lambda: listening(metrics))


class TreeMemory:
    """Samples, every `interval` seconds, the summed RSS of this process's descendants (the
    control plane, the engines, the operator and its endpoint servers): the harness's peak."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.peak_mib = 0.0
        self.peak_by_name: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TreeMemory:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            by_name: dict[str, float] = {}
            for pid in descendants(os.getpid()):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                rss = int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
                name = fields.get("Name", "?").strip()
                by_name[name] = by_name.get(name, 0.0) + rss
            self.peak_mib = max(self.peak_mib, sum(by_name.values()))
            for name, mib in by_name.items():
                self.peak_by_name[name] = max(self.peak_by_name.get(name, 0.0), mib)


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
