"""Deploy artifacts: the Helm chart, the kustomize base and the Dockerfile.

helm is the real CLI built from the Go module proxy by hack/build-helm.sh (built here when
missing); kustomize is the one built into the pinned kubectl. The rendered objects are checked
for least-privilege RBAC and a locked-down operator pod, then sent to a real API server
(server-side dry-run, after the CRD is really applied), where the RBAC is also asked through
`kubectl auth can-i` what it actually allows.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from kube import kubectl, kubectl_path
from kubernetes import config as k8s_config

from modeldeploy.cli import build_parser
from modeldeploy.cluster import ControlPlane
from modeldeploy.providers.local import default_root
from modeldeploy.providers.local.kube_endpoints import KubernetesEndpoints, Settings
from modeldeploy.providers.local.registry import Registry

# The session fixtures `control_plane` and `kubeconfig`.
pytest_plugins = ["kube"]

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "modeldeploy"
BASE = ROOT / "manifests" / "base"
CRD = ROOT / "crds" / "modeldeployment.yaml"
CRD_COPIES = (CHART / "crds" / "modeldeployment.yaml",)  # kustomize reads crds/ itself
DOCKERFILE = ROOT / "Dockerfile"
HELM_GO_MOD = ROOT / "hack" / "helm" / "go.mod"
NAMESPACE = "modeldeploy-system"
GROUP = "mlops.modeldeploy.dev"

# What the operator may do, as {(apiGroup, resource): verbs}. kopf (standalone, cluster-wide)
# watches and merge-patches the resources and their status, POSTs core Events and watches CRDs.
EXPECTED_GRANTS = {
    (GROUP, "modeldeployments"): {"get", "list", "watch", "patch"},
    (GROUP, "modeldeployments/status"): {"get", "patch"},
    ("", "events"): {"create"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}
# Namespaced mode only: kopf lists/watches namespaces to resolve the watched patterns.
NAMESPACE_GRANTS = {("", "namespaces"): {"list", "watch"}}
# Provider local with kubernetes hosting only, as a Role in the endpoints' namespace: a
# Deployment and a Service per endpoint (PUT to change a pod template), pods listed to explain
# why an endpoint is not ready.
ENDPOINT_GRANTS = {
    ("apps", "deployments"): {"get", "list", "create", "update", "delete"},
    ("", "services"): {"get", "create", "delete"},
    ("", "pods"): {"list"},
}
SENSITIVE = {"secrets", "configmaps", "pods/exec", "serviceaccounts/token", "tokenreviews"}

# IRSA, an emulator endpoint, namespaced mode and the other provider: every optional branch.
FULL_VALUES: dict[str, Any] = {
    "provider": "local",
    "region": "eu-west-1",
    "logLevel": "debug",
    "watchNamespaces": ["team-a", "team-b"],
    "image": {"repository": "registry.example/ml/modeldeploy", "tag": "0.1.0-rc1"},
    "serviceAccount": {
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/md-op"}
    },
    "extraEnv": [
        {"name": "AWS_ENDPOINT_URL", "value": "http://moto.aws-emulator:5000"},
        {"name": "HTTPS_PROXY", "valueFrom": {"configMapKeyRef": {"name": "px", "key": "url"}}},
    ],
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "ml", "operator": "Exists", "effect": "NoSchedule"}],
}


# Provider local keeping its state on the chart's own claim, of a chosen size and class.
PERSISTENT_VALUES: dict[str, Any] = {
    "provider": "local",
    "local": {"persistence": {"enabled": True, "size": "5Gi", "storageClassName": "fast-ssd"}},
}
# Where the operator's state lives when nothing persists it: the image's HOME (/tmp), an emptyDir.
EPHEMERAL_LOCAL_DIR = "/tmp/.local/share/modeldeploy"
PERSISTENT_LOCAL_DIR = "/var/lib/modeldeploy"


def run(
    args: Iterable[str | Path], *, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


# --- helm and kustomize -----------------------------------------------------------------------


@dataclass(frozen=True)
class Helm:
    """The pinned helm binary, run with its own empty cache/config/data homes."""

    path: Path
    env: dict[str, str]

    def __call__(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return run([self.path, *args], env=self.env)


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    # Builds helm when missing: minutes when cold, under the test timeout.
    built = run([ROOT / "hack" / "build-helm.sh"], timeout=590)
    path = Path(ok(built).strip().splitlines()[-1])
    assert os.access(path, os.X_OK), path
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    return Helm(path, env)


def render_chart(helm: Helm, *args: str, release: str = "md", ns: str = NAMESPACE) -> str:
    return ok(helm("template", release, CHART, "--namespace", ns, *args))


def values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.fixture(scope="module")
def chart_default(helm: Helm) -> list[dict[str, Any]]:
    return documents(render_chart(helm))


@pytest.fixture(scope="module")
def chart_full(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    values = values_file(tmp_path_factory.mktemp("values"), FULL_VALUES)
    return documents(render_chart(helm, "-f", values))


@pytest.fixture(scope="module")
def chart_persistent(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    values = values_file(tmp_path_factory.mktemp("values"), PERSISTENT_VALUES)
    return documents(render_chart(helm, "-f", values))


@pytest.fixture(scope="module")
def kustomized() -> list[dict[str, Any]]:
    return documents(ok(run([kubectl_path(), "kustomize", BASE])))


def test_crd_copies_are_byte_identical_to_the_source() -> None:
    for copy in CRD_COPIES:
        assert copy.read_bytes() == CRD.read_bytes(), f"{copy} is stale: run hack/sync-crds.sh"


def test_helm_is_the_pinned_release(helm: Helm) -> None:
    pin = re.search(r"^\s*helm\.sh/helm/v3 (v\S+)", HELM_GO_MOD.read_text(), re.MULTILINE)
    assert pin, f"no helm pin in {HELM_GO_MOD}"
    assert ok(helm("version", "--template", "{{.Version}}")) == pin[1]


@pytest.mark.parametrize(
    "values", [{}, FULL_VALUES, PERSISTENT_VALUES], ids=["defaults", "full", "persistent"]
)
def test_helm_lint_passes_strict(helm: Helm, values: dict[str, Any], tmp_path: Path) -> None:
    out = ok(helm("lint", "--strict", CHART, "-f", values_file(tmp_path, values)))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("provider=aws", "provider"),
        ("logLevel=verbose", "logLevel"),
        ("pollSeconds=0", "pollSeconds"),
        ("serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=md-op", "role-arn"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("provder=local", "provder"),
        ("local.hosting=pods", "hosting"),
        ("local.endpointNamespace=ML_Endpoints", "endpointNamespace"),
        ("local.persistence.enabled=yes", "enabled"),
        ("local.persistence.size=lots", "size"),
        ("local.persistence.size=5", "size"),  # a number would be rendered as a float
        ("local.persistence.storageClass=fast", "storageClass"),
        ("local.persistence.existingClaim=My_Claim", "existingClaim"),
    ],
)
def test_values_schema_refuses_bad_values(helm: Helm, setting: str, field: str) -> None:
    proc = helm("template", "md", CHART, "--set", setting)
    assert proc.returncode != 0, f"{setting} was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert field in proc.stderr


def test_chart_defaults_render_the_operator(chart_default: list[dict[str, Any]]) -> None:
    assert sorted(o["kind"] for o in chart_default) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "ServiceAccount",
    ]
    assert all(o["metadata"].get("namespace", NAMESPACE) == NAMESPACE for o in chart_default)
    container = operator_container(one(chart_default, "Deployment"))
    assert container["image"] == "modeldeploy:0.1.0"
    assert env_of(container)["MODELDEPLOY_DEFAULT_PROVIDER"] == "sagemaker"
    assert env_of(container)["AWS_REGION"] == "us-east-1"
    # Only the state directory of the local provider, which a resource may still pick.
    assert [
        e for e in env_of(container) if e.startswith(("MODELDEPLOY_LOCAL", "MODELDEPLOY_END"))
    ] == ["MODELDEPLOY_LOCAL_DIR"]
    assert not any(a.startswith("--namespace") for a in container["args"])
    assert "annotations" not in one(chart_default, "ServiceAccount")["metadata"]
    assert rbac_grants(one(chart_default, "ClusterRole")) == EXPECTED_GRANTS


def test_chart_renders_irsa_extra_env_and_namespaced_mode(
    chart_full: list[dict[str, Any]],
) -> None:
    sa = one(chart_full, "ServiceAccount")
    assert sa["metadata"]["annotations"] == FULL_VALUES["serviceAccount"]["annotations"]
    container = operator_container(one(chart_full, "Deployment"))
    assert container["image"] == "registry.example/ml/modeldeploy:0.1.0-rc1"
    env = env_of(container)
    assert env["MODELDEPLOY_DEFAULT_PROVIDER"] == "local"
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["AWS_ENDPOINT_URL"] == "http://moto.aws-emulator:5000"
    assert next(e for e in container["env"] if e["name"] == "HTTPS_PROXY")["valueFrom"]
    args = build_parser().parse_args(["run", *container["args"]])
    assert args.namespace == ["team-a", "team-b"]
    assert args.log_level == "debug"
    assert rbac_grants(one(chart_full, "ClusterRole")) == EXPECTED_GRANTS | NAMESPACE_GRANTS
    # provider local hosts its endpoints in the release namespace by default, with a Role there.
    assert env["MODELDEPLOY_LOCAL_HOSTING"] == "kubernetes"
    assert env["MODELDEPLOY_ENDPOINT_NAMESPACE"] == NAMESPACE
    assert env["MODELDEPLOY_SERVE_IMAGE"] == container["image"]
    role = one(chart_full, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert rbac_grants(role) == ENDPOINT_GRANTS
    pod = one(chart_full, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == FULL_VALUES["nodeSelector"]
    assert pod["tolerations"] == FULL_VALUES["tolerations"]


def test_kustomize_base_builds_with_the_crd(kustomized: list[dict[str, Any]]) -> None:
    assert sorted(o["kind"] for o in kustomized) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Namespace",
        "ServiceAccount",
    ]
    for obj in kustomized:
        if obj["kind"] in ("ServiceAccount", "Deployment"):
            assert obj["metadata"]["namespace"] == NAMESPACE
    crd = one(kustomized, "CustomResourceDefinition")
    assert crd["spec"] == yaml.safe_load(CRD.read_text())["spec"]
    container = operator_container(one(kustomized, "Deployment"))
    assert container["image"] == "modeldeploy:0.1.0"
    assert env_of(container)["MODELDEPLOY_DEFAULT_PROVIDER"] == "sagemaker"
    assert "AWS_REGION" in env_of(container)


def test_local_provider_rbac_follows_its_hosting(
    helm: Helm, chart_default: list[dict[str, Any]]
) -> None:
    """Deployments and Services are granted only where the local provider runs endpoints."""
    process = documents(
        render_chart(helm, "--set", "provider=local", "--set", "local.hosting=process")
    )
    assert not [o for o in process if o["kind"] in ("Role", "RoleBinding")]
    env = env_of(operator_container(one(process, "Deployment")))
    assert env["MODELDEPLOY_LOCAL_HOSTING"] == "process"
    assert "MODELDEPLOY_ENDPOINT_NAMESPACE" not in env

    sagemaker = documents(render_chart(helm, "--set", "local.hosting=kubernetes"))
    assert not [o for o in sagemaker if o["kind"] in ("Role", "RoleBinding")]

    values = ["--set", "provider=local", "--set", "local.endpointNamespace=ml-endpoints"]
    values += ["--set", "local.serveImage=registry.example/serve:1", "--set", "local.workers=2"]
    objs = documents(render_chart(helm, *values))
    role, binding = one(objs, "Role"), one(objs, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "ml-endpoints"
    assert rbac_grants(role) == ENDPOINT_GRANTS
    assert one(objs, "ClusterRole")["rules"] == one(chart_default, "ClusterRole")["rules"]
    env = env_of(operator_container(one(objs, "Deployment")))
    settings = Settings.from_env({k: v for k, v in env.items() if v is not None})
    assert settings.namespace == "ml-endpoints"
    assert settings.image == "registry.example/serve:1"
    assert env["MODELDEPLOY_LOCAL_WORKERS"] == "2"
    assert settings.resources_for("ml.m5.large") == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }


# --- the local provider's state ---------------------------------------------------------------


def local_state(
    deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, dict[str, Any]]:
    """The local provider's state directory as the operator resolves it from the rendered env,
    and the pod volume holding it (the deepest mount containing it)."""
    container = operator_container(deployment)
    monkeypatch.setenv("MODELDEPLOY_LOCAL_DIR", env_of(container)["MODELDEPLOY_LOCAL_DIR"] or "")
    root = default_root()
    mounts = [m for m in container["volumeMounts"] if root.is_relative_to(m["mountPath"])]
    assert mounts, f"{root} is on no volume: the root filesystem is read-only"
    mount = max(mounts, key=lambda m: len(Path(m["mountPath"]).parts))
    assert not mount.get("readOnly"), mount
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == mount["name"]]
    return root, volume


def test_local_state_persists_on_the_charts_claim(
    chart_persistent: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pvc = one(chart_persistent, "PersistentVolumeClaim")
    assert pvc["metadata"]["namespace"] == NAMESPACE
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert pvc["spec"]["storageClassName"] == "fast-ssd"
    deployment = one(chart_persistent, "Deployment")
    root, volume = local_state(deployment, monkeypatch)
    assert root == Path(PERSISTENT_LOCAL_DIR)
    assert volume["persistentVolumeClaim"] == {"claimName": pvc["metadata"]["name"]}
    # ReadWriteOnce: the old pod must be gone before the new one mounts the claim.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_local_state_on_an_existing_claim_with_the_default_class(
    helm: Helm, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = ["--set", "provider=local", "--set", "local.persistence.enabled=true"]
    default_class = documents(render_chart(helm, *values))
    pvc = one(default_class, "PersistentVolumeClaim")
    # No storageClassName at all: "" would ask for no class rather than the cluster default.
    assert "storageClassName" not in pvc["spec"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"

    objs = documents(
        render_chart(helm, *values, "--set", "local.persistence.existingClaim=md-data")
    )
    assert not [o for o in objs if o["kind"] == "PersistentVolumeClaim"]
    root, volume = local_state(one(objs, "Deployment"), monkeypatch)
    assert root == Path(PERSISTENT_LOCAL_DIR)
    assert volume["persistentVolumeClaim"] == {"claimName": "md-data"}


@pytest.mark.parametrize(
    "values",
    [
        ["--set", "provider=local"],
        ["--set", "provider=local", "--set", "local.hosting=process"],
        # Persistence is for provider local: the sagemaker default gets no claim.
        ["--set", "local.persistence.enabled=true"],
    ],
    ids=["local", "local-process", "sagemaker-persistence"],
)
def test_local_state_without_persistence_is_on_the_tmp_emptydir(
    helm: Helm, values: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    objs = documents(render_chart(helm, *values))
    assert not [o for o in objs if o["kind"] == "PersistentVolumeClaim"]
    deployment = one(objs, "Deployment")
    root, volume = local_state(deployment, monkeypatch)
    assert root == Path(EPHEMERAL_LOCAL_DIR)
    assert "emptyDir" in volume
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert not [v for v in volumes if "persistentVolumeClaim" in v]


# --- RBAC and the pod, for every rendering ----------------------------------------------------


RENDERINGS = ["chart_default", "chart_full", "chart_persistent", "kustomized"]


def rbac_grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_rbac_is_least_privilege(rendering: str, request: pytest.FixtureRequest) -> None:
    objs = request.getfixturevalue(rendering)
    role = one(objs, "ClusterRole")
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert not any("*" in item for item in rule[key]), f"wildcard in {rule}"
    grants = rbac_grants(role)
    assert not {resource for _, resource in grants} & SENSITIVE
    assert {g: v for g, v in grants.items() if g not in NAMESPACE_GRANTS} == EXPECTED_GRANTS
    # The binding gives exactly this role to exactly the operator's ServiceAccount.
    binding, sa = one(objs, "ClusterRoleBinding"), one(objs, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": sa["metadata"]["name"],
            "namespace": sa["metadata"]["namespace"],
        }
    ]
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    # A Role, if any, is the local provider's, and its binding names the same ServiceAccount.
    for role in (o for o in objs if o["kind"] == "Role"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert not any("*" in item for item in rule[key]), f"wildcard in {rule}"
        assert rbac_grants(role) == ENDPOINT_GRANTS
        (bound,) = [o for o in objs if o["kind"] == "RoleBinding"]
        assert bound["metadata"]["namespace"] == role["metadata"]["namespace"]
        assert bound["roleRef"]["name"] == role["metadata"]["name"]
        assert bound["subjects"] == binding["subjects"]


def operator_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(container: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_operator_pod_is_locked_down(rendering: str, request: pytest.FixtureRequest) -> None:
    deployment = one(request.getfixturevalue(rendering), "Deployment")
    # kopf runs standalone (no peering): never two operators at once, not even during a rollout.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_uid()
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(deployment)
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    # The root filesystem is read-only, so /tmp (artifact inspection) is an emptyDir.
    tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and any(v["name"] == tmp[0]["name"] and "emptyDir" in v for v in pod["volumes"])
    # The arguments are valid for the operator's own CLI, and the probe hits its liveness URL.
    args = build_parser().parse_args(["run", *container["args"]])
    assert args.default_provider is None  # the provider comes from the environment
    assert env_of(container)["MODELDEPLOY_DEFAULT_PROVIDER"] in ("sagemaker", "local")
    liveness = urlparse(args.liveness)
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == liveness.path
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[probe["port"]] == liveness.port


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions as (KEYWORD, arguments) per stage, continuation lines joined, ARGs before
    the first FROM substituted into the FROM lines."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        if keyword == "FROM":
            rest = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], rest)
            stages.append([])
        assert stages, f"{keyword} before the first FROM"
        stages[-1].append((keyword, rest))
    return stages


def dockerfile_uid() -> int:
    users = [rest for kw, rest in dockerfile_stages()[-1] if kw == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    uid = users[-1].split(":")[0]
    # Numeric, so that the kubelet can verify runAsNonRoot without /etc/passwd.
    assert uid.isdigit(), f"USER {users[-1]} is not numeric"
    return int(uid)


def test_dockerfile_is_multi_stage_pinned_and_non_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "single-stage build"
    for stage in stages:
        image = stage[0][1].split()[0]
        if image in {s[0][1].split()[-1] for s in stages if " AS " in s[0][1].upper()}:
            continue  # FROM an earlier stage
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and tag and "latest" not in tag, f"unpinned base image {image}"
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim-\w+", tag), f"base tag {tag} is not exact slim"
    assert dockerfile_uid() != 0
    final = stages[-1]
    entrypoint = [rest for kw, rest in final if kw == "ENTRYPOINT"]
    assert entrypoint == ['["modeldeploy", "run"]']
    # The final stage copies the built virtualenv and builds nothing itself: no compilers.
    assert not [rest for kw, rest in final if kw == "RUN"]
    copies = [rest for kw, rest in final if kw == "COPY"]
    assert copies and all(c.startswith("--from=") for c in copies)


def test_dockerfile_installs_runtime_dependencies_only() -> None:
    runs = [rest for stage in dockerfile_stages() for kw, rest in stage if kw == "RUN"]
    pip = [
        cmd for run_ in runs for cmd in run_.split("&&") if re.search(r"\bpip (install|wheel)", cmd)
    ]
    assert pip, "no pip step"
    for cmd in pip:
        assert "[dev]" not in cmd and " -e " not in cmd, f"dev install: {cmd}"
        if "uninstall" not in cmd:
            assert "--no-cache-dir" in cmd, f"pip step keeps its cache: {cmd}"
    assert not any(re.search(r"\b(gcc|g\+\+|build-essential)\b", r) for r in runs)
    installs = [cmd for cmd in pip if "pip install" in cmd]
    assert all("--constraint requirements/runtime.txt" in cmd for cmd in installs), installs


def test_runtime_lock_pins_every_runtime_dependency() -> None:
    """requirements/runtime.txt (hack/lock-runtime.sh) pins each dependency of pyproject.toml
    exactly, within the range pyproject allows, so image builds are repeatable."""
    from packaging.requirements import Requirement

    lock = {}
    for line in (ROOT / "requirements" / "runtime.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            lock[name.lower().replace("_", "-")] = version
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for spec in declared:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        assert name in lock, f"{name} is missing from requirements/runtime.txt: run the script"
        assert req.specifier.contains(lock[name]), f"{name}=={lock[name]} is outside {spec}"


def test_docker_build_context_holds_every_package_dir() -> None:
    """The build context (.dockerignore) and the COPY lines cover every package directory in
    pyproject.toml, so the wheel built in the image is the whole operator."""
    copied = [
        rest.split()[0].rstrip("/")
        for kw, rest in dockerfile_stages()[0]
        if kw == "COPY" and not rest.startswith("--from")
    ]
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for src in copied:
        assert f"!{src}" in ignore or f"!{src}/" in ignore, f"{src} is not in the build context"
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    for package, directory in package_dirs.items():
        assert any(directory == c or directory.startswith(c + "/") for c in copied), package
    assert "pyproject.toml" in copied


def test_wheel_lists_every_package() -> None:
    """pyproject.toml lists its packages explicitly: one left out is missing from the wheel, and
    so from the image, while tests that import from the checkout still pass."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, directory in setuptools["package-dir"].items():
        for init in (ROOT / directory).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / directory).parts
            found.add(".".join((package, *rel)))
    missing = sorted(found - set(setuptools["packages"]))
    assert not missing, f"packages missing from pyproject.toml's list: {missing}"


