"""The examples in manifests/examples/ are valid for the operator and for the CRD's schema.

The schema check runs offline with `jsonschema` (OpenAPI v3 value validations are JSON Schema;
the x-kubernetes-* keys are ignored by it) plus a walk that refuses fields the schema does not
declare, as the API server's strict field validation does. CEL rules need the real API server:
the end-to-end tests apply these files there.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import jsonschema
import pytest
import yaml

from modeldeploy.spec import parse_spec

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = {p.stem: p for p in sorted((ROOT / "manifests" / "examples").glob("*.yaml"))}
PRESERVE = "x-kubernetes-preserve-unknown-fields"


@functools.cache
def openapi_schema() -> dict:
    crd = yaml.safe_load((ROOT / "crds" / "modeldeployment.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def undeclared_fields(schema: dict, value: Any, path: str = "") -> list[str]:
    """Paths in `value` the schema does not declare (what strict field validation refuses)."""
    if schema.get(PRESERVE) or path == ".metadata":
        return []  # ObjectMeta has its own schema on the server
    found: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in props:
                found += undeclared_fields(props[key], item, f"{path}.{key}")
            elif isinstance(extra, dict):
                found += undeclared_fields(extra, item, f"{path}.{key}")
            else:
                found.append(f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += undeclared_fields(schema["items"], item, f"{path}[{i}]")
    return found


def schema_errors(manifest: dict) -> list[str]:
    validator = jsonschema.Draft4Validator(openapi_schema())
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(manifest)]
    return errors + [f"{p}: unknown field" for p in undeclared_fields(openapi_schema(), manifest)]


def load(name: str) -> dict:
    return yaml.safe_load(EXAMPLES[name].read_text())


def test_the_examples_exist() -> None:
    assert set(EXAMPLES) == {"manual", "automatic", "local", "project"}


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_is_a_model_deployment(name: str) -> None:
    manifest = load(name)
    assert manifest["apiVersion"] == "mlops.modeldeploy.dev/v1alpha1"
    assert manifest["kind"] == "ModelDeployment"
    assert manifest["metadata"]["name"]
    assert "namespace" not in manifest["metadata"]  # applied into whatever namespace is current


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_parses(name: str) -> None:
    parse_spec(load(name)["spec"])


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_matches_the_crd_schema(name: str) -> None:
    assert schema_errors(load(name)) == []


def test_manual_example() -> None:
    spec = parse_spec(load("manual")["spec"])
    assert spec.provider == "sagemaker"
    assert spec.roleArn
    assert spec.model is None  # versions come from a pipeline or `modeldeploy register`
    assert (spec.approval.policy, spec.production.promotion) == ("Manual", "Manual")
    # Both gates are closed until a person opens them.
    assert spec.approval.approvedVersion is None and spec.production.promotedVersion is None
    smoke = spec.staging.smokeTest
    assert smoke and smoke.contentType == "text/csv"
    assert len([float(v) for v in smoke.payload.split(",")]) == 30  # breast-cancer features


def test_automatic_example() -> None:
    spec = parse_spec(load("automatic")["spec"])
    assert spec.provider == "sagemaker" and spec.roleArn
    assert spec.approval.policy == "Automatic"
    assert {(r.metric, r.min, r.max) for r in spec.approval.rules} == {
        ("auc", 0.95, None),
        ("accuracy", 0.9, None),
    }
    assert spec.production.promotion == "Automatic"
    assert spec.staging.smokeTest and len(spec.staging.smokeTest.payload.split(",")) == 30


def test_local_example() -> None:
    spec = parse_spec(load("local")["spec"])
    assert spec.provider == "local"
    assert spec.roleArn is None and spec.region is None
    assert spec.model and spec.model.artifact == "file:///tmp/modeldeploy-demo/model.tar.gz"
    assert spec.staging.smokeTest and len(spec.staging.smokeTest.payload.split(",")) == 30


def test_project_example() -> None:
    spec = parse_spec(load("project")["spec"])
    assert spec.provider == "sagemaker" and spec.roleArn
    assert spec.project is not None and spec.project.name == "breast-cancer"
    assert spec.project.templateProductName is None  # the built-in template, by default
    assert spec.production.promotion == "Manual" and spec.production.promotedVersion is None
    assert spec.staging.smokeTest and len(spec.staging.smokeTest.payload.split(",")) == 30


def test_inline_metrics_match_the_schema() -> None:
    """The other shape of spec.model.metrics, a map of numbers, passes both checks too."""
    manifest = load("local")
    manifest["spec"]["model"]["metrics"] = {"auc": 0.99, "accuracy": 0.96}
    parse_spec(manifest["spec"])
    assert schema_errors(manifest) == []


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (lambda s: s["staging"].update(instanceCount=0), "staging.instanceCount"),
        (lambda s: s.update(provider="azureml"), "spec.provider"),
        (lambda s: s["modelPackageGroup"].update(name="bad_name"), "modelPackageGroup.name"),
        (lambda s: s.update(stagin={}), ".spec.stagin: unknown field"),
        (lambda s: s["approval"]["rules"][0].update(minimum=1), "rules[0].minimum: unknown"),
        (lambda s: s.pop("modelPackageGroup"), "'modelPackageGroup' is a required property"),
    ],
    ids=["bound", "enum", "pattern", "unknown-field", "unknown-nested-field", "required"],
)
def test_schema_check_can_fail(change, expect: str) -> None:
    manifest = load("automatic")
    change(manifest["spec"])
    errors = schema_errors(manifest)
    assert any(expect in e for e in errors), errors
