"""The Helm chart: the pinned helm, strict lint, the values schema, what the defaults and every
optional branch render, where the local provider keeps its state, and a real API server
accepting the rendering (server-side dry-run, after the CRD is really applied).
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import pytest
from deploy_artifacts import (
    CHART,
    CRD,
    ENDPOINT_GRANTS,
    EXPECTED_GRANTS,
    FULL_VALUES,
    NAMESPACE,
    NAMESPACE_GRANTS,
    PERSISTENT_VALUES,
    ROOT,
    Helm,
    documents,
    dry_run,
    env_of,
    ok,
    one,
    operator_container,
    rbac_grants,
    render_chart,
    values_file,
)
from kube import kubectl

from modeldeploy.cli import build_parser
from modeldeploy.providers.local import default_root

# The session fixtures `control_plane`, `kubeconfig` and `crd`; `helm` and the renderings.
pytest_plugins = ["kube", "deploy_artifacts"]

CRD_COPIES = (CHART / "crds" / "modeldeployment.yaml",)  # kustomize reads crds/ itself
HELM_GO_MOD = ROOT / "hack" / "helm" / "go.mod"

# Where the operator's state lives when nothing persists it: the image's HOME (/tmp), an emptyDir.
EPHEMERAL_LOCAL_DIR = "/tmp/.local/share/modeldeploy"
PERSISTENT_LOCAL_DIR = "/var/lib/modeldeploy"


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
