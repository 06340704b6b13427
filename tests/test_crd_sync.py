"""The CRD's spec schema and the pydantic model of the spec must not drift.

`compare()` walks both trees side by side and lists every difference: field names at every
level, required sets, types, enums, patterns, numeric and length bounds, defaults. Defaults are
compared by effect: what the API server fills into an omitted field (nested defaults included)
must equal what pydantic fills in. The mutation tests prove that the comparison can fail.
"""

from __future__ import annotations

import copy
import functools
import pathlib
import re
from typing import Any

import pytest
import yaml

from modeldeploy.spec import ModelDeploymentSpec, parse_spec
from modeldeploy.status import ModelDeploymentStatus

ROOT = pathlib.Path(__file__).resolve().parents[1]
CRD_PATH = ROOT / "crds" / "modeldeployment.yaml"
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))

# Keywords that carry a constraint, compared verbatim on every node.
CONSTRAINTS = (
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
)
PRESERVE = "x-kubernetes-preserve-unknown-fields"
UNSET = object()


@functools.cache
def _crd_text() -> str:
    return CRD_PATH.read_text()


def load_crd() -> dict:
    return yaml.safe_load(_crd_text())


def root_schema(crd: dict) -> dict:
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def crd_spec_schema() -> dict:
    return root_schema(load_crd())["properties"]["spec"]


def pydantic_schema() -> dict:
    return ModelDeploymentSpec.model_json_schema()


# -- the pydantic side ---------------------------------------------------------------------------


def _resolve(node: dict, defs: dict) -> dict:
    """Follow $ref and fold `X | None` into X; keys beside them (default) stay on the result."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            return _resolve({**options[0], **rest}, defs)
        return {**rest, "anyOf": [_resolve(o, defs) for o in options]}
    return node


def _strip_none(value: Any) -> Any:
    """pydantic spells an unset optional field as None; the API server leaves it out."""
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


# -- the CRD side ---------------------------------------------------------------------------------


def apply_defaults(schema: dict, value: Any) -> Any:
    """Structural defaulting as the API server does it: fill omitted fields that have a default,
    then descend, so `default: {}` on an object pulls in its fields' own defaults."""
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, prop in schema["properties"].items():
            if name not in out and "default" in prop:
                out[name] = copy.deepcopy(prop["default"])
            if name in out:
                out[name] = apply_defaults(prop, out[name])
        return out
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], v) for v in value]
    return value


def crd_effective_default(node: dict) -> Any:
    if "default" not in node:
        return UNSET
    return apply_defaults(node, copy.deepcopy(node["default"]))


# -- the comparison -------------------------------------------------------------------------------


def compare(crd: dict, py: dict, defs: dict, path: str = "spec") -> list[str]:
    """Every difference between a CRD schema node and a pydantic JSON-schema node."""
    py = _resolve(py, defs)
    diffs: list[str] = []

    py_default = _strip_none(py["default"]) if py.get("default") is not None else UNSET
    if py_default != crd_effective_default(crd):
        diffs.append(
            f"{path}: default differs: CRD {crd_effective_default(crd)!r}, pydantic {py_default!r}"
        )

    if "anyOf" in py:
        # A union of several types (spec.model.metrics: string or map) has no OpenAPI type; a
        # structural schema allows that only as a typeless node that preserves unknown fields.
        if "type" in crd or crd.get(PRESERVE) is not True:
            diffs.append(f"{path}: pydantic allows several types; CRD must be typeless, {PRESERVE}")
        return diffs

    if crd.get("type") != py.get("type"):
        diffs.append(f"{path}: type differs: CRD {crd.get('type')!r}, pydantic {py.get('type')!r}")
        return diffs
    for key in CONSTRAINTS:
        if crd.get(key) != py.get(key):
            diffs.append(f"{path}: {key} differs: CRD {crd.get(key)!r}, pydantic {py.get(key)!r}")

    if py.get("type") == "object":
        diffs += _compare_object(crd, py, defs, path)
    elif py.get("type") == "array":
        diffs += compare(crd.get("items", {}), py["items"], defs, f"{path}[]")
    return diffs


