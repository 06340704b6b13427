"""`modeldeploy plan` changes nothing: not the local provider's SQLite or its server processes,
and no mutating AWS call for the sagemaker provider. Real servers, a real SQLite file, and the
AWS emulator over HTTP."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from emulator import ROLE_ARN
from providers import deploy_request, recorded

from modeldeploy import naming
from modeldeploy.preview import preview, preview_file
from modeldeploy.processes import alive
from modeldeploy.providers import ProviderFactory
from modeldeploy.providers.errors import TerminalError
from modeldeploy.providers.local import LocalProvider
from modeldeploy.providers.local.hosting_process import ping
from modeldeploy.remote import APPROVED, DeployRequest, ModelVersion
from modeldeploy.spec import parse_spec

NS, NAME, GROUP = "demo", "bc", "breast-cancer"
READ = re.compile(r"^(List|Describe|Get|Head)")


def manifest(artifact: str, provider: str, **spec: object) -> dict:
    return {
        "apiVersion": "mlops.modeldeploy.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"namespace": NS, "name": NAME, "generation": 2},
        "spec": {
            "provider": provider,
            "modelPackageGroup": {"name": GROUP},
            "model": {"artifact": artifact, "frameworkVersion": "3.2-0"},
            "approval": {"approvedVersion": 1},
            "production": {"promotedVersion": 1},
            **spec,
        },
    }


def request_for(version: ModelVersion, stage: str) -> DeployRequest:
    endpoint = naming.endpoint_name(NS, NAME, stage)
    return deploy_request(version, endpoint, stage=stage, role_arn=ROLE_ARN)


# -- local --------------------------------------------------------------------------------------


@pytest.fixture
def local_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELDEPLOY_LOCAL_DIR", str(tmp_path / "local"))
    monkeypatch.delenv("MODELDEPLOY_LOCAL_HOSTING", raising=False)
    return tmp_path / "local"


@pytest.fixture
def operator(local_dir: Path) -> Iterator[LocalProvider]:
    """The operator's own (supervising) provider; every server it started is stopped after."""
    provider = LocalProvider(local_dir)
    yield provider
    for name in provider.hosting.names(""):
        provider.hosting.delete(name)


def row(provider: LocalProvider, name: str):
    return provider.state.endpoint(name)


