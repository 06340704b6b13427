"""The chart's highAvailability values: replicas in kopf's peering with the arguments the CLI
accepts, the peering object and its CRDs, RBAC for exactly that peering resource, and what it
refuses. The live handover is tests/test_ha.py."""

from __future__ import annotations

from typing import Any

import pytest
from deploy_artifacts import (
    CHART,
    EXPECTED_GRANTS,
    NAMESPACE_GRANTS,
    ROOT,
    Helm,
    documents,
    env_of,
    ok,
    one,
    operator_container,
    rbac_grants,
    render_chart,
)

from modeldeploy import peering
from modeldeploy.cli import build_parser

pytest_plugins = ["deploy_artifacts"]

HA = ("--set", "highAvailability.enabled=true")


def test_peering_crd_copy_is_byte_identical_to_the_source() -> None:
    source = ROOT / "crds" / "kopf-peering.yaml"
    copy = CHART / "crds" / "kopf-peering.yaml"
    assert copy.read_bytes() == source.read_bytes(), f"{copy} is stale: run hack/sync-crds.sh"


def test_defaults_stay_one_standalone_replica(chart_default: list[dict[str, Any]]) -> None:
    deployment = one(chart_default, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = operator_container(deployment)
    assert not [a for a in container["args"] if a.startswith("--peering")]
    assert "POD_ID" not in env_of(container)
    assert not [o for o in chart_default if "Peering" in o["kind"]]


def test_cluster_wide_replicas_share_a_cluster_peering(helm: Helm) -> None:
    objs = documents(render_chart(helm, *HA, "--set", "highAvailability.lifetimeSeconds=12"))
    deployment = one(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    container = operator_container(deployment)
    assert "--peering=md-modeldeploy" in container["args"]
    assert "--peering-lifetime=12" in container["args"]
    pod_id = next(e for e in container["env"] if e["name"] == "POD_ID")
    assert pod_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    peering_object = one(objs, "ClusterKopfPeering")
    assert peering_object["apiVersion"] == "kopf.dev/v1"
    assert peering_object["metadata"]["name"] == "md-modeldeploy"
    assert rbac_grants(one(objs, "ClusterRole")) == EXPECTED_GRANTS | {
        ("kopf.dev", "clusterkopfpeerings"): {"list", "watch", "patch"}
    }
    # The rendered arguments are the CLI's own, and mean what the values say.
    args = build_parser().parse_args(["run", *container["args"]])
    peers = peering.from_args(args, environ={})
    assert (peers.name, peers.lifetime) == ("md-modeldeploy", 12)
    assert peers.priority < 0  # derived: the oldest replica is the active one


def test_namespaced_replicas_get_a_peering_in_each_namespace(helm: Helm) -> None:
    values = [*HA, "--set", "watchNamespaces={team-a,team-b}"]
    values += ["--set", "highAvailability.peering=models", "--set", "highAvailability.replicas=3"]
    objs = documents(render_chart(helm, *values))
    assert one(objs, "Deployment")["spec"]["replicas"] == 3
    peerings = [o for o in objs if o["kind"] == "KopfPeering"]
    assert sorted((o["metadata"]["namespace"], o["metadata"]["name"]) for o in peerings) == [
        ("team-a", "models"),
        ("team-b", "models"),
    ]
    assert not [o for o in objs if o["kind"] == "ClusterKopfPeering"]
    assert rbac_grants(one(objs, "ClusterRole")) == EXPECTED_GRANTS | NAMESPACE_GRANTS | {
        ("kopf.dev", "kopfpeerings"): {"list", "watch", "patch"}
    }
    assert "--peering=models" in operator_container(one(objs, "Deployment"))["args"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "watchNamespaces={team-*}"], '"team-*" is a pattern'),
        (["--set", "watchNamespaces={!kube-system}"], "is a pattern"),
        (["--set", "provider=local"], "needs provider sagemaker"),
    ],
    ids=["glob", "negation", "local-provider"],
)
def test_what_high_availability_refuses(helm: Helm, values: list[str], message: str) -> None:
    proc = helm("template", "md", CHART, *HA, *values)
    assert proc.returncode != 0
    assert message in proc.stderr


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("highAvailability.enabled=yes", "enabled"),
        ("highAvailability.replicas=0", "replicas"),
        ("highAvailability.lifetimeSeconds=3", "lifetimeSeconds"),
        ("highAvailability.peering=My_Peering", "peering"),
        ("highAvailability.lease=true", "lease"),
    ],
)
def test_values_schema_refuses_bad_ha_values(helm: Helm, setting: str, field: str) -> None:
    proc = helm("template", "md", CHART, "--set", setting)
    assert proc.returncode != 0, f"{setting} was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert field in proc.stderr


def test_helm_lint_passes_strict_with_high_availability(helm: Helm) -> None:
    out = ok(helm("lint", "--strict", CHART, *HA, "--set", "watchNamespaces={team-a}"))
    assert "1 chart(s) linted, 0 chart(s) failed" in out
