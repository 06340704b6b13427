"""The bad-input corpus: every manifest in tests/invalid_specs/ is refused, naming the field.

Each file is a whole ModelDeployment whose annotation `test.modeldeploy.dev/expect-field` names
the field the error must mention. The operator's parser is checked here; the same files go to
the real API server (`kubectl apply --dry-run=server`, which validates strictly, so unknown
fields are refused too) in the end-to-end tests, so every file must be invalid for both.
"""

from __future__ import annotations

import pathlib
import re

import pytest
import yaml

from modeldeploy.spec import SpecError, parse_spec

CORPUS = pathlib.Path(__file__).resolve().parent / "invalid_specs"
FILES = sorted(CORPUS.glob("*.yaml"))
EXPECT = "test.modeldeploy.dev/expect-field"


def names_field(message: str, field: str) -> bool:
    """The message names `field` itself, not a longer path that starts with it."""
    return re.search(re.escape(field) + r"(?![\w.\[])", message) is not None


def test_the_corpus_is_large_enough() -> None:
    assert len(FILES) >= 24


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_manifest_is_well_formed(path: pathlib.Path) -> None:
    """Only the spec may be wrong: the API server must reach spec validation."""
    manifest = yaml.safe_load(path.read_text())
    assert manifest["apiVersion"] == "mlops.modeldeploy.dev/v1alpha1"
    assert manifest["kind"] == "ModelDeployment"
    assert manifest["metadata"]["name"] == path.stem  # unique names: one dry-run namespace
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", path.stem)
    assert manifest["metadata"]["annotations"][EXPECT].startswith("spec")
    assert isinstance(manifest["spec"], dict)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_parse_spec_rejects_naming_the_field(path: pathlib.Path) -> None:
    manifest = yaml.safe_load(path.read_text())
    field = manifest["metadata"]["annotations"][EXPECT]
    with pytest.raises(SpecError) as err:
        parse_spec(manifest["spec"])
    assert names_field(str(err.value), field), f"{field!r} not named in: {err.value}"


def test_names_field_is_exact() -> None:
    assert names_field("spec.approval: policy Automatic needs at least one rule", "spec.approval")
    assert names_field('unknown field "spec.stagin"', "spec.stagin")
    assert names_field("spec.roleArn is required", "spec.roleArn")
    assert not names_field("spec.approval.policy: bad", "spec.approval")
    assert not names_field("spec.approval.rules[0]: bad", "spec.approval.rules")
    assert not names_field("spec.stagingX: bad", "spec.staging")


BASE = {
    "provider": "local",
    "modelPackageGroup": {"name": "churn-xgboost"},
    "model": {"artifact": "file:///tmp/model.tar.gz"},
}

# Invalid for the operator only: spec.model.metrics is "string or map of numbers", which a
# structural schema can hold only as a typeless node the API server does not check (CRD comment).
# They stay out of the corpus directory because the API server accepts them; the operator stalls.
OPERATOR_ONLY = {
    "metrics-list": [0.9, 0.95],
    "metrics-number": 0.97,
    "metrics-map-of-strings": {"auc": "high"},
}


@pytest.mark.parametrize("metrics", OPERATOR_ONLY.values(), ids=OPERATOR_ONLY.keys())
def test_bad_metrics_shape_is_refused_by_the_operator(metrics: object) -> None:
    spec = {**BASE, "model": {**BASE["model"], "metrics": metrics}}
    with pytest.raises(SpecError, match=r"spec\.model\.metrics"):
        parse_spec(spec)


@pytest.mark.parametrize(
    "metrics", ["s3://bucket/churn/7/evaluation.json", {"auc": 0.97, "accuracy": 1}]
)
def test_both_metrics_shapes_are_accepted(metrics: object) -> None:
    spec = {**BASE, "model": {**BASE["model"], "metrics": metrics}}
    assert parse_spec(spec).model.metrics == metrics
