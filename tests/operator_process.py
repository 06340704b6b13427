"""The operator as a real process (`modeldeploy run`), and waiting on resources through kubectl.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from kube import kubectl
from prometheus_client.parser import text_string_to_metric_families

FAST = {
    # Short loops so the suite does not wait on production-sized intervals.
    "MODELDEPLOY_ACT_SECONDS": "0.5",
    "MODELDEPLOY_POLL_SECONDS": "2",
    "MODELDEPLOY_RESYNC_SECONDS": "20",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """Prometheus text as {(sample name, labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class OperatorProcess:
    def __init__(self, kubeconfig: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.kubeconfig = kubeconfig
        self.args = args  # more `modeldeploy run` arguments (--liveness ...)
        # Metrics on a free loopback port of its own (kept across restarts), unless env says.
        self.env = {"MODELDEPLOY_METRICS_PORT": str(free_port()), **env}
        self.metrics_url = f"http://127.0.0.1:{self.env['MODELDEPLOY_METRICS_PORT']}/metrics"
        self.log = Path(tempfile.mkstemp(prefix="modeldeploy-operator-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODELDEPLOY_"))}
        env.update(FAST)
        env.update(self.env)
        env["KUBECONFIG"] = str(self.kubeconfig)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "modeldeploy", "run", "--log-level", "info", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def assert_alive(self) -> None:
        assert self.proc and self.proc.poll() is None, f"operator exited:\n{self.tail()}"

    def metrics(self) -> Samples:
        """A scrape of the operator's /metrics, waiting for it to listen after a (re)start."""
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
                    return parse_metrics(response.read().decode())
            except OSError:
                self.assert_alive()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def get(kubeconfig: Path, namespace: str, name: str) -> dict:
    out = kubectl(kubeconfig, "-n", namespace, "get", "mdep", name, "-o", "json").stdout
    return json.loads(out)


def wait_for(
    what: str,
    probe: Callable[[], object],
    *,
    timeout: float = 90,
    operator: OperatorProcess | None = None,
    interval: float = 0.5,
) -> object:
    """Poll `probe` until it returns something truthy; fail with context when it never does."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        if operator:
            operator.assert_alive()
        time.sleep(interval)
    log = operator.tail() if operator else ""
    seen = getattr(probe, "last", last)
    raise AssertionError(f"timed out waiting for {what}; last seen: {seen!r}\n{log}")


def phase_is(
    kubeconfig: Path, namespace: str, name: str, phase: str, **versions: int
) -> Callable[[], object]:
    """A probe: the status once it is in `phase` and each named stage serves its version
    (`phase_is(..., "Deployed", production=2)`)."""

    def probe() -> object:
        status = get(kubeconfig, namespace, name).get("status") or {}
        keep = ("phase", "message", "observedGeneration", "registration", "stalled")
        probe.last = {k: status.get(k) for k in keep}  # type: ignore[attr-defined]
        serving = all((status.get(s) or {}).get("version") == v for s, v in versions.items())
        return status if status.get("phase") == phase and serving else False

    return probe


def wait_ready(kubeconfig: Path, namespace: str, name: str, seconds: int = 90) -> None:
    """`kubectl wait --for=condition=Ready`, as a user (or Flux, or Argo CD) would."""
    kubectl(
        kubeconfig,
        "-n",
        namespace,
        "wait",
        "--for=condition=Ready",
        f"mdep/{name}",
        f"--timeout={seconds}s",
        timeout=seconds + 10,
    )