def _compare_object(crd: dict, py: dict, defs: dict, path: str) -> list[str]:
    diffs: list[str] = []
    if py.get("additionalProperties") is False:
        # pydantic forbids extra fields; the API server must not keep them either.
        if crd.get(PRESERVE) or "additionalProperties" in crd:
            diffs.append(f"{path}: CRD keeps unknown fields, pydantic forbids them")
    elif isinstance(py.get("additionalProperties"), dict):
        if not isinstance(crd.get("additionalProperties"), dict):
            diffs.append(f"{path}: pydantic has a map of values, CRD has none")
        else:
            diffs += compare(crd["additionalProperties"], py["additionalProperties"], defs, path)
    crd_props, py_props = crd.get("properties", {}), py.get("properties", {})
    for name in sorted(crd_props.keys() - py_props.keys()):
        diffs.append(f"{path}.{name}: only in the CRD")
    for name in sorted(py_props.keys() - crd_props.keys()):
        diffs.append(f"{path}.{name}: only in pydantic")
    if set(crd.get("required", [])) != set(py.get("required", [])):
        diffs.append(
            f"{path}: required differs: CRD {sorted(crd.get('required', []))}, "
            f"pydantic {sorted(py.get('required', []))}"
        )
    for name in sorted(crd_props.keys() & py_props.keys()):
        diffs += compare(crd_props[name], py_props[name], defs, f"{path}.{name}")
    return diffs


def spec_diffs(crd_spec: dict, py_schema: dict) -> list[str]:
    return compare(crd_spec, py_schema, py_schema.get("$defs", {}))


# -- tests ----------------------------------------------------------------------------------------


def test_crd_spec_schema_matches_pydantic_model() -> None:
    assert spec_diffs(crd_spec_schema(), pydantic_schema()) == []


def _crd_node(spec: dict, dotted: str) -> dict:
    node = spec
    for part in dotted.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def _set(key: str, value: Any):
    def mutate(node: dict) -> None:
        node[key] = value

    return mutate


def _drop(key: str):
    def mutate(node: dict) -> None:
        node.pop(key)

    return mutate


CRD_MUTATIONS = [
    ("modelPackageGroup.name", _set("pattern", "^[a-z0-9](-*[a-z0-9]){0,62}$"), "pattern"),
    ("modelPackageGroup.name", _set("maxLength", 64), "maxLength"),
    ("modelPackageGroup", _set("required", []), "required"),
    ("provider", _set("enum", ["sagemaker", "local", "azureml"]), "enum"),
    ("staging.instanceCount", _set("maximum", 1000), "maximum"),
    ("staging.dataCapturePercent", _drop("minimum"), "minimum"),
    ("approval.rules", _set("maxItems", 33), "maxItems"),
    ("approval.rules.[].min", _set("type", "integer"), "type"),
    ("staging.smokeTest.maxLatencyMs", _set("default", 1000), "default"),
    ("deletionPolicy", _drop("default"), "default"),
    ("production", _drop("default"), "default"),
    ("staging", _set("properties", {}), "only in pydantic"),
    ("model.metrics", _set("type", "string"), "several types"),
    ("approval", _set(PRESERVE, True), "keeps unknown fields"),
]


@pytest.mark.parametrize(
    ("field", "mutate", "expect"), CRD_MUTATIONS, ids=[f"{m[0]}-{m[2]}" for m in CRD_MUTATIONS]
)
def test_a_changed_crd_is_detected(field: str, mutate, expect: str) -> None:
    spec = copy.deepcopy(crd_spec_schema())
    mutate(_crd_node(spec, field))
    diffs = spec_diffs(spec, pydantic_schema())
    assert any(expect in d and f"spec.{field.replace('.[]', '[]')}" in d for d in diffs), diffs


def test_a_field_only_in_the_crd_is_detected() -> None:
    spec = copy.deepcopy(crd_spec_schema())
    spec["properties"]["staging"]["properties"]["replicas"] = {"type": "integer"}
    assert "spec.staging.replicas: only in the CRD" in spec_diffs(spec, pydantic_schema())


def test_a_changed_pydantic_schema_is_detected() -> None:
    py = copy.deepcopy(pydantic_schema())
    py["$defs"]["SmokeTestSpec"]["properties"]["contentType"]["enum"].append("application/json")
    py["$defs"]["ProductionSpec"]["properties"]["instanceCount"]["default"] = 2
    diffs = spec_diffs(crd_spec_schema(), py)
    assert any(d.startswith("spec.staging.smokeTest.contentType: enum") for d in diffs), diffs
    assert any(d.startswith("spec.production.instanceCount: default") for d in diffs), diffs


