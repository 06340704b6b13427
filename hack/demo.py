"""`make demo` / `make down`: the whole pipeline on this machine with the embedded local provider.

    .venv/bin/python hack/demo.py up   [--state-dir .cache/demo] [--project]
    .venv/bin/python hack/demo.py down [--state-dir .cache/demo]

`up` starts a local control plane, installs the CRD, starts the operator (local provider), trains
a model, applies a ModelDeployment, shows it move through its phases, sends held-out rows to
staging, promotes it by patching the spec, and waits for production. Everything it starts keeps
running for you to look around until `down`. The suite runs `up` and `down` (tests/test_demo.py).

`down` leaves no process behind that the demo started, found by what the demo recorded: the
operator by its pid file (and its environment, so a reused pid is never killed), each endpoint
server by its row in the local state (served and pending pids), then any server still running
a model from the demo's own artifact store (one whose row was lost), and the control plane by
its state.json.

`up --project` (`make demo-project`) runs the same model through project mode: a local
counterpart of a SageMaker project made from the "MLOps template for model deployment", whose
pipeline (Source -> Build -> DeployStaging with ApproveDeployment -> DeployProd) deploys the
endpoints while the operator smoke-tests staging and approves the gate from the spec.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml
from sklearn.metrics import roc_auc_score

from modeldeploy import processes

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "demo"
NAME = "breast-cancer-local"
PROJECT_NAME = "breast-cancer"  # project mode: endpoints breast-cancer-staging / -prod
# Endpoints are on this machine (loopback, or a node's Service): never through a proxy.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
BOLD, RED, GREEN, RESET = "\033[1m", "\033[31m", "\033[32m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = RED = GREEN = RESET = ""


class StepFailed(Exception):
    pass


class Demo:
    def __init__(self, state: Path, project: bool = False) -> None:
        self.project = project
        self.name = "breast-cancer-project" if project else NAME
        self.state = state.resolve()
        self.started = time.monotonic()
        self.kubeconfig = self.state / "cluster" / "kubeconfig"
        self.operator_log = self.state / "operator.log"
        self.operator_pid = self.state / "operator.pid"
        self.local_dir = self.state / "local"
        self.model_dir = self.state / "model"
        self._kubectl: Path | None = None

    # -- plumbing -------------------------------------------------------------------------------

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:5.1f}s"

    @contextlib.contextmanager
    def step(self, title: str, log: Path | None = None) -> Iterator[None]:
        print(f"{BOLD}==> [{self.elapsed()}] {title}{RESET}", flush=True)
        try:
            yield
        except Exception as err:
            print(f"\n{RED}{BOLD}STEP FAILED: {title}{RESET}\n{RED}{err}{RESET}", flush=True)
            if log and log.exists():
                tail = log.read_text(errors="replace").splitlines()[-40:]
                print(f"--- last lines of {log} ---\n" + "\n".join(tail), flush=True)
            raise StepFailed(title) from err

    def run(self, *cmd: str | Path, input: str | None = None, env: dict | None = None) -> str:
        proc = subprocess.run(
            [str(c) for c in cmd],
            input=input,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=900,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
        return proc.stdout

    def kubectl(self, *args: str, input: str | None = None) -> str:
        if self._kubectl is None:
            from modeldeploy.cluster import ensure_binaries

            self._kubectl = ensure_binaries().kubectl
        return self.run(self._kubectl, f"--kubeconfig={self.kubeconfig}", *args, input=input)

    def resource(self) -> dict:
        return json.loads(self.kubectl("-n", NAMESPACE, "get", "mdep", self.name, "-o", "json"))

    def modeldeploy(self, *args: str) -> str:
        return self.run(sys.executable, "-m", "modeldeploy", *args)

    # -- steps ----------------------------------------------------------------------------------

    def up(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        with self.step("Starting a local control plane (etcd + kube-apiserver)"):
            out = self.modeldeploy("cluster", "up", "--state-dir", str(self.state / "cluster"))
            print("    " + out.strip().splitlines()[0])
        with self.step("Installing the ModelDeployment CRD"):
            self.kubectl("apply", "-f", str(ROOT / "crds" / "modeldeployment.yaml"))
            from modeldeploy.cluster import ensure_binaries, wait_established

            kubectl = ensure_binaries().kubectl
            wait_established(kubectl, self.kubeconfig, "modeldeployments.mlops.modeldeploy.dev")
        with self.step("Starting the operator with the local provider", self.operator_log):
            self.start_operator()
        with self.step("Training an XGBoost model on held-out-split breast-cancer data"):
            out = self.modeldeploy("train", "--output", str(self.model_dir), "--quiet")
            for line in out.strip().splitlines():
                print("    " + line)
        via = f", deployed by project {PROJECT_NAME}" if self.project else ""
        with self.step(f"Applying the ModelDeployment (manifests/examples/local.yaml{via})"):
            self.apply_example()
        with self.step(
            "Watching it move to staging (Automatic approval: auc >= 0.95)", self.operator_log
        ):
            self.watch(until=("AwaitingPromotion",), timeout=120)
        with self.step("Sending the held-out rows to the staging endpoint"):
            self.score(self.resource()["status"]["staging"]["url"])
        with self.step(
            "Approving promotion: spec.production.promotedVersion = 1", self.operator_log
        ):
            patch = json.dumps({"spec": {"production": {"promotedVersion": 1}}})
            self.kubectl("-n", NAMESPACE, "patch", "mdep", self.name, "--type=merge", "-p", patch)
            self.watch(until=("Deployed",), timeout=120)
            ready = ("--for=condition=Ready", f"mdep/{self.name}", "--timeout=60s")
            self.kubectl("-n", NAMESPACE, "wait", *ready)
        with self.step("Production answers"):
            url = self.resource()["status"]["production"]["url"]
            self.score(url, rows=3)
        print(f"\n{GREEN}{BOLD}Production reached in {self.elapsed().strip()}.{RESET}\n")
        print(self.kubectl("-n", NAMESPACE, "get", "mdep", "-o", "wide"))
        self.explain(url)

    def _operator_env_marker(self) -> bytes:
        return f"MODELDEPLOY_LOCAL_DIR={self.local_dir}".encode()

    def _is_our_operator(self, pid: int) -> bool:
        """`pid` is the operator this demo started (not a process that reused its pid)."""
        if not processes.alive(pid, arg="run"):
            return False
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return self._operator_env_marker() in environ

    def start_operator(self) -> None:
        self.stop_operator()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "MODELDEPLOY_LOCAL_DIR": str(self.local_dir),
            "MODELDEPLOY_ACT_SECONDS": "0.5",
            "MODELDEPLOY_POLL_SECONDS": "2",
            "MODELDEPLOY_RESYNC_SECONDS": "60",
        }
        with open(self.operator_log, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "modeldeploy", "run", "--default-provider", "local"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # keeps running after `make demo` returns
            )
        self.operator_pid.write_text(str(proc.pid))
        time.sleep(1.0)
        if proc.poll() is not None:
            raise RuntimeError(f"the operator exited at start with code {proc.returncode}")
        print(f"    pid {proc.pid}, log {self.operator_log}")

    def apply_example(self) -> None:
        doc = yaml.safe_load((ROOT / "manifests" / "examples" / "local.yaml").read_text())
        doc["metadata"]["namespace"] = NAMESPACE
        if self.project:
            doc["metadata"]["name"] = doc["spec"]["modelPackageGroup"]["name"] = self.name
            doc["spec"]["deployment"] = {"via": "Project", "project": {"name": PROJECT_NAME}}
        doc["spec"]["model"]["artifact"] = f"file://{self.model_dir / 'model.tar.gz'}"
        doc["spec"]["model"]["metrics"] = f"file://{self.model_dir / 'evaluation.json'}"
        with contextlib.suppress(RuntimeError):
            self.kubectl("create", "namespace", NAMESPACE)
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))

    def watch(self, until: tuple[str, ...], timeout: float) -> None:
        """A live table: one line each time a column of `kubectl get mdep` changes."""
        deadline = time.monotonic() + timeout
        last: tuple = ()
        columns = ("LATEST", "APPROVAL", "STAGING", "PROD", "PHASE", "READY")
        print(
            "    "
            + f"{'t':>6}  "
            + "".join(f"{c:<10}" for c in columns[:2])
            + f"{'':<12}"
            + "".join(f"{c:<9}" for c in columns[2:4])
            + f"{columns[4]:<19}{columns[5]:<7}MESSAGE"
        )
        while time.monotonic() < deadline:
            status = self.resource().get("status") or {}
            latest = status.get("latestVersion") or {}
            ready = next(
                (c["status"] for c in status.get("conditions", []) if c["type"] == "Ready"), ""
            )
            row = (
                latest.get("version", ""),
                latest.get("approvalStatus", ""),
                (status.get("staging") or {}).get("version", ""),
                (status.get("production") or {}).get("version", ""),
                status.get("phase", ""),
                ready,
                status.get("message", ""),
            )
            if self.project:
                row += (pipeline_line(status),)
            if row != last:
                if self.project and row[-1] != (last[-1] if last else None):
                    print(f"    {'':>6}  pipeline: {row[-1]}", flush=True)
                print(
                    f"    {self.elapsed()}  {row[0]!s:<10}{row[1]!s:<22}{row[2]!s:<9}"
                    f"{row[3]!s:<9}{row[4]!s:<19}{row[5]!s:<7}{row[6]}",
                    flush=True,
                )
                last = row
            if status.get("phase") in until:
                return
            if status.get("phase") == "Failed":
                raise RuntimeError(f"the pipeline failed: {status.get('message')}")
            time.sleep(0.3)
        raise RuntimeError(f"not {' or '.join(until)} after {timeout:.0f}s: {last}")

    def score(self, url: str, rows: int | None = None) -> None:
        data = np.loadtxt(self.model_dir / "heldout.csv", delimiter=",")
        labels, features = data[:, 0], data[:, 1:]
        if rows:
            labels, features = labels[:rows], features[:rows]
        body = "\n".join(",".join(repr(float(v)) for v in row) for row in features)
        request = urllib.request.Request(
            url, data=body.encode(), headers={"Content-Type": "text/csv"}, method="POST"
        )
        start = time.perf_counter()
        with NO_PROXY.open(request, timeout=30) as resp:
            scores = np.array([float(x) for x in resp.read().decode().split()])
        took = (time.perf_counter() - start) * 1000
        print(f"    POST {url}: {len(scores)} rows in {took:.1f} ms")
        for label, score in list(zip(labels, scores, strict=True))[:5]:
            print(f"      label {int(label)}  score {score:.4f}")
        if not rows:
            print(f"    AUC on {len(scores)} held-out rows: {roc_auc_score(labels, scores):.4f}")

    def explain(self, url: str) -> None:
        print(f"""Look around:
  export KUBECONFIG={self.kubeconfig}
  {self._kubectl} -n {NAMESPACE} get mdep -o yaml
  {self._kubectl} -n {NAMESPACE} get events
  PATH={ROOT / ".venv" / "bin"}:$PATH {self._kubectl} modeldeploy get {self.name} -n {NAMESPACE}
  curl -s -H 'Content-Type: text/csv' --data-binary @<(head -3 {self.model_dir}/heldout.csv \\
      | cut -d, -f2-) {url}
  operator log: {self.operator_log}
  model report: {self.model_dir / "report.html"} (ROC, precision-recall, confusion, calibration)
