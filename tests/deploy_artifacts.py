"""Shared by the tests of the deploy artifacts (tests/test_deploy_*.py): paths, the grants the
operator needs, the pinned helm CLI and the renderings of the chart and the kustomize base.

helm is the real CLI built from the Go module proxy by hack/build-helm.sh (built here when
missing); kustomize is the one built into the pinned kubectl. A test module uses the fixtures
with `pytest_plugins = ["deploy_artifacts"]`.
PYTEST_DONT_REWRITE: test modules import it before pytest registers it as a plugin (as kube.py).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube import kubectl, kubectl_path

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "modeldeploy"
BASE = ROOT / "manifests" / "base"
CRD = ROOT / "crds" / "modeldeployment.yaml"
DOCKERFILE = ROOT / "Dockerfile"
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


@pytest.fixture(scope="session")
def chart_default(helm: Helm) -> list[dict[str, Any]]:
    return documents(render_chart(helm))


@pytest.fixture(scope="session")
def chart_full(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    values = values_file(tmp_path_factory.mktemp("values"), FULL_VALUES)
    return documents(render_chart(helm, "-f", values))


@pytest.fixture(scope="session")
def chart_persistent(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    values = values_file(tmp_path_factory.mktemp("values"), PERSISTENT_VALUES)
    return documents(render_chart(helm, "-f", values))


@pytest.fixture(scope="session")
def kustomized() -> list[dict[str, Any]]:
    return documents(ok(run([kubectl_path(), "kustomize", BASE])))


RENDERINGS = ["chart_default", "chart_full", "chart_persistent", "kustomized"]


def rbac_grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def operator_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(container: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


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


def dry_run(kubeconfig: Path, objs: list[dict[str, Any]]) -> None:
    out = kubectl(
        kubeconfig, "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(objs)
    ).stdout
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == len(objs), out
    assert all(line.endswith("(server dry run)") for line in lines), out