MINIMAL = {"modelPackageGroup": {"name": "churn-xgboost"}}
WITH_SMOKE_AND_RULES = {
    "modelPackageGroup": {"name": "churn-xgboost"},
    "approval": {"policy": "Automatic", "rules": [{"metric": "auc", "min": 0.9}]},
    "staging": {"smokeTest": {"payload": "1,2,3"}},
}


@pytest.mark.parametrize(
    "spec",
    [MINIMAL, WITH_SMOKE_AND_RULES] + [yaml.safe_load(p.read_text())["spec"] for p in EXAMPLES],
    ids=["minimal", "smoke-and-rules"] + [p.stem for p in EXAMPLES],
)
def test_api_server_defaults_equal_pydantic_defaults(spec: dict) -> None:
    """What the API server stores after defaulting is what the operator reads."""
    defaulted = apply_defaults(crd_spec_schema(), copy.deepcopy(spec))
    assert defaulted == parse_spec(spec).model_dump(exclude_none=True)
    assert parse_spec(defaulted) == parse_spec(spec)


# -- the rest of the CRD --------------------------------------------------------------------------


def test_crd_identity() -> None:
    crd = load_crd()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "modeldeployments.mlops.modeldeploy.dev"
    spec = crd["spec"]
    assert spec["group"] == "mlops.modeldeploy.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ModelDeployment"
    assert spec["names"]["plural"] == "modeldeployments"
    assert spec["names"]["singular"] == "modeldeployment"
    assert spec["names"]["shortNames"] == ["mdep"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    (version,) = load_crd()["spec"]["versions"]
    columns = {c["name"].upper(): c for c in version["additionalPrinterColumns"]}
    assert list(columns) == [
        "GROUP",
        "LATEST",
        "APPROVAL",
        "STAGING",
        "PROD",
        "PHASE",
        "READY",
        "AGE",
        "MESSAGE",
    ]
    assert columns["READY"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["AGE"]["type"] == "date"
    assert columns["MESSAGE"]["priority"] == 1
    status = root_schema(load_crd())["properties"]["status"]
    for column in columns.values():
        # Every .spec/.status column must point at a declared field, or it stays empty.
        parts = column["jsonPath"].split("[")[0].strip(".").split(".")
        if parts[0] in ("spec", "status"):
            node = crd_spec_schema() if parts[0] == "spec" else status
            for part in parts[1:]:
                node = node["properties"][part]


def _walk(node: dict, path: str):
    yield path, node
    for name, prop in node.get("properties", {}).items():
        yield from _walk(prop, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_every_field_has_a_description() -> None:
    """`kubectl explain` reads them. Root metadata may carry nothing but its type."""
    missing = [
        path
        for path, node in _walk(root_schema(load_crd()), "")
        if path != ".metadata" and not node.get("description")
    ]
    assert missing == []


# `self` is the node the rule sits on; in a transition rule `oldSelf` is the same node as stored.
SELF_FIELD = re.compile(r"\b(?:self|oldSelf)((?:\.[A-Za-z_]\w*)+)")


def _cel_references(root: dict | None = None) -> list[tuple[str, dict, str]]:
    refs = []
    for path, node in _walk(root_schema(load_crd()) if root is None else root, ""):
        for rule in node.get("x-kubernetes-validations", []):
            refs += [(path, node, m.group(1)) for m in SELF_FIELD.finditer(rule["rule"])]
            if "fieldPath" in rule:
                refs.append((path, node, rule["fieldPath"]))
    return refs


def _cel_visible(node: dict, dotted: str) -> bool:
    """CEL sees declared, typed fields only: not typeless preserve-unknown-fields nodes."""
    for part in dotted.strip(".").split("."):
        if part in ("startsWith", "endsWith", "matches", "size", "contains", "all", "exists"):
            return True  # a method call on the value reached so far
        node = node.get("properties", {}).get(part)
        if node is None or "type" not in node:
            return False
    return True


def _bad_references(root: dict | None = None) -> list[str]:
    return [
        f"{path}: {ref}" for path, node, ref in _cel_references(root) if not _cel_visible(node, ref)
    ]


def test_cel_rules_name_declared_typed_fields() -> None:
    refs = _cel_references()
    assert len(refs) >= 10  # the rules exist (and the walker found them)
    assert _bad_references() == []


def test_cel_reference_check_can_fail() -> None:
    spec = crd_spec_schema()
    assert not _cel_visible(spec, ".roleARN")
    assert not _cel_visible(spec, ".model.metrics")  # typeless: CEL cannot see it
    assert _cel_visible(spec, ".model.artifact.startsWith")


def test_an_old_self_typo_is_detected() -> None:
    root = root_schema(load_crd())
    root["properties"]["spec"]["x-kubernetes-validations"].append(
        {"rule": "!has(oldSelf.regoin) || self.region == oldSelf.regoin"}
    )
    assert _bad_references(root) == [".spec: .regoin", ".spec: .regoin"]


# -- immutable fields -----------------------------------------------------------------------------

# Deletion cleans up remote endpoints with the spec as it is then: these must never move.
# field path -> whether the field is optional (then adding and removing it are refused too).
IMMUTABLE = {"provider": True, "region": True, "modelPackageGroup.name": False}


@pytest.mark.parametrize("field", IMMUTABLE)
def test_immutable_field_has_a_transition_rule_on_spec(field: str) -> None:
    """On spec, not on the field: a rule on an optional field runs only when both the old and the
    new object have it, so adding or removing the field would go unchecked."""
    rules = {
        r.get("fieldPath"): r
        for r in crd_spec_schema().get("x-kubernetes-validations", [])
        if "oldSelf" in r["rule"]
    }
    rule = rules.get(f".{field}")
    assert rule is not None, f"no transition rule with fieldPath .{field} on spec"
    assert f"self.{field} == oldSelf.{field}" in rule["rule"]
    assert rule["reason"] == "FieldValueForbidden"
    assert rule["message"].startswith(f"spec.{field} is immutable")
    if IMMUTABLE[field]:
        assert f"has(self.{field}) == has(oldSelf.{field})" in rule["rule"]


def test_registration_status_records_the_serving_image() -> None:
    """The planner re-registers when frameworkVersion or image changes; the API server prunes
    status fields the schema does not declare, so both must be declared."""
    registration = root_schema(load_crd())["properties"]["status"]["properties"]["registration"]
    for name in ("artifact", "digest", "frameworkVersion", "image"):
        assert registration["properties"][name]["type"] == "string", name


# -- status ---------------------------------------------------------------------------------------


def status_field_diffs(crd: dict, py: dict, defs: dict, path: str = "status") -> list[str]:
    """Field names at every level of the status: the API server prunes a field the CRD lacks,
    so whatever the typed status can write must be in the schema, and nothing more."""
    py = _resolve(py, defs)
    if py.get("type") == "array":
        return status_field_diffs(crd.get("items", {}), py["items"], defs, f"{path}[]")
    if "properties" not in py:
        return []
    crd_props, py_props = crd.get("properties", {}), py["properties"]
    diffs = [f"{path}.{n}: only in the CRD" for n in sorted(crd_props.keys() - py_props.keys())]
    diffs += [f"{path}.{n}: only in pydantic" for n in sorted(py_props.keys() - crd_props.keys())]
    for name in sorted(crd_props.keys() & py_props.keys()):
        diffs += status_field_diffs(crd_props[name], py_props[name], defs, f"{path}.{name}")
    return diffs


def _status_diffs(crd_status: dict) -> list[str]:
    py = ModelDeploymentStatus.model_json_schema()
    ours = {**crd_status, "properties": dict(crd_status["properties"])}
    ours["properties"].pop("kopf")  # kopf's own bookkeeping, not the operator's status
    return status_field_diffs(ours, py, py.get("$defs", {}))


def test_crd_status_schema_matches_the_typed_status() -> None:
    assert _status_diffs(root_schema(load_crd())["properties"]["status"]) == []


def test_a_status_field_missing_from_the_crd_is_detected() -> None:
    status = copy.deepcopy(root_schema(load_crd())["properties"]["status"])
    del status["properties"]["staging"]["properties"]["smokeTest"]["properties"]["latencyMs"]
    status["properties"]["production"]["properties"]["replicas"] = {"type": "integer"}
    diffs = _status_diffs(status)
    assert "status.staging.smokeTest.latencyMs: only in pydantic" in diffs
    assert "status.production.replicas: only in the CRD" in diffs


def test_status_defaults_to_an_unobserved_generation() -> None:
    """kstatus (Flux's `wait: true`) calls an object without status Current. With this default a
    new object reads back observedGeneration 0 behind generation 1: in progress until the
    operator's first status write (tests/test_gitops_health_live.py, on the API server)."""
    status = root_schema(load_crd())["properties"]["status"]
    assert status["default"] == {"observedGeneration": 0}
