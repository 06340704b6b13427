"""The Flux examples in manifests/flux/: a GitRepository and two Kustomizations that wait for the
ModelDeployments they apply (kstatus, or the rule in CEL), pointing at the CRD's real group,
version and kind and at status fields the CRD declares."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FLUX = ROOT / "manifests" / "flux"
CRD = yaml.safe_load((ROOT / "crds" / "modeldeployment.yaml").read_text())


def load(name: str) -> dict:
    return yaml.safe_load((FLUX / name).read_text())


KUSTOMIZATIONS = ["kustomization-wait.yaml", "kustomization-healthcheckexprs.yaml"]


def test_git_repository() -> None:
    repo = load("gitrepository.yaml")
    assert (repo["apiVersion"], repo["kind"]) == ("source.toolkit.fluxcd.io/v1", "GitRepository")
    assert repo["spec"]["ref"]["branch"] and repo["spec"]["url"]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomization_waits_for_what_it_applies(name: str) -> None:
    ks, repo = load(name), load("gitrepository.yaml")
    assert (ks["apiVersion"], ks["kind"]) == ("kustomize.toolkit.fluxcd.io/v1", "Kustomization")
    spec = ks["spec"]
    assert spec["sourceRef"] == {"kind": "GitRepository", "name": repo["metadata"]["name"]}
    assert ks["metadata"]["namespace"] == repo["metadata"]["namespace"]
    assert spec["wait"] is True and spec["prune"] is True and spec["timeout"]


def test_health_check_exprs_name_the_crd_and_its_status_fields() -> None:
    (check,) = load("kustomization-healthcheckexprs.yaml")["spec"]["healthCheckExprs"]
    (version,) = CRD["spec"]["versions"]
    assert check["apiVersion"] == f"{CRD['spec']['group']}/{version['name']}"
    assert check["kind"] == CRD["spec"]["names"]["kind"]
    assert set(check) == {"apiVersion", "kind", "inProgress", "failed", "current"}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for expr in (check["inProgress"], check["failed"], check["current"]):
        for field in re.findall(r"\bstatus\.(\w+)", expr):
            assert field in status, f"status.{field} is not in the CRD"
        # Guarded: a missing field is an evaluation error, which Flux reports as Unknown.
        assert "has(status." in expr
    assert "'Stalled'" in check["failed"] and "'Ready'" in check["current"]
    assert "metadata.generation" in check["inProgress"]
