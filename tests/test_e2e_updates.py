"""Updates to a live ModelDeployment, as a real kube-apiserver judges them with the CRD's rules.

Deletion cleans up remote endpoints with the spec as it is then, so the CRD makes
spec.provider, spec.region and spec.modelPackageGroup.name immutable (CEL transition rules on
spec); the approval and promotion gates stay writable. No operator is needed: the API server
alone accepts or refuses each patch. Another module's operator may be running in the same
session (it watches every namespace), so every object here has deletionPolicy Retain and is
deleted by the test that made it.
"""

from __future__ import annotations

import copy
import itertools
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube import kubectl

# The session fixtures `control_plane` and `kubeconfig`.
pytest_plugins = ["kube"]

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "modeldeployment.yaml"
MANUAL = yaml.safe_load((ROOT / "manifests" / "examples" / "manual.yaml").read_text())
CRD_NAME = "modeldeployments.mlops.modeldeploy.dev"
_names = itertools.count(1)
PROJECT = {"name": "churn"}


@pytest.fixture(scope="module")
def ns(kubeconfig: Path, crd: None) -> str:
    # Left behind: the bare control plane has no namespace controller to finish a deletion.
    name = f"updates-{secrets.token_hex(3)}"
    kubectl(kubeconfig, "create", "namespace", name)
    return name


def get_object(kubeconfig: Path, ns: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl(kubeconfig, "-n", ns, "get", "mdep", name, "-o", "json").stdout)


def patch(kubeconfig: Path, ns: str, name: str, body: dict, *extra: str):
    return kubectl(
        kubeconfig,
        "-n",
        ns,
        "patch",
        "mdep",
        name,
        "--type=merge",
        "-p",
        json.dumps(body),
        *extra,
        check=False,
    )


class Deployments:
    """Creates ModelDeployments from the manual example and deletes them afterwards."""

    def __init__(self, kubeconfig: Path, ns: str) -> None:
        self.kubeconfig, self.ns, self.names = kubeconfig, ns, []

    def create(self, *, drop: tuple[str, ...] = (), spec: dict | None = None) -> str:
        doc = copy.deepcopy(MANUAL)
        name = f"upd-{next(_names)}"
        doc["metadata"] = {"name": name}
        doc["spec"]["deletionPolicy"] = "Retain"
        doc["spec"].update(spec or {})
        for field in drop:
            del doc["spec"][field]
        kubectl(self.kubeconfig, "-n", self.ns, "create", "-f", "-", input=yaml.safe_dump(doc))
        self.names.append(name)
        return name

    def delete_all(self) -> None:
        for name in self.names:
            kubectl(
                self.kubeconfig,
                "-n",
                self.ns,
                "delete",
                "mdep",
                name,
                "--timeout=60s",
                check=False,
            )


@pytest.fixture
def deployments(kubeconfig: Path, ns: str) -> Iterator[Deployments]:
    made = Deployments(kubeconfig, ns)
    yield made
    made.delete_all()


# (what changes, the patch, fields dropped from the example first, the field named)
REFUSED = [
    ("change provider", {"provider": "local"}, (), "provider"),
    ("remove provider", {"provider": None}, (), "provider"),
    ("add provider", {"provider": "sagemaker"}, ("provider",), "provider"),
    ("change region", {"region": "eu-west-1"}, (), "region"),
    ("remove region", {"region": None}, (), "region"),
    ("add region", {"region": "us-east-1"}, ("region",), "region"),
    ("change group", {"modelPackageGroup": {"name": "other-group"}}, (), "modelPackageGroup.name"),
    (
        "hand to a project",
        {"deployment": {"via": "Project", "project": PROJECT}},
        (),
        "deployment.via",
    ),
]


@pytest.mark.parametrize(
    ("change", "spec_patch", "drop", "field"), REFUSED, ids=[r[0] for r in REFUSED]
)
def test_moving_a_live_resource_is_refused(
    kubeconfig: Path,
    ns: str,
    deployments: Deployments,
    change: str,
    spec_patch: dict,
    drop: tuple[str, ...],
    field: str,
) -> None:
    name = deployments.create(drop=drop)
    before = get_object(kubeconfig, ns, name)["spec"]

    proc = patch(kubeconfig, ns, name, {"spec": spec_patch})

    assert proc.returncode != 0, f"{change} was accepted:\n{proc.stdout}"
    # fieldPath and reason of the rule: "<field>: Forbidden: <message>".
    assert f"spec.{field}: Forbidden: spec.{field} is immutable" in proc.stderr, proc.stderr
    assert "delete and recreate the ModelDeployment" in proc.stderr
    assert get_object(kubeconfig, ns, name)["spec"] == before


