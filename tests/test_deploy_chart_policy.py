"""The chart's `policy:` value: rendered into a ConfigMap that the operator reads as its
platform policy (modeldeploy/policy.py), mounted as a directory so that edits reach it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from deploy_artifacts import (
    CHART,
    Helm,
    documents,
    env_of,
    one,
    operator_container,
    render_chart,
    values_file,
)

from modeldeploy.policy import load_policy

pytest_plugins = ["deploy_artifacts"]  # the `helm` fixture

POLICY: dict[str, Any] = {
    "namespaces": {
        "team-a": {
            "roles": ["arn:aws:iam::111111111111:role/team-a-*"],
            "locations": ["s3://team-a-models/*"],
            "regions": ["eu-west-1"],
        },
        "ml-*": {"locations": ["s3://shared-models/*"]},
    }
}


def test_the_chart_renders_the_policy_the_operator_reads(helm: Helm, tmp_path: Path) -> None:
    objs = documents(render_chart(helm, "-f", values_file(tmp_path, {"policy": POLICY})))
    config = one(objs, "ConfigMap")
    path = tmp_path / "policy.yaml"
    path.write_text(config["data"]["policy.yaml"])
    assert yaml.safe_load(path.read_text()) == POLICY
    policy = load_policy(path)  # what the operator will read, accepted by its own loader
    assert policy.grant_for("ml-training").locations == ("s3://shared-models/*",)

    deployment = one(objs, "Deployment")
    container = operator_container(deployment)
    file = env_of(container)["MODELDEPLOY_POLICY_FILE"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "policy")
    assert file == f"{mount['mountPath']}/policy.yaml" and mount["readOnly"] is True
    assert "subPath" not in mount  # a subPath mount would never see an edit
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "policy"
    )
    assert volume["configMap"]["name"] == config["metadata"]["name"]


def test_without_a_policy_the_chart_renders_none(helm: Helm) -> None:
    objs = documents(render_chart(helm))
    assert not [o for o in objs if o["kind"] == "ConfigMap"]
    assert "MODELDEPLOY_POLICY_FILE" not in env_of(operator_container(one(objs, "Deployment")))


def test_the_values_schema_refuses_a_misspelt_policy(helm: Helm) -> None:
    proc = helm("template", "md", CHART, "--set", "policy.namespaces.a.role[0]=x")
    assert proc.returncode != 0
    assert "role" in proc.stderr and "schema" in proc.stderr
