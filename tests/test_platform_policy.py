"""The platform policy: a namespace uses only the roles, artifact locations and regions the
platform team granted it. Refusals are judged before any provider is built (nothing is read or
written with a refused role), say what was refused and what is granted, and lift as soon as the
policy file grants it. Driven through the kopf handlers with the real local provider."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from driver import Resource

from modeldeploy import handlers
from modeldeploy.policy import PolicyError, PolicySource, load_policy
from modeldeploy.spec import parse_spec

ROLE_A = "arn:aws:iam::111111111111:role/team-a-deploy"
ROLE_B = "arn:aws:iam::222222222222:role/team-b-deploy"


def write_policy(path: Path, models: Path, extra: str = "") -> Path:
    path.write_text(
        f"""namespaces:
  team-a:
    roles: ["arn:aws:iam::111111111111:role/team-a-*"]
    locations: ["file://{models}/team-a/*", "s3://team-a-models/*"]
    regions: ["eu-west-1"]
  "team-*":  # every other team: its own directory, no role, no region
    locations: ["file://{models}/team-b/*"]
{extra}"""
    )
    return path


@pytest.fixture
def models(tmp_path: Path, model_tar_bytes: bytes) -> Path:
    for team in ("team-a", "team-b"):
        (tmp_path / "models" / team).mkdir(parents=True)
        (tmp_path / "models" / team / "model.tar.gz").write_bytes(model_tar_bytes)
    return tmp_path / "models"


@pytest.fixture
def policy(tmp_path: Path, models: Path) -> PolicySource:
    return PolicySource(write_policy(tmp_path / "policy.yaml", models))


def local(namespace: str, artifact: str, local_providers, policy) -> Resource:
    spec = {
        "provider": "local",
        "modelPackageGroup": {"name": f"{namespace}-churn"},
        "model": {"artifact": artifact},
    }
    return Resource(spec, providers=local_providers, namespace=namespace, policy=policy)


def test_a_namespace_reads_only_its_granted_locations_until_the_policy_grants_more(
    tmp_path: Path, models: Path, local_providers, policy
) -> None:
    theirs = f"file://{models}/team-a/model.tar.gz"
    res = local("team-b", theirs, local_providers, policy)
    res.reconcile_until("Failed")
    assert res.condition("Stalled") == ("True", "PolicyDenied")
    message = res.status["message"]
    assert message.startswith(f"spec.model.artifact {theirs} (granted: file://{models}/team-b/*)")
    assert "not granted to namespace team-b by the platform policy" in message
    assert "change the spec" not in message  # the policy may change instead
    assert [e.reason for e in res.events if e.type == "Warning"] == ["PolicyDenied"]
    assert local_providers.built() == []  # nothing was read or written for it

    res.call(handlers.on_change)  # judged again each pass: one Event, not one per pass
    assert [e.reason for e in res.events if e.type == "Warning"] == ["PolicyDenied"]

    # The platform team grants team-b team-a's directory: the next pass goes on, same spec.
    grant = f'  team-b:\n    locations: ["file://{models}/team-*"]\n'
    write_policy(tmp_path / "policy.yaml", models, extra=grant)
    os.utime(tmp_path / "policy.yaml", ns=(0, 1))  # a new stamp even within one mtime tick
    res.reconcile_until("PendingApproval")
    assert res.status.get("stalled") is None
    assert res.condition("Stalled")[0] == "False"


@pytest.mark.parametrize("trick", ["dotdot", "symlink"])
def test_a_path_cannot_step_out_of_a_granted_directory(
    models: Path, local_providers, policy, trick: str
) -> None:
    if trick == "dotdot":
        artifact = f"file://{models}/team-b/../team-a/model.tar.gz"
    else:
        (models / "team-b" / "link.tar.gz").symlink_to(models / "team-a" / "model.tar.gz")
        artifact = f"file://{models}/team-b/link.tar.gz"
    res = local("team-b", artifact, local_providers, policy)
    res.reconcile_until("Failed")
    assert res.condition("Stalled") == ("True", "PolicyDenied")
    assert local_providers.built() == []


def test_a_granted_location_is_delivered(models: Path, local_providers, policy) -> None:
    res = local("team-b", f"file://{models}/team-b/model.tar.gz", local_providers, policy)
    res.reconcile_until("PendingApproval")
    assert res.status["latestVersion"]["version"] == 1


def test_roles_regions_and_buckets_of_others_are_refused_before_any_call(
    local_providers, policy
) -> None:
    spec = {
        "provider": "sagemaker",
        "region": "us-east-1",
        "roleArn": ROLE_A,
        "modelPackageGroup": {"name": "churn"},
        "model": {"artifact": "s3://team-a-models/churn/model.tar.gz"},
        "staging": {"dataCaptureDestination": "s3://team-a-models/capture"},
    }
    res = Resource(spec, providers=local_providers, namespace="team-b", policy=policy)
    res.reconcile_until("Failed")
    message = res.status["message"]
    for refused in (
        f"spec.roleArn {ROLE_A} (granted: none)",
        "spec.region us-east-1 (granted: none)",
        "spec.model.artifact s3://team-a-models/churn/model.tar.gz",
        "spec.staging.dataCaptureDestination s3://team-a-models/capture",
    ):
        assert refused in message
    assert local_providers.built() == []  # no client was made with team-a's role

    # team-a may use its role and bucket, but not a region it was not granted.
    res = Resource(
        {**spec, "region": "us-west-2"},
        providers=local_providers,
        namespace="team-a",
        policy=policy,
    )
    res.reconcile_until("Failed")
    assert res.status["message"].startswith("spec.region us-west-2 (granted: eu-west-1):")


def test_a_namespace_without_an_entry_may_use_nothing(tmp_path: Path, models: Path) -> None:
    policy = load_policy(write_policy(tmp_path / "policy.yaml", models))
    spec = parse_spec({"provider": "local", "modelPackageGroup": {"name": "g"}})
    assert policy.refusal("team-c", spec) is None  # "team-*" matches it, nothing is named
    refusal = policy.refusal("prod", spec)
    assert refusal and refusal.startswith("namespace prod has no entry in the platform policy")
    assert policy.grant_for("team-a") == policy.namespaces["team-a"]  # its own, not the glob


def test_without_a_policy_file_everything_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELDEPLOY_POLICY_FILE", raising=False)
    assert PolicySource.from_env().current() is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("namespaces: [a, b]\n", "namespaces: Input should be a valid dictionary"),
        ("namespaces:\n  a:\n    buckets: [x]\n", "namespaces.a.buckets: Extra inputs"),
        ("- a\n", "is not a mapping with `namespaces:`"),
        ("namespaces: {a: [\n", "cannot read the platform policy"),
    ],
)
def test_a_broken_policy_file_is_named_with_its_fault(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=f"{path}.*") as err:
        load_policy(path)
    assert says in str(err.value)


def test_a_broken_edit_keeps_the_policy_read_before(tmp_path: Path, models: Path) -> None:
    path = write_policy(tmp_path / "policy.yaml", models)
    source = PolicySource(path)
    path.write_text("namespaces: [oops]\n")
    os.utime(path, ns=(0, 1))
    assert source.current() is not None
    assert "team-a" in source.current().namespaces


def test_the_operator_refuses_to_start_with_a_broken_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("namespaces:\n  a:\n    role: [x]\n")
    env = {**os.environ, "MODELDEPLOY_POLICY_FILE": str(path), "KUBECONFIG": "/nonexistent"}
    run = subprocess.run(
        [sys.executable, "-m", "modeldeploy", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"modeldeploy run: the platform policy {path}: namespaces.a.role: Extra inputs are not "
        "permitted"
    ]
