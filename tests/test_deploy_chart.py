"""The Helm chart: the pinned helm, strict lint, the values schema, what the defaults and every
optional branch render, where the local provider keeps its state, and a real API server
accepting the rendering (server-side dry-run, after the CRD is really applied).
"""

from __future__ import annotations

import json
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
from modeldeploy.providers.local.kube_render import Settings, k8s_name, pod_template

# The session fixtures `control_plane`, `kubeconfig` and `crd`; `helm` and the renderings.
pytest_plugins = ["kube", "deploy_artifacts"]

CRD_COPIES = (CHART / "crds" / "modeldeployment.yaml",)  # kustomize reads crds/ itself
HELM_GO_MOD = ROOT / "hack" / "helm" / "go.mod"

# Where the operator's state lives when nothing persists it: the image's HOME (/tmp), an emptyDir.
EPHEMERAL_LOCAL_DIR = "/tmp/.local/share/modeldeploy"
PERSISTENT_LOCAL_DIR = "/var/lib/modeldeploy"

# Every optional object of metrics: the ServiceMonitor, the endpoints' PodMonitor, the dashboard.
METRICS_VALUES: dict[str, Any] = {
    "provider": "local",
    "metrics": {
        "port": 9102,
        "serviceAnnotations": {"prometheus.io/scrape": "true"},
        "serviceMonitor": {
            "enabled": True,
            "interval": "15s",
            "scrapeTimeout": "10s",
            "labels": {"release": "kube-prometheus-stack"},
        },
        "endpointPodMonitor": {"enabled": True, "interval": "1m"},
        "dashboard": {"enabled": True, "annotations": {"grafana_folder": "MLOps"}},
    },
}
DASHBOARD = CHART / "dashboards" / "modeldeploy.json"


def test_crd_copies_are_byte_identical_to_the_source() -> None:
    for copy in CRD_COPIES:
        assert copy.read_bytes() == CRD.read_bytes(), f"{copy} is stale: run hack/sync-crds.sh"


def test_helm_is_the_pinned_release(helm: Helm) -> None:
    pin = re.search(r"^\s*helm\.sh/helm/v3 (v\S+)", HELM_GO_MOD.read_text(), re.MULTILINE)
    assert pin, f"no helm pin in {HELM_GO_MOD}"
    assert ok(helm("version", "--template", "{{.Version}}")) == pin[1]


@pytest.mark.parametrize(
    "values",
    [{}, FULL_VALUES, PERSISTENT_VALUES, METRICS_VALUES],
    ids=["defaults", "full", "persistent", "metrics"],
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
        ("metrics.port=80", "port"),
        ("metrics.enabled=maybe", "enabled"),
        ("metrics.serviceMonitor.interval=often", "interval"),
        ("metrics.serviceMonitor.enable=true", "enable"),
        ("metrics.dashboard.labels.grafana_dashboard=1", "grafana_dashboard"),
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
        "Service",  # the operator's metrics
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


# -- metrics --------------------------------------------------------------------------------------


def container_port(container: dict[str, Any], name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return port


def test_chart_defaults_serve_metrics_beside_the_health_port(
    chart_default: list[dict[str, Any]],
) -> None:
    """Metrics on 8080 on all addresses (the operator's own default is off, on loopback), the
    liveness probe on 8081, and a Service for the metrics port; no monitoring objects."""
    container = operator_container(one(chart_default, "Deployment"))
    env = env_of(container)
    assert env["MODELDEPLOY_METRICS_PORT"] == "8080"
    assert env["MODELDEPLOY_METRICS_ADDRESS"] == "0.0.0.0"
    assert container_port(container, "metrics") == 8080
    assert container_port(container, "health") == 8081
    service = one(chart_default, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = one(chart_default, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert not [o for o in chart_default if o["apiVersion"].startswith("monitoring.coreos.com")]


def test_chart_without_metrics_serves_none(helm: Helm) -> None:
    objs = documents(render_chart(helm, "--set", "metrics.enabled=false"))
    assert not [o for o in objs if o["kind"] == "Service"]
    container = operator_container(one(objs, "Deployment"))
    assert "MODELDEPLOY_METRICS_PORT" not in env_of(container)
    assert [p["name"] for p in container["ports"]] == ["health"]


def test_chart_refuses_one_port_for_metrics_and_health(helm: Helm) -> None:
    proc = helm("template", "md", CHART, "--set", "metrics.port=8081")
    assert proc.returncode != 0
    assert "metrics.port and healthPort must differ" in proc.stderr


def test_chart_renders_the_service_monitor_pod_monitor_and_dashboard(
    helm: Helm, tmp_path: Path
) -> None:
    objs = documents(render_chart(helm, "-f", values_file(tmp_path, METRICS_VALUES)))
    container = operator_container(one(objs, "Deployment"))
    assert env_of(container)["MODELDEPLOY_METRICS_PORT"] == "9102"
    assert container_port(container, "metrics") == 9102
    service = one(objs, "Service")
    assert service["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}

    # The ServiceMonitor selects that Service, in its namespace, by the port's name.
    monitor = one(objs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {
        "port": "metrics",
        "path": "/metrics",
        "interval": "15s",
        "scrapeTimeout": "10s",
    }
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]

    # The PodMonitor selects the pods the operator really renders for a local endpoint, by
    # their labels, and scrapes their server's port.
    pods = one(objs, "PodMonitor")
    assert pods["metadata"]["namespace"] == NAMESPACE  # local.endpointNamespace's default
    template = pod_template(
        Settings(namespace=NAMESPACE),
        k8s_name("metrics-test-staging"),
        "config-1",
        source="s3://bucket/model.tar.gz",
        digest="0" * 64,
        instance_type="ml.m5.large",
        workers=2,
    )
    pod_labels = template["metadata"]["labels"]
    selector = pods["spec"]["selector"]
    assert selector["matchLabels"].items() <= pod_labels.items()
    assert all(e["key"] in pod_labels for e in selector["matchExpressions"])
    (scrape,) = pods["spec"]["podMetricsEndpoints"]
    server_ports = [p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])]
    assert scrape["port"] in server_ports and scrape["path"] == "/metrics"

    # The dashboard, as the file holds it, for Grafana's sidecar.
    dashboard = one(objs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "MLOps"}
    assert json.loads(dashboard["data"]["modeldeploy.json"]) == json.loads(DASHBOARD.read_text())


def test_metrics_objects_are_accepted_by_the_api_server(
    kubeconfig: Path, crd: None, helm: Helm, tmp_path: Path
) -> None:
    """The Service, the dashboard ConfigMap and the Deployment with its metrics port. The
    ServiceMonitor and PodMonitor need the Prometheus Operator's CRDs, which this control
    plane does not have: their shape is checked above."""
    ns = f"md-metrics-{secrets.token_hex(3)}"
    kubectl(kubeconfig, "create", "namespace", ns)
    values = values_file(tmp_path, METRICS_VALUES)
    objs = documents(render_chart(helm, "-f", values, release="md", ns=ns))
    core = [o for o in objs if o["kind"] in ("Service", "ConfigMap", "Deployment")]
    assert len(core) == 3
    dry_run(kubeconfig, core)
