"""The local provider's deployment projects: the counterpart of a SageMaker project made from
the "MLOps template for model deployment", run against real `modeldeploy serve` servers and
real XGBoost models. Its pipeline advances at each describe (the operator observes every few
seconds), so every wait here is a poll of describe with a deadline."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from test_local_provider import expected, heldout, predict

from modeldeploy import naming
from modeldeploy.processes import alive
from modeldeploy.providers.errors import GateMoved, TerminalError
from modeldeploy.providers.local import LocalProvider
from modeldeploy.remote import (
    APPROVED,
    BUILD_STAGE,
    PROD_STAGE,
    REJECTED,
    SOURCE_STAGE,
    STAGING_STAGE,
    GateDecision,
    ObserveHint,
    Project,
    ProjectRequest,
)
from modeldeploy.spec import parse_spec
from modeldeploy.training.train import train

GROUP = "churn"
OWNER = "ml/churn"
WAIT = 90.0


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two real models with different bytes, as `modeldeploy train` writes them."""
    root = tmp_path_factory.mktemp("models")
    return train(root / "a", progress=False), train(root / "b", seed=1, progress=False)


@pytest.fixture
def provider(local_dir: Path) -> Iterator[LocalProvider]:
    """A supervising local provider with the group made; every server it started is stopped."""
    made = LocalProvider(local_dir)
    made.registry.ensure_group(GROUP, None, OWNER)
    yield made
    for name in made.hosting.names(""):
        made.hosting.delete(name)


def register(provider: LocalProvider, model, approve: bool = True) -> int:
    spec = parse_spec(
        {"modelPackageGroup": {"name": GROUP}, "model": {"artifact": f"file://{model.model_tar}"}}
    )
    version = provider.registry.register_version(spec)
    if approve:
        provider.registry.set_approval(version.arn, APPROVED, "good")
    return version.version


def set_approval(provider: LocalProvider, number: int, status: str) -> None:
    arn = next(v.arn for v in provider.state.versions(GROUP) if v.version == number)
    provider.registry.set_approval(arn, status, "")


def create(provider: LocalProvider, name: str = "churn", **request) -> Project:
    return provider.projects.create(ProjectRequest(name=name, group=GROUP, owner=OWNER, **request))


def wait_for(
    provider: LocalProvider, name: str, done: Callable[[Project], bool], what: str
) -> Project:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        project = provider.projects.describe(name)
        if project is not None and done(project):
            return project
        time.sleep(0.2)
    raise AssertionError(f"{what} never happened: {provider.projects.describe(name)}")


def at_gate(project: Project) -> bool:
    gate = project.gate
    return gate is not None and gate.status == "InProgress" and bool(gate.token)


def run_over(execution_id: str) -> Callable[[Project], bool]:
    return lambda p: p.execution(execution_id).status != "InProgress"


def decision(project: Project, token: str, approve: bool = True) -> GateDecision:
    execution = project.stage(STAGING_STAGE).execution_id
    return GateDecision(project.name, project.pipeline, execution, token, approve, "looks good")


def project_spec(name: str = "churn"):
    return parse_spec(
        {
            "provider": "local",
            "modelPackageGroup": {"name": GROUP},
            "deployment": {"via": "Project", "project": {"name": name}},
        }
    )