def wait(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def snapshot(provider: LocalProvider, local_dir: Path) -> tuple:
    """Every row of every table, the database and WAL files' bytes, and our server processes."""
    rows = provider.state.dump()
    files = {
        p.name: p.read_bytes() for p in local_dir.glob("registry.db*") if not p.name.endswith("shm")
    }
    servers = set()  # live processes whose command line names the state directory
    for proc in Path("/proc").iterdir():
        try:
            mine = str(local_dir).encode() in (proc / "cmdline").read_bytes()
            if mine and (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
                servers.add(int(proc.name))
        except (OSError, ValueError):
            continue
    return rows, files, servers


def test_local_preview_reports_what_it_sees_and_changes_nothing(
    operator: LocalProvider, local_dir: Path, tmp_path: Path, model_tar_bytes: bytes, capsys
) -> None:
    tar = tmp_path / "model.tar.gz"
    tar.write_bytes(model_tar_bytes)
    doc = manifest(f"file://{tar}", "local")
    spec = parse_spec(doc["spec"])
    operator.registry.ensure_group(GROUP, None, f"{NS}/{NAME}")
    version = operator.registry.register_version(spec)
    operator.registry.set_approval(version.arn, APPROVED, "test")
    staging, production = request_for(version, "staging"), request_for(version, "production")

    # Production served, then its process died; the supervisor has not looked since.
    operator.hosting.deploy(production)
    wait(lambda: operator.hosting.describe(production.endpoint_name).status == "InService", "it")
    dead = row(operator, production.endpoint_name).pid
    os.kill(dead, signal.SIGKILL)
    wait(lambda: not alive(dead, arg=row(operator, production.endpoint_name).model), "its death")
    # Staging was just created and answers /ping, but no look has recorded it as InService.
    operator.hosting.deploy(staging)
    wait(lambda: ping(row(operator, staging.endpoint_name).port), "/ping")
    assert row(operator, staging.endpoint_name).status == "Creating"

    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump(doc))
    before = snapshot(operator, local_dir)
    assert preview_file(path) == 0
    assert snapshot(operator, local_dir) == before
    assert dead not in before[2]  # nobody restarted it

    out = capsys.readouterr().out
    assert f"{staging.endpoint_name} InService" in out
    assert f"{production.endpoint_name} SystemUpdating (server process {dead} exited" in out
    assert f"latest version {version.version} Approved" in out

    # The state was one a supervising check acts on: the operator records and restarts.
    assert operator.hosting.describe(staging.endpoint_name).status == "InService"
    assert operator.hosting.describe(production.endpoint_name).status == "SystemUpdating"
    assert row(operator, production.endpoint_name).pid != dead
    assert snapshot(operator, local_dir) != before


def test_local_preview_before_any_state_creates_none(
    local_dir: Path, tmp_path: Path, capsys
) -> None:
    providers = ProviderFactory(default="local", read_only=True)
    assert preview(manifest("file:///models/model.tar.gz", "local"), providers) == 0
    assert "group does not exist yet" in capsys.readouterr().out
    assert not local_dir.exists()
    provider = providers.get(parse_spec(manifest("file:///m.tar.gz", "local")["spec"]))
    with pytest.raises(TerminalError, match="read-only"):
        provider.registry.ensure_group(GROUP, None, f"{NS}/{NAME}")
    assert not local_dir.exists()


def test_local_preview_lists_the_project_it_would_create(
    operator: LocalProvider, local_dir: Path, tmp_path: Path, model_tar_bytes: bytes, capsys
) -> None:
    """Project mode: the plan names the project to create, and creates nothing."""
    tar = tmp_path / "model.tar.gz"
    tar.write_bytes(model_tar_bytes)
    doc = manifest(
        f"file://{tar}", "local", deployment={"via": "Project", "project": {"name": "bc"}}
    )
    spec = parse_spec(doc["spec"])
    operator.registry.ensure_group(GROUP, None, f"{NS}/{NAME}")
    version = operator.registry.register_version(spec)
    operator.registry.set_approval(version.arn, APPROVED, "test")
    del doc["spec"]["model"]  # registered above: the plan goes on to the project
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump(doc))
    before = snapshot(operator, local_dir)

    assert preview_file(path) == 0

    out = capsys.readouterr().out
    assert (
        "create SageMaker project bc from 'MLOps template for model deployment' for model "
        f"package group {GROUP}, owned by {NS}/{NAME}" in out
    )
    assert snapshot(operator, local_dir) == before
    assert not (local_dir / "projects").exists()


# -- sagemaker ----------------------------------------------------------------------------------


def test_sagemaker_preview_makes_only_read_calls(
    aws_env, model_artifact: str, role_arn: str, capsys
) -> None:
    doc = manifest(model_artifact, "sagemaker", region="us-east-1", roleArn=role_arn)
    spec = parse_spec(doc["spec"])
    operator = ProviderFactory(default="sagemaker").get(spec)
    operator.registry.ensure_group(GROUP, None, f"{NS}/{NAME}")
    version = operator.registry.register_version(spec)
    operator.registry.set_approval(version.arn, APPROVED, "test")
    staging = request_for(version, "staging")
    operator.hosting.deploy(staging)

    providers = ProviderFactory(default="sagemaker", read_only=True)
    provider = providers.get(spec)
    assert provider is not operator
    with recorded(provider.registry.sm, provider.registry.s3) as calls:
        assert preview(doc, providers) == 0
    assert calls and "ListModelPackages" in calls
    assert [c for c in calls if not READ.match(c)] == []
    out = capsys.readouterr().out
    assert f"{staging.endpoint_name} InService" in out
    assert "next pass would:" in out  # production is promoted but not deployed yet