# --- against a real API server ----------------------------------------------------------------


def dry_run(kubeconfig: Path, objs: list[dict[str, Any]]) -> None:
    out = kubectl(
        kubeconfig, "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(objs)
    ).stdout
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == len(objs), out
    assert all(line.endswith("(server dry run)") for line in lines), out


def test_chart_is_accepted_by_the_api_server(
    kubeconfig: Path, crd: None, helm: Helm, tmp_path: Path
) -> None:
    ns = f"md-helm-{secrets.token_hex(3)}"
    kubectl(kubeconfig, "create", "namespace", ns)
    objs = documents(render_chart(helm, release="md", ns=ns))
    full = values_file(tmp_path, FULL_VALUES)
    objs += documents(render_chart(helm, "-f", full, release="md-full", ns=ns))
    dry_run(kubeconfig, objs)


def test_persistent_chart_is_accepted_by_the_api_server(
    kubeconfig: Path, crd: None, helm: Helm, tmp_path: Path
) -> None:
    """The claim and the Deployment mounting it, for the chart's own claim and an existing one."""
    ns = f"md-pvc-{secrets.token_hex(3)}"
    kubectl(kubeconfig, "create", "namespace", ns)
    values = values_file(tmp_path, PERSISTENT_VALUES)
    own = documents(render_chart(helm, "-f", values, release="md", ns=ns))
    existing = ["--set", "local.persistence.existingClaim=md-data"]
    other = documents(render_chart(helm, "-f", values, *existing, release="md-existing", ns=ns))
    objs = [one(own, "PersistentVolumeClaim"), one(own, "Deployment"), one(other, "Deployment")]
    dry_run(kubeconfig, objs)