def test_the_refusal_names_only_the_field_that_moved(
    kubeconfig: Path, ns: str, deployments: Deployments
) -> None:
    name = deployments.create()
    proc = patch(kubeconfig, ns, name, {"spec": {"region": "eu-west-1"}})
    assert proc.returncode != 0
    assert "spec.region is immutable" in proc.stderr
    assert "spec.provider is immutable" not in proc.stderr
    assert "modelPackageGroup.name is immutable" not in proc.stderr


# Project mode: the project is made once; moving to another or back to Direct would orphan it.
PROJECT_REFUSED = [
    ("another project", {"project": {"name": "churn-2"}}, "deployment.project"),
    ("another template", {"project": {"productId": "prod-abc123"}}, "deployment.project"),
    ("back to direct", {"via": "Direct", "project": None}, "deployment.via"),
]


@pytest.mark.parametrize(
    ("change", "deployment", "field"), PROJECT_REFUSED, ids=[r[0] for r in PROJECT_REFUSED]
)
def test_a_project_is_never_swapped_under_a_live_resource(
    kubeconfig: Path, ns: str, deployments: Deployments, change: str, deployment: dict, field: str
) -> None:
    name = deployments.create(spec={"deployment": {"via": "Project", "project": PROJECT}})
    before = get_object(kubeconfig, ns, name)["spec"]
    assert before["deployment"]["project"]["parameters"] == {}  # the schema's default

    proc = patch(kubeconfig, ns, name, {"spec": {"deployment": deployment}})

    assert proc.returncode != 0, f"{change} was accepted:\n{proc.stdout}"
    assert f"spec.{field}: Forbidden: spec.{field} is immutable" in proc.stderr, proc.stderr
    assert get_object(kubeconfig, ns, name)["spec"] == before


GROUP_DESCRIPTION = ("modelPackageGroup", "description")
ACCEPTED = [
    ("approve", {"approval": {"approvedVersion": 1}}, ("approval", "approvedVersion"), 1),
    ("promote", {"production": {"promotedVersion": 2}}, ("production", "promotedVersion"), 2),
    ("resize staging", {"staging": {"instanceCount": 3}}, ("staging", "instanceCount"), 3),
    ("same provider", {"provider": "sagemaker"}, ("provider",), "sagemaker"),
    ("group description", {"modelPackageGroup": {"description": "new"}}, GROUP_DESCRIPTION, "new"),
]


@pytest.mark.parametrize(
    ("change", "spec_patch", "path", "expect"), ACCEPTED, ids=[a[0] for a in ACCEPTED]
)
def test_the_gates_and_other_fields_stay_writable(
    kubeconfig: Path,
    ns: str,
    deployments: Deployments,
    change: str,
    spec_patch: dict,
    path: tuple[str, ...],
    expect: Any,
) -> None:
    name = deployments.create()
    before = get_object(kubeconfig, ns, name)

    proc = patch(kubeconfig, ns, name, {"spec": spec_patch})

    assert proc.returncode == 0, f"{change} was refused:\n{proc.stderr}"
    after = get_object(kubeconfig, ns, name)
    value = after["spec"]
    for part in path:
        value = value[part]
    assert value == expect
    for field in ("provider", "region", "modelPackageGroup"):
        if field not in spec_patch:
            assert after["spec"][field] == before["spec"][field]
    assert after["spec"]["modelPackageGroup"]["name"] == before["spec"]["modelPackageGroup"]["name"]


def test_rolling_back_the_promotion_is_accepted(
    kubeconfig: Path, ns: str, deployments: Deployments
) -> None:
    name = deployments.create()
    for version in (1, 2, 1):
        proc = patch(kubeconfig, ns, name, {"spec": {"production": {"promotedVersion": version}}})
        assert proc.returncode == 0, proc.stderr
        spec = get_object(kubeconfig, ns, name)["spec"]
        assert spec["production"]["promotedVersion"] == version


def test_registration_status_keeps_the_serving_image(
    kubeconfig: Path, ns: str, deployments: Deployments
) -> None:
    """The API server prunes status fields the schema does not declare; the planner re-registers
    when frameworkVersion or image changes, so both must survive a status write."""
    name = deployments.create()
    registration = {
        "artifact": "s3://bucket/churn/model.tar.gz",
        "digest": "0" * 64,
        "frameworkVersion": "3.2-0",
        "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/xgb:1",
        "version": 1,
    }
    body = {"status": {"registration": registration | {"undeclared": "pruned"}}}
    proc = patch(kubeconfig, ns, name, body, "--subresource=status")
    assert proc.returncode == 0, proc.stderr

    stored = get_object(kubeconfig, ns, name)["status"]["registration"]
    assert stored == registration  # the undeclared field is gone: pruning is on