Stop everything: make down""")

    # -- down -----------------------------------------------------------------------------------

    def stop_operator(self) -> None:
        if not self.operator_pid.exists():
            return
        try:
            pid = int(self.operator_pid.read_text())
        except ValueError:
            pid = 0
        if pid and self._is_our_operator(pid):
            processes.stop(pid, arg="run", grace=10.0)
        self.operator_pid.unlink(missing_ok=True)

    def _servers_of_this_demo(self) -> list[int]:
        """Our processes serving a model out of the demo's artifact store, tracked or not."""
        store = str(self.local_dir / "artifacts").encode()
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if cmdline.parent.stat().st_uid != os.getuid():
                    continue
                args = cmdline.read_bytes().split(b"\0")
            except OSError:
                continue
            if b"modeldeploy" in b" ".join(args) and any(a.startswith(store) for a in args):
                found.append(int(cmdline.parent.name))
        return found

    def stop_endpoints(self) -> None:
        """Every endpoint server: by its row (served and pending), then untracked ones."""
        if not self.local_dir.exists():
            return
        from modeldeploy.providers.local import LocalProvider
        from modeldeploy.providers.local.history import RegistryLost
        from modeldeploy.providers.local.hosting_process import ProcessHosting

        provider = LocalProvider(self.local_dir)
        try:
            names = provider.state.endpoint_names("")
        except RegistryLost:  # no rows to go by: the servers are found by their artifacts
            names = []
        for name in names:
            row = provider.state.endpoint(name)
            if row is not None and not isinstance(provider.hosting, ProcessHosting):
                provider.hosting.delete(name)  # another hosting: it knows its own
                continue
            if row is not None:
                processes.stop(row.pending_pid, arg=row.pending_model or "", grace=5.0)
                processes.stop(row.pid, arg=row.model, grace=5.0)
            provider.state.delete_endpoint(name)
        for pid in self._servers_of_this_demo():
            print(f"    stopping endpoint server {pid}, which the local state had lost track of")
            processes.stop(pid, grace=5.0)

    def down(self) -> None:
        if self.kubeconfig.exists():
            with contextlib.suppress(Exception):
                # With the operator still running, its finalizer stops the endpoints.
                self.kubectl("-n", NAMESPACE, "delete", "mdep", "--all", "--timeout=30s")
        self.stop_operator()
        self.stop_endpoints()  # whatever the finalizer did not get to
        if (self.state / "cluster").exists():
            print(
                self.modeldeploy(
                    "cluster", "down", "--state-dir", str(self.state / "cluster")
                ).strip()
            )
        print("demo stopped")


def pipeline_line(status: dict) -> str:
    """The project's pipeline in one line: each stage's status, the gate's within its stage."""
    parts = []
    for stage in (status.get("project") or {}).get("stages") or []:
        text = f"{stage['name']} {stage.get('status') or '-'}"
        gate = next((a for a in stage.get("actions", []) if a["name"] == "ApproveDeployment"), None)
        if gate and gate.get("status"):
            text += f" (ApproveDeployment {gate['status']})"
        parts.append(text)
    return " -> ".join(parts) or "not created yet"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--state-dir", default=str(ROOT / ".cache" / "demo"))
    parser.add_argument(
        "--project", action="store_true", help="up: the endpoints are deployed by a project"
    )
    args = parser.parse_args()
    return run(Demo(Path(args.state_dir), project=args.project), args.action)


def run(demo: Demo, action: str) -> int:
    """`up` or `down`; 1 when a step failed (it said which and why)."""
    try:
        demo.up() if action == "up" else demo.down()
    except StepFailed:
        print(f"{RED}The demo stopped. `make down` cleans up what it started.{RESET}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