def test_kustomize_base_is_accepted_by_the_api_server(
    kubeconfig: Path, crd: None, kustomized: list[dict[str, Any]]
) -> None:
    # The namespace must exist for the dry-run of what goes into it; the rest (the CRD too, as
    # an update of the one applied above) is only dry-run.
    kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump(one(kustomized, "Namespace")))
    dry_run(kubeconfig, [o for o in kustomized if o["kind"] != "Namespace"])


def allowed(kubeconfig: Path, user: str, ns: str) -> dict[str, set[str]]:
    """`kubectl auth can-i --list` as `user` in `ns`: resource -> verbs."""
    out = kubectl(kubeconfig, "auth", "can-i", "--list", f"--as={user}", "-n", ns).stdout
    rows: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        m = re.fullmatch(r"\s*(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*", line)
        assert m, f"unexpected can-i line: {line!r}"
        resource, _urls, _names, verbs = m.groups()
        if resource:
            rows.setdefault(resource, set()).update(verbs.split())
    return rows


def can_i_name(group: str, resource: str) -> str:
    """How `kubectl auth can-i --list` names a resource: plural.group[/subresource]."""
    base, _, sub = resource.partition("/")
    name = f"{base}.{group}" if group else base
    return f"{name}/{sub}" if sub else name