def test_project_deploys_staging_waits_at_the_gate_then_prod(models, provider, local_dir):
    made = create(provider)
    assert made.status == "CreateInProgress"
    assert made.project_id.startswith("p-") and len(made.project_id) == 14
    assert made.pipeline == f"sagemaker-churn-{made.project_id}-modeldeploy"
    project = provider.projects.describe("churn")
    # The first run starts at CreateCompleted and fails at Build: nothing is approved yet.
    assert project.status == "CreateCompleted"
    assert [e.status for e in project.executions] == ["Failed"]
    assert project.executions[0].summary == (
        f"No approved ModelPackage found for ModelPackageGroup: {GROUP}"
    )
    assert project.stage(SOURCE_STAGE).status == "Succeeded"
    assert project.stage(BUILD_STAGE).status == "Failed"
    assert project.stage(STAGING_STAGE).status == "" and project.gate.status == ""
    assert project.staging is None and project.staging_stack is None

    register(provider, models[0])  # approved: the rule starts a run
    project = wait_for(provider, "churn", at_gate, "staging deployed, gate waiting")
    assert len(project.executions) == 2 and project.executions[0].status == "InProgress"
    assert project.stage(STAGING_STAGE).execution_id == project.executions[0].execution_id
    assert project.gate.summary == "Approve this model for Production"
    assert project.staging.name == "churn-staging" and project.staging.status == "InService"
    assert project.staging.served_version == 1
    assert project.staging_stack.name == f"sagemaker-churn-{made.project_id}-deploy-staging"
    assert project.staging_stack.status == "CREATE_COMPLETE"
    assert project.production is None and project.production_stack is None
    features, payload = heldout(models[0])
    np.testing.assert_allclose(
        predict(project.staging.url, payload), expected(models[0], features), atol=1e-6
    )

    # The operator reads the project's endpoints as the stages' in project mode.
    observed = provider.observe(project_spec(), ObserveHint(), namespace="ml", name="churn")
    assert observed.project.project_id == made.project_id
    assert observed.staging.name == "churn-staging" and observed.staging.served_version == 1

    with pytest.raises(GateMoved, match="InvalidApprovalTokenException"):
        provider.projects.decide(decision(project, "00000000-0000-4000-8000-000000000000"))
    provider.projects.decide(decision(project, project.gate.token))
    with pytest.raises(GateMoved, match="ApprovalAlreadyCompletedException"):
        provider.projects.decide(decision(project, project.gate.token))
    run = project.executions[0].execution_id
    project = wait_for(provider, "churn", run_over(run), "the run finishing")
    assert project.execution(run).status == "Succeeded"
    assert project.gate.status == "Succeeded" and project.gate.updated_by == "modeldeploy"
    assert project.stage(PROD_STAGE).status == "Succeeded"
    assert project.production.name == "churn-prod" and project.production.served_version == 1
    assert project.production_stack.status == "CREATE_COMPLETE"
    np.testing.assert_allclose(
        predict(project.production.url, payload), expected(models[0], features), atol=1e-6
    )

    assert_deleted(provider, project, local_dir)


def assert_deleted(provider: LocalProvider, project: Project, local_dir: Path) -> None:
    """Delete: both servers stop, the directory goes, nothing is left behind."""
    rows = [provider.state.endpoint(n) for n in ("churn-staging", "churn-prod")]
    assert all(row and alive(row.pid, arg=row.model) for row in rows)
    assert provider.projects.delete(project) == (True, "")
    assert not (local_dir / "projects" / "churn").exists()
    assert provider.projects.describe("churn") is None
    assert provider.hosting.names("churn-") == []
    assert not any(alive(row.pid, arg=row.model) for row in rows)


def test_newer_approval_supersedes_the_waiting_run_and_reject_keeps_prod(models, provider):
    register(provider, models[0])
    create(provider)
    first = wait_for(provider, "churn", at_gate, "run 1 at the gate")
    first_run, first_token = first.executions[0].execution_id, first.gate.token
    assert first.staging.served_version == 1

    register(provider, models[1])  # version 2, approved while run 1 waits
    second = wait_for(
        provider,
        "churn",
        lambda p: at_gate(p) and p.staging.served_version == 2,
        "run 2 serving version 2 at the gate",
    )
    assert second.execution(first_run).status == "Superseded"
    assert second.executions[0].status == "InProgress"
    assert second.staging_stack.status == "UPDATE_COMPLETE"
    with pytest.raises(GateMoved):
        provider.projects.decide(decision(first, first_token))
    features, payload = heldout(models[0])
    np.testing.assert_allclose(
        predict(second.staging.url, payload), expected(models[1], features), atol=1e-6
    )
    provider.projects.decide_as("churn", True, "ship it", by="alice")
    second = wait_for(provider, "churn", run_over(second.executions[0].execution_id), "run 2 done")
    assert second.executions[0].status == "Succeeded"
    assert second.gate.updated_by == "alice" and second.gate.summary == "ship it"
    prod = second.production
    assert prod.served_version == 2

    # Version 1 rejected: a new run (Build still picks 2), rejected at the gate.
    set_approval(provider, 1, REJECTED)
    third = wait_for(
        provider,
        "churn",
        lambda p: len(p.executions) == 3 and at_gate(p),
        "run 3 at the gate",
    )
    provider.projects.decide_as("churn", False, "not this week", by="bob")
    third = provider.projects.describe("churn")
    assert third.executions[0].status == "Failed"
    assert third.executions[0].summary == "not this week"
    assert third.gate.status == "Failed" and third.stage(STAGING_STAGE).status == "Failed"
    assert third.production.config_name == prod.config_name
    assert third.production.served_version == 2 and third.production.url == prod.url
    assert third.stage(PROD_STAGE).execution_id == second.executions[0].execution_id
    with pytest.raises(TerminalError, match="no approval waits"):
        provider.projects.decide_as("churn", True, "", by="bob")


