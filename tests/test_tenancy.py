"""Tenants can't touch each other's model package groups: a group belongs to the
ModelDeployment that created or adopted it, and a resource in another namespace naming it
registers nothing into it, approves none of its versions and deploys none of them. Driven
through the kopf handlers with the real local provider."""

from __future__ import annotations

from pathlib import Path

import pytest
from driver import Resource

from modeldeploy import handlers
from modeldeploy.remote import PENDING
from modeldeploy.spec import parse_spec

GROUP = "churn"


@pytest.fixture
def artifacts(tmp_path: Path, model_tar_bytes: bytes) -> tuple[str, str]:
    from conftest import build_model_tar

    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    a.write_bytes(model_tar_bytes)
    b.write_bytes(build_model_tar(rounds=5))
    return f"file://{a}", f"file://{b}"


def deployment(local_providers, namespace: str, artifact: str, **approval) -> Resource:
    spec = {
        "provider": "local",
        "modelPackageGroup": {"name": GROUP},
        "model": {"artifact": artifact},
        "approval": {"policy": "Manual", **approval},
    }
    return Resource(spec, providers=local_providers, name="churn", namespace=namespace)


def test_another_namespace_cannot_register_approve_or_adopt_an_owned_group(
    local_providers, artifacts
) -> None:
    team_a = deployment(local_providers, "team-a", artifacts[0])
    team_a.reconcile_until("PendingApproval")
    assert team_a.status["modelPackageGroup"]["owner"] == "team-a/churn"
    registry = local_providers.built()[0].registry
    arn = team_a.status["latestVersion"]["arn"]

    # Team B names A's group, brings its own model and approves version 1 "as code".
    team_b = deployment(local_providers, "team-b", artifacts[1], approvedVersion=1)
    team_b.reconcile_until("Failed")
    assert team_b.condition("Stalled") == ("True", "GroupOwnedElsewhere")
    assert "belongs to ModelDeployment team-a/churn" in team_b.status["message"]
    assert [e.reason for e in team_b.events if e.type == "Warning"] == ["GroupOwnedElsewhere"]
    # Asking to adopt it changes nothing: adoption is for groups nobody owns.
    team_b.edit_spec(lambda s: s["modelPackageGroup"].update(adopt=True))
    team_b.reconcile_until("Failed")
    assert team_b.condition("Stalled") == ("True", "GroupOwnedElsewhere")

    versions = registry.state.versions(GROUP)
    assert [(v.version, v.approval_status) for v in versions] == [(1, PENDING)]  # A's only
    assert versions[0].arn == arn
    assert registry.group_owner(registry.group_arn(GROUP)) == "team-a/churn"
    assert local_providers.built()[0].hosting.names("team-b") == []  # nothing deployed for B

    # Once team A's resource is deleted, its group is free, and team B may adopt it.
    team_a.call(handlers.on_delete)
    assert registry.group_owner(registry.group_arn(GROUP)) == ""

    def adopt(spec: dict) -> None:
        spec["modelPackageGroup"]["adopt"] = True
        spec["approval"].pop("approvedVersion")

    team_b.edit_spec(adopt)
    team_b.reconcile_until("PendingApproval")
    assert registry.group_owner(registry.group_arn(GROUP)) == "team-b/churn"


def test_an_unowned_group_is_taken_over_only_when_the_spec_adopts_it(
    local_providers, artifacts
) -> None:
    # A training pipeline (or `modeldeploy register`) made the group: nobody owns it.
    res = deployment(local_providers, "ml", artifacts[0])
    provider = local_providers.get(parse_spec(res.raw["spec"]))
    provider.registry.ensure_group(GROUP, None)
    res.reconcile_until("Failed")
    assert res.condition("Stalled") == ("True", "GroupNotAdopted")
    assert provider.registry.state.versions(GROUP) == []  # nothing registered meanwhile
    res.edit_spec(lambda s: s["modelPackageGroup"].update(adopt=True))
    res.reconcile_until("PendingApproval")
    assert res.status["modelPackageGroup"]["owner"] == "ml/churn"
    assert "GroupAdopted" in [e.reason for e in res.events]
    assert provider.registry.group_owner(provider.registry.group_arn(GROUP)) == "ml/churn"


def test_another_namespace_cannot_name_an_endpoint() -> None:
    """Endpoints are named by the operator from namespace/name (with a hash, so sanitising can't
    make two alike), and no spec field names one: a tenant cannot point a stage at another's."""
    from modeldeploy import naming
    from modeldeploy.spec import SpecError

    names = {
        naming.endpoint_name(ns, name, stage)
        for ns, name in (("team-a", "churn"), ("team-b", "churn"), ("team", "a-churn"))
        for stage in ("staging", "production")
    }
    assert len(names) == 6
    spec = {"modelPackageGroup": {"name": GROUP}, "staging": {"endpointName": "team-a-churn"}}
    with pytest.raises(SpecError, match="endpointName"):
        parse_spec(spec)