@pytest.mark.parametrize("rendering", ["kustomized", "chart_full"])
def test_api_server_grants_the_role_exactly(
    kubeconfig: Path, crd: None, rendering: str, request: pytest.FixtureRequest
) -> None:
    """The rendered ClusterRole, bound to a fresh ServiceAccount identity: the authorizer allows
    what the role says on top of what every ServiceAccount has, and nothing else."""
    role = one(request.getfixturevalue(rendering), "ClusterRole")
    suffix = secrets.token_hex(3)
    ns, name = f"md-rbac-{suffix}", f"md-rbac-test-{suffix}"
    user = f"system:serviceaccount:{ns}:operator"
    role = {**role, "metadata": {"name": name}}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": ns}],
    }
    kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump_all([role, binding]))
    try:
        baseline = allowed(kubeconfig, f"system:serviceaccount:{ns}:nobody", ns)
        granted = allowed(kubeconfig, user, ns)
        extra = {r: v - baseline.get(r, set()) for r, v in granted.items()}
        assert {r: v for r, v in extra.items() if v} == {
            can_i_name(group, resource): verbs
            for (group, resource), verbs in rbac_grants(role).items()
        }

        def can_i(verb: str, resource: str, *flags: str) -> str:
            args = ("auth", "can-i", verb, resource, *flags, f"--as={user}", "-n", ns)
            return kubectl(kubeconfig, *args, check=False).stdout.strip()

        # A positive answer first, so that the refusals below cannot be vacuous.
        assert can_i("patch", f"modeldeployments.{GROUP}", "--subresource=status") == "yes"
        for verb, resource in [
            ("get", "secrets"),
            ("list", "secrets"),
            ("get", "configmaps"),
            ("update", f"modeldeployments.{GROUP}"),
            ("delete", f"modeldeployments.{GROUP}"),
            ("create", "deployments.apps"),
            ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
            ("escalate", "clusterroles.rbac.authorization.k8s.io"),
        ]:
            assert can_i(verb, resource) == "no", f"{user} may {verb} {resource}"
    finally:
        kubectl(kubeconfig, "delete", "clusterrolebinding,clusterrole", name, "--wait=false")


