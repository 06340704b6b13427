"""The kustomize base (kustomize as built into the pinned kubectl): it builds with the CRD, and a
real API server accepts it (server-side dry-run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from deploy_artifacts import (
    CRD,
    NAMESPACE,
    dry_run,
    env_of,
    one,
    operator_container,
)
from kube import kubectl

pytest_plugins = ["kube", "deploy_artifacts"]


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


def test_kustomize_base_is_accepted_by_the_api_server(
    kubeconfig: Path, crd: None, kustomized: list[dict[str, Any]]
) -> None:
    # The namespace must exist for the dry-run of what goes into it; the rest (the CRD too, as
    # an update of the one applied above) is only dry-run.
    kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump(one(kustomized, "Namespace")))
    dry_run(kubeconfig, [o for o in kustomized if o["kind"] != "Namespace"])