def test_config_edits_start_a_run_that_uses_them(models, provider, local_dir):
    register(provider, models[0])
    create(provider)
    first = wait_for(provider, "churn", at_gate, "run 1 at the gate")
    repo = local_dir / "projects" / "churn" / "repo"
    config = json.loads((repo / "staging-config.json").read_text())
    assert config == {
        "Parameters": {
            "StageName": "staging",
            "EndpointInstanceCount": "1",
            "EndpointInstanceType": "ml.m5.large",
        }
    }
    config["Parameters"]["EndpointInstanceCount"] = "2"
    (repo / "staging-config.json").write_text(json.dumps(config))
    arn = provider.state.versions(GROUP)[0].arn
    wanted = naming.config_name(
        "churn-staging", {"version": arn, "instanceType": "ml.m5.large", "instanceCount": 2}
    )
    second = wait_for(
        provider,
        "churn",
        lambda p: at_gate(p) and p.staging.config_name == wanted,
        "run 2 on two instances at the gate",
    )
    assert second.execution(first.executions[0].execution_id).status == "Superseded"
    assert second.staging.served_version == 1

    (repo / "prod-config.json").write_text('{"Parameters": {')
    third = wait_for(provider, "churn", lambda p: p.executions[0].status == "Failed", "run 3")
    assert len(third.executions) == 3
    assert third.stage(SOURCE_STAGE).status == "Failed"
    source = third.stage(SOURCE_STAGE).action("ModelDeployInfraCode")
    assert source.status == "Failed"
    assert source.summary.startswith("prod-config.json: invalid JSON")
    assert third.executions[0].summary == source.summary
    assert third.staging.config_name == wanted  # nothing deployed by the failed run


def test_create_refusals_and_idempotence(provider, local_dir):
    made = create(provider)
    assert create(provider).project_id == made.project_id  # a retry returns it
    with pytest.raises(TerminalError, match=r"ModelDeployment ml/churn.*project\.name"):
        provider.projects.create(ProjectRequest(name="churn", group=GROUP, owner="ml/other"))
    for template in (
        {"template_product_name": "MLOps template for model building and training"},
        {"template_product_name": None, "product_id": "prod-abc"},
        {"template_product_name": None, "template_url": "https://example.com/t.yaml"},
    ):
        with pytest.raises(TerminalError, match="only 'MLOps template for model deployment'"):
            create(provider, name="other", **template)
    with pytest.raises(TerminalError, match="nosuch does not exist"):
        provider.projects.create(ProjectRequest(name="x", group="nosuch", owner=OWNER))
    assert sorted(p.name for p in (local_dir / "projects").iterdir()) == [".lock", "churn"]
    assert create(provider, name="plain", template_product_name=None).status == "CreateInProgress"
    # Private: 0700 directories, 0600 files.
    for path in (local_dir / "projects" / "churn").rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
    assert stat.S_IMODE((local_dir / "projects" / "churn").stat().st_mode) == 0o700


def test_preview_describes_without_advancing_and_refuses_changes(provider, local_dir):
    made = create(provider)
    record = local_dir / "projects" / "churn" / "project.json"
    before = record.read_bytes()
    preview = LocalProvider(local_dir, supervise=False)
    seen = preview.projects.describe("churn")
    assert seen.status == "CreateInProgress" and seen.executions == ()
    assert preview.projects.describe("nosuch") is None
    assert record.read_bytes() == before
    with pytest.raises(TerminalError, match="read-only"):
        preview.projects.create(ProjectRequest(name="new", group=GROUP, owner=OWNER))
    with pytest.raises(TerminalError, match="read-only"):
        preview.projects.decide(GateDecision("churn", made.pipeline, "e", "t", True, ""))
    with pytest.raises(TerminalError, match="read-only"):
        preview.projects.delete(made)
    assert record.read_bytes() == before
    assert not (local_dir / "projects" / "new").exists()
    # The supervising provider then advances it.
    assert provider.projects.describe("churn").status == "CreateCompleted"
    assert preview.projects.describe("churn").executions[0].status == "Failed"


def test_endpoint_that_fails_rolls_the_stack_back(models, provider):
    number = register(provider, models[0], approve=False)
    version = provider.state.versions(GROUP)[0]
    Path(version.artifact).write_bytes(b"not a tar")  # the stored copy is damaged on disk
    create(provider)
    provider.projects.describe("churn")  # the first run: nothing approved yet
    set_approval(provider, number, APPROVED)
    project = wait_for(provider, "churn", lambda p: p.executions[0].status == "Failed", "run 2")
    assert len(project.executions) == 2
    assert project.staging_stack.status == "ROLLBACK_COMPLETE"
    assert "server did not start" in project.staging_stack.reason
    deploy = project.stage(STAGING_STAGE).action("DeployResourcesStaging")
    assert deploy.status == "Failed" and project.staging_stack.reason in deploy.summary
    assert project.stage(STAGING_STAGE).status == "Failed"
    assert project.staging is None  # the rollback deleted what the create made
    assert project.gate.status == ""
