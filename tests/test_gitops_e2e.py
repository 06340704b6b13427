"""GitOps for real: Flux and Argo CD sync ModelDeployments from a git server, and read their
health, through git commits only (`make gitops-e2e`; not part of `make test`: the engines' cold
build takes ~21 minutes).

One control plane, the operator (local provider: real inference servers with XGBoost, smoke
tests with a held-out row; the sagemaker provider's emulator has no UpdateEndpoint, which
promotion and rollback need), a smart-HTTP git server with one fleet repository, Flux's
source-controller and kustomize-controller, and Argo CD's repo-server and application-controller
with redis. Flux applies one folder with the shipped `wait: true` Kustomization (kstatus) and
another with the shipped `healthCheckExprs` one (CEL); Argo CD applies a third with the shipped
Application and health script. Each commit changes the three alike; the scenarios run in order,
each from the state the previous one left:

1. committed with Manual promotion: the Kustomizations are not Ready, Argo CD says Suspended;
2. a commit promoting version 1: Ready at that revision, Healthy;
3. a commit the operator must refuse (a serving image too old for the model): HealthCheckFailed
   naming the object, Degraded with the operator's message; then a fixed commit deploys v2;
4. a commit rolling back: production answers with version 1's predictions again;
5. the file deleted, pruning on: the resource and its endpoints are gone.

Each engine's health sequence per scenario, the run time and the peak memory are printed and
saved in bench/results/gitops_e2e.json.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import xgboost
import yaml
from gitops_engines import Engines, TreeMemory, engines_dir, start_argocd, start_flux
from gitserver import GitServer, WorkingCopy
from kube import CRD_FILE, CRD_NAME, kubectl, kubectl_path, running_control_plane
from operator_process import OperatorProcess

from modeldeploy.artifacts.package import read_model_member
from modeldeploy.cluster import ControlPlane, wait_established
from modeldeploy.providers.local.servers import servers_of, stop_server
from modeldeploy.training.train import TrainResult, train

pytestmark = pytest.mark.gitops_e2e

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "manifests" / "examples" / "local.yaml"
RESULTS = ROOT / "bench" / "results" / "gitops_e2e.json"
# engine -> (path in the repository, namespace it applies to, ModelDeployment name). Flux runs
# twice: with kstatus (`wait: true`) and with the shipped CEL rule (`healthCheckExprs`).
TARGETS = {
    "flux": ("flux", "md-flux", "churn-flux"),
    "flux-cel": ("flux-cel", "md-flux-cel", "churn-flux-cel"),
    "argocd": ("argo", "md-argo", "churn-argo"),
}
KUSTOMIZATIONS = {
    "flux": "kustomization-wait.yaml",
    "flux-cel": "kustomization-healthcheckexprs.yaml",
}
STEP_TIMEOUT = 240
PAYLOAD = yaml.safe_load(EXAMPLE.read_text())["spec"]["staging"]["smokeTest"]["payload"]
View = dict[str, dict]  # engine -> what it shows (a Kustomization's Ready, an Application's health)


def predict(model: TrainResult, payload: str) -> list[float]:
    """What version `model` answers to `payload`, computed here with xgboost."""
    booster = xgboost.Booster()
    booster.load_model(bytearray(read_model_member(model.model_tar)))
    rows = np.array([[float(x) for x in line.split(",")] for line in payload.splitlines()])
    return [round(float(p), 6) for p in booster.predict(xgboost.DMatrix(rows))]


def invoke(url: str, payload: str) -> list[float]:
    """The endpoint's answer (CSV of scores) to a CSV payload."""
    request = urllib.request.Request(
        url, data=payload.encode(), headers={"Content-Type": "text/csv"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    return [round(float(p), 6) for p in text.replace("\n", ",").split(",") if p.strip()]


def at(view: View, sha: str) -> bool:
    """Every engine has applied commit `sha`."""
    return all(
        view[e]["revision"] == (sha if e == "argocd" else f"main@sha1:{sha}") for e in TARGETS
    )


def healthy(view: View) -> bool:
    """Argo CD Healthy; each Kustomization Ready with its health check passed at the commit."""
    return view["argocd"]["health"] == "Healthy" and all(
        view[e]["ready"] == "True" and view[e]["applied"] == view[e]["revision"]
        for e in KUSTOMIZATIONS
    )


def model_doc(name: str, model: TrainResult, framework: str = "3.2-0", **gates: int) -> dict:
    """A local-provider ModelDeployment of `model`, both gates Manual, opened by `gates`."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    spec = doc["spec"]
    doc["metadata"]["name"] = name
    spec["modelPackageGroup"]["name"] = name
    spec["model"].update(
        artifact=f"file://{model.model_tar}",
        metrics=f"file://{model.evaluation}",
        frameworkVersion=framework,
    )
    spec["approval"] = {"policy": "Manual"}
    if "approved" in gates:
        spec["approval"]["approvedVersion"] = gates["approved"]
    spec["production"]["promotion"] = "Manual"
    if "promoted" in gates:
        spec["production"]["promotedVersion"] = gates["promoted"]
    return doc


def commit_all(repo: WorkingCopy, message: str, **model: object) -> str:
    """One commit writing the same model (or, with delete=True, deleting it) for every engine.
    Plain YAML files: Flux generates their kustomization, Argo CD applies the directory."""
    files: dict[str, str | None] = {}
    for path, _, name in TARGETS.values():
        doc = None if model.get("delete") else yaml.safe_dump(model_doc(name, **model))
        files[f"{path}/model.yaml"] = doc
    return repo.commit(message, files)


@dataclass
class Observed:
    """What each engine and the operator showed, as it changed, per scenario."""

    kubeconfig: Path
    sequences: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    step: str = ""
    step_started: float = 0.0

    def get(self, *args: str) -> dict | None:
        done = kubectl(self.kubeconfig, "get", *args, "-o", "json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def kustomization(self, engine: str) -> dict:
        obj = self.get("-n", "flux-system", "kustomization", f"models-{engine}") or {}
        status = obj.get("status") or {}
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        return {
            "ready": ready.get("status"),
            "reason": ready.get("reason"),
            "message": ready.get("message", ""),
            # The commit being applied (and health-checked); `applied` once its check passed.
            "revision": status.get("lastAttemptedRevision", ""),
            "applied": status.get("lastAppliedRevision", ""),
        }

    def application(self) -> dict:
        obj = self.get("-n", "argocd", "application", "models") or {}
        status = obj.get("status") or {}
        resource = next(
            (r for r in status.get("resources", []) if r.get("kind") == "ModelDeployment"), {}
        )
        return {
            "health": (status.get("health") or {}).get("status"),
            "sync": (status.get("sync") or {}).get("status"),
            "revision": (status.get("sync") or {}).get("revision", ""),
            "resource": resource.get("health") or {},
        }

    def model(self, engine: str) -> dict | None:
        _, ns, name = TARGETS[engine]
        return self.get("-n", ns, "modeldeployment", name)

    def record(self) -> View:
        view = {e: self.kustomization(e) for e in KUSTOMIZATIONS} | {"argocd": self.application()}
        seen = {}
        for engine, shown in view.items():
            if engine == "argocd":
                resource = shown["resource"]
                seen[engine] = f"{shown['health']} ({resource.get('status')}: " + (
                    resource.get("message", "")[:160] + ")"
                )
            else:
                seen[engine] = f"Ready={shown['ready']} {shown['reason']}: {shown['message'][:160]}"
            md = self.model(engine)
            phase = ((md or {}).get("status") or {}).get("phase", "absent" if md is None else "")
            seen[f"{engine} phase"] = phase
        step = self.sequences.setdefault(self.step, {})
        since = f"{time.monotonic() - self.step_started:6.1f}s "
        for key, value in seen.items():
            history = step.setdefault(key, [])
            if not history or history[-1][8:] != value:
                history.append(since + value)
        return view

    def until(self, what: str, done: Callable[[View], bool], engines: Engines, operator) -> View:
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            view = self.record()
            if done(view):
                return view
            engines.assert_alive()
            operator.assert_alive()
            time.sleep(0.5)
        raise AssertionError(
            f"{self.step}: timed out waiting for {what}; seen "
            f"{json.dumps(self.sequences[self.step], indent=1)}\n{engines.tail()}\n"
            f"{operator.tail()}"
        )


@dataclass
class Fleet:
    repo: WorkingCopy
    engines: Engines
    operator: OperatorProcess
    observed: Observed
    models_by_version: dict[int, TrainResult]
    local_dir: Path
    memory: TreeMemory
    started: float = field(default_factory=time.monotonic)

    def step(self, name: str) -> None:
        """Starts scenario `name`: what the engines show is recorded under it from now."""
        if self.observed.step:
            print(
                json.dumps(
                    {self.observed.step: self.observed.sequences.get(self.observed.step)}, indent=1
                )
            )
        self.observed.step, self.observed.step_started = name, time.monotonic()

    def until(self, what: str, done: Callable[[View], bool]) -> View:
        return self.observed.until(what, done, self.engines, self.operator)

    def deployed(self, sha: str, version: int) -> View:
        """Waits until production serves `version` in every engine's model, the Kustomizations
        Ready and Argo CD Healthy at commit `sha`."""
        return self.until(
            f"version {version} in production, Ready and Healthy at {sha[:8]}",
            lambda v: self.phases("Deployed", production=version) and at(v, sha) and healthy(v),
        )

    def models(self) -> dict[str, dict]:
        return {engine: self.observed.model(engine) or {} for engine in TARGETS}

    def phases(self, phase: str, **versions: int) -> bool:
        for md in self.models().values():
            status = md.get("status") or {}
            if status.get("phase") != phase:
                return False
            if status.get("observedGeneration") != md["metadata"]["generation"]:
                return False
            for stage, version in versions.items():
                if (status.get(stage) or {}).get("version") != version:
                    return False
        return True


@pytest.fixture(scope="module")
def gitops_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    yield from running_control_plane(tmp_path_factory, "gitops-e2e")


@pytest.fixture(scope="module")
def fleet(gitops_control_plane: ControlPlane, tmp_path_factory) -> Iterator[Fleet]:
    build = engines_dir()
    kubeconfig = gitops_control_plane.kubeconfig_path
    work = tmp_path_factory.mktemp("gitops-e2e")
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    wait_established(kubectl_path(), kubeconfig, CRD_NAME)

    # Two versions of the breast-cancer classifier (different splits, different scores).
    trained = {v: train(work / f"v{v}", seed=seed, progress=False) for v, seed in ((1, 0), (2, 1))}

    git = GitServer(work / "git").start()
    repo = git.create("fleet.git", work / "fleet")
    # Each engine's folder outlives its last model (a README keeps it in git).
    repo.commit(
        "an empty fleet",
        {f"{path}/README.md": "ModelDeployments\n" for path, _, _ in TARGETS.values()},
    )
    local_dir = work / "local"
    operator = OperatorProcess(kubeconfig, {"MODELDEPLOY_LOCAL_DIR": str(local_dir)})
    engines = Engines()
    memory = TreeMemory().start()
    try:
        operator.start()
        start_flux(engines, build, kubeconfig, work / "flux")
        start_argocd(engines, build, kubeconfig, work / "argocd")
        for doc in sync_manifests(git.url("fleet.git")):
            kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(doc))
        yield Fleet(repo, engines, operator, Observed(kubeconfig), trained, local_dir, memory)
    finally:
        memory.stop()
        engines.stop()
        operator.stop()
        git.stop()
        for server in servers_of(local_dir):  # left by a failed scenario: by their PIDs
            stop_server(server, local_dir)


def sync_manifests(url: str) -> list[dict]:
    """The shipped Flux and Argo CD manifests, pointed at the test repository, with short
    intervals (a push webhook's stand-in) and health-check timeouts."""
    flux_dir, argo_dir = ROOT / "manifests" / "flux", ROOT / "manifests" / "argocd"
    source = yaml.safe_load((flux_dir / "gitrepository.yaml").read_text())
    source["spec"].update(url=url, interval="2s")
    docs = [source]
    for engine, file in KUSTOMIZATIONS.items():
        path, ns, _ = TARGETS[engine]
        kustomization = yaml.safe_load((flux_dir / file).read_text())
        kustomization["metadata"]["name"] = f"models-{engine}"
        kustomization["spec"].update(
            path=f"./{path}", targetNamespace=ns, interval="5s", retryInterval="5s", timeout="45s"
        )
        docs += [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, kustomization]
    application = yaml.safe_load((argo_dir / "application.yaml").read_text())
    path, ns, _ = TARGETS["argocd"]
    application["spec"]["source"].update(repoURL=url, path=path)
    application["spec"]["destination"]["namespace"] = ns
    # Argo CD prunes with foreground deletion by default, whose finalizer the garbage collector
    # of kube-controller-manager removes; this control plane runs no controller manager.
    application["spec"]["syncPolicy"]["syncOptions"].append("PrunePropagationPolicy=background")
    return [*docs, application]


def test_1_a_model_waiting_at_the_gate_is_not_ready(fleet: Fleet) -> None:
    fleet.step("1 committed, Manual promotion")
    sha = commit_all(fleet.repo, "churn v1, approved", model=fleet.models_by_version[1], approved=1)
    view = fleet.until(
        "every model at the promotion gate, Argo CD Suspended",
        lambda v: (
            fleet.phases("AwaitingPromotion", staging=1)
            and at(v, sha)
            and v["argocd"]["health"] == "Suspended"
        ),
    )
    message = fleet.models()["argocd"]["status"]["message"]
    assert view["argocd"]["resource"] == {"status": "Suspended", "message": message}
    assert "promotedVersion: 1" in message
    # Flux: never Ready while the model waits (its health check fails at `timeout`, retried).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        view = fleet.observed.record()
        assert not any(view[e]["ready"] == "True" for e in KUSTOMIZATIONS), view
        time.sleep(0.5)
    assert fleet.phases("AwaitingPromotion", staging=1)


def test_2_a_promotion_commit_deploys_and_reads_healthy(fleet: Fleet) -> None:
    fleet.step("2 promote v1")
    sha = commit_all(
        fleet.repo, "promote churn v1", model=fleet.models_by_version[1], approved=1, promoted=1
    )
    view = fleet.deployed(sha, 1)
    assert view["argocd"]["sync"] == "Synced"
    assert view["argocd"]["resource"]["status"] == "Healthy"


def test_3_a_refused_commit_fails_every_engine_with_the_operators_message(fleet: Fleet) -> None:
    fleet.step("3 refused: serving image too old for the model")
    sha = commit_all(
        fleet.repo,
        "churn v2 on xgboost 1.7",
        model=fleet.models_by_version[2],
        framework="1.7-1",
        approved=1,
        promoted=1,
    )
    view = fleet.until(
        "HealthCheckFailed and Degraded",
        lambda v: (
            at(v, sha)
            and all(v[e]["reason"] == "HealthCheckFailed" for e in KUSTOMIZATIONS)
            and v["argocd"]["health"] == "Degraded"
        ),
    )
    models = fleet.models()
    for engine, md in models.items():
        stalled = next(c for c in md["status"]["conditions"] if c["type"] == "Stalled")
        assert (stalled["status"], stalled["reason"]) == ("True", "RegistrationFailed"), engine
        assert md["status"]["production"]["version"] == 1  # still serving what it served
    message = models["argocd"]["status"]["message"]
    assert view["argocd"]["resource"] == {"status": "Degraded", "message": message}
    for engine in KUSTOMIZATIONS:
        _, ns, name = TARGETS[engine]
        assert view[engine]["ready"] == "False", view[engine]
        # Flux names the object and kstatus' verdict; the operator's message stays on it.
        stalled = f"stalled resources: [ModelDeployment/{ns}/{name} status: 'Failed']"
        assert stalled in view[engine]["message"], view[engine]

    fleet.step("3 fixed: v2 approved and promoted")
    sha = commit_all(
        fleet.repo,
        "churn v2 on xgboost 3.2",
        model=fleet.models_by_version[2],
        approved=2,
        promoted=2,
    )
    fleet.deployed(sha, 2)


def test_4_a_rollback_commit_serves_the_previous_version(fleet: Fleet) -> None:
    fleet.step("4 roll back to v1")
    before = fleet.models()
    assert all(md["status"]["production"]["previousVersion"] == 1 for md in before.values())
    sha = commit_all(
        fleet.repo,
        "roll churn back to v1",
        model=fleet.models_by_version[2],
        approved=2,
        promoted=1,
    )
    fleet.deployed(sha, 1)
    # The version production left is not offered back meanwhile (no AwaitingPromotion nag).
    seen = fleet.observed.sequences[fleet.observed.step]
    assert not [h for e in TARGETS for h in seen[f"{e} phase"] if "AwaitingPromotion" in h], seen
    expected = {v: predict(model, PAYLOAD) for v, model in fleet.models_by_version.items()}
    assert expected[1] != expected[2]  # so that the answer tells which version serves
    for engine, md in fleet.models().items():
        assert md["status"]["production"]["previousVersion"] == 2, engine
        assert invoke(md["status"]["production"]["url"], PAYLOAD) == expected[1], engine


def test_5_deleting_the_file_deletes_the_model_and_its_endpoints(fleet: Fleet) -> None:
    fleet.step("5 file deleted, pruned")
    urls = [
        st["url"]
        for md in fleet.models().values()
        for st in (md["status"]["staging"], md["status"]["production"])
    ]
    assert len(servers_of(fleet.local_dir)) == len(urls)
    sha = commit_all(fleet.repo, "retire churn", delete=True)
    fleet.until(
        "every ModelDeployment gone, the engines at the commit",
        lambda v: not any(fleet.models().values()) and at(v, sha) and healthy(v),
    )
    assert servers_of(fleet.local_dir) == []  # deletionPolicy Delete: every endpoint server
    for url in urls:
        with pytest.raises(OSError):
            invoke(url, PAYLOAD)
    results = {
        "scenarios": fleet.observed.sequences,
        "seconds from the engines' start to the last scenario": round(
            time.monotonic() - fleet.started, 1
        ),
        "peak RSS of every process started, MiB": round(fleet.memory.peak_mib),
        "peak RSS by process name, MiB": {
            name: round(mib) for name, mib in sorted(fleet.memory.peak_by_name.items())
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