def test_operator_identity_runs_local_endpoints_in_their_namespace_only(
    control_plane: ControlPlane, kubeconfig: Path, helm: Helm, tmp_path: Path
) -> None:
    """The chart's Role for provider local, bound for real: the operator's ServiceAccount may
    manage Deployments and Services in the endpoints' namespace and nowhere else, still reads no
    Secret, and the endpoints backend, configured from the chart's env and authenticated as
    that ServiceAccount, does its whole job with exactly these rights."""
    suffix = secrets.token_hex(3)
    release_ns, endpoints_ns = f"md-sys-{suffix}", f"md-eps-{suffix}"
    for ns in (release_ns, endpoints_ns):
        kubectl(kubeconfig, "create", "namespace", ns)
    values = ["--set", "provider=local", "--set", f"local.endpointNamespace={endpoints_ns}"]
    objs = documents(render_chart(helm, *values, release=f"md-{suffix}", ns=release_ns))
    kubectl(
        kubeconfig,
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump_all([one(objs, "Role"), one(objs, "RoleBinding")]),
    )
    sa = one(objs, "ServiceAccount")["metadata"]["name"]
    user = f"system:serviceaccount:{release_ns}:{sa}"

    def can_i(verb: str, resource: str, ns: str) -> str:
        args = ("auth", "can-i", verb, resource, f"--as={user}", "-n", ns)
        return kubectl(kubeconfig, *args, check=False).stdout.strip()

    for verb, resource in [
        ("create", "deployments.apps"),
        ("update", "deployments.apps"),
        ("delete", "deployments.apps"),
        ("create", "services"),
        ("delete", "services"),
        ("list", "pods"),
    ]:
        assert can_i(verb, resource, endpoints_ns) == "yes", f"{user} may not {verb} {resource}"
    for verb, resource, ns in [
        ("get", "secrets", endpoints_ns),
        ("list", "secrets", endpoints_ns),
        ("get", "configmaps", endpoints_ns),
        ("create", "pods", endpoints_ns),
        ("create", "pods/exec", endpoints_ns),
        ("patch", "services", endpoints_ns),
        ("create", "deployments.apps", release_ns),
        ("create", "deployments.apps", "default"),
        ("create", "services", release_ns),
    ]:
        assert can_i(verb, resource, ns) == "no", f"{user} may {verb} {resource} in {ns}"

    # The backend as the operator runs it: settings from the chart's env, the SA's identity.
    env = env_of(operator_container(one(objs, "Deployment")))
    settings = Settings.from_env({k: v for k, v in env.items() if v is not None})
    assert settings.namespace == endpoints_ns
    registry = Registry(tmp_path / "registry.db")
    registry.ensure_group("churn", None)
    version = registry.register(
        "churn",
        source="s3://models/churn/1/model.tar.gz",
        artifact=tmp_path / "model.tar.gz",
        digest="a" * 64,
        framework_version="3.2-0",
        metrics={},
    )
    as_operator = k8s_config.new_client_from_config(
        config_file=str(control_plane.user_kubeconfig(user))
    )
    backend = KubernetesEndpoints(registry, settings=settings, api=as_operator)
    name = f"rbac-{suffix}-staging"
    backend.deploy(name, f"{name}-c1", version.artifact)
    assert backend.check(name).status == "Creating"
    dep = json.loads(
        kubectl(kubeconfig, "get", "deployment", name, "-n", endpoints_ns, "-o", "json").stdout
    )
    done = {
        "observedGeneration": dep["metadata"]["generation"],
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
    }
    # No controller-manager runs here: write the rollout's completion as it would.
    kubectl(
        kubeconfig,
        *("patch", "deployment", name, "-n", endpoints_ns, "--subresource=status"),
        *("--type=merge", "-p", json.dumps({"status": done})),
    )
    assert backend.check(name).status == "InService"  # records it: an update (PUT)
    backend.deploy(name, f"{name}-c2", version.artifact, instance_count=2)  # another PUT
    assert backend.check(name).status == "Updating"
    assert backend.names("rbac-") == [name]
    assert backend.delete(name) is True
