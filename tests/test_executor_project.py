"""Project mode in the executor and at deletion: what a create and a gate decision write into
status; a gate that moved under the operator (stale token, decided in the console) reported as
a Warning, never stalled and never retried with the same token; deletion under
deletionPolicy. The providers' own behaviour is tested against each backend
(test_sagemaker_project.py, test_local_project.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from modeldeploy.providers import ProviderFactory
from modeldeploy.providers.errors import GateMoved, TerminalError
from modeldeploy.reconcile.actions import DecideGate, EnsureProject
from modeldeploy.reconcile.cleanup import cleanup
from modeldeploy.reconcile.executor import execute
from modeldeploy.reconcile.types import Context, Plan, Verdict
from modeldeploy.remote import GateDecision, Project, ProjectRequest
from modeldeploy.spec import parse_spec
from modeldeploy.status import ModelDeploymentStatus, ProjectStatus

CTX = Context("ml", "churn", 3, datetime(2026, 11, 30, tzinfo=UTC))
SPEC = parse_spec(
    {
        "provider": "local",
        "modelPackageGroup": {"name": "churn"},
        "deployment": {"via": "Project", "project": {"name": "churn"}},
    }
)
DECISION = GateDecision("churn", "sagemaker-churn-p-1-modeldeploy", "run-7", "tok", True, "ok")


class Projects:
    """Answers as a backend would; `fail` is raised by decide."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail, self.decided, self.created = fail, [], []

    def create(self, request: ProjectRequest) -> Project:
        self.created.append(request)
        return Project(
            request.name, "p-1", "arn:project/churn", "CreateInProgress", owner=request.owner
        )

    def decide(self, decision: GateDecision) -> None:
        self.decided.append(decision)
        if self.fail:
            raise self.fail


class Provider:
    name = "fake"
    registry = hosting = None  # project actions use neither

    def __init__(self, projects: Projects) -> None:
        self.projects = projects


def run(action, projects: Projects, status: ModelDeploymentStatus | None = None):
    plan = Plan([action], status or ModelDeploymentStatus(), Verdict(None, ""))
    return execute(plan, Provider(projects), SPEC, CTX)  # type: ignore[arg-type]


def test_a_created_project_is_recorded() -> None:
    request = ProjectRequest("churn", "churn", "ml/churn")
    out = run(EnsureProject(request), Projects())
    assert out.status.project is not None
    assert (out.status.project.id, out.status.project.status) == ("p-1", "CreateInProgress")
    assert [e.reason for e in out.events] == ["CreatingProject"]


def test_a_decision_is_recorded_with_its_run_and_version() -> None:
    status = ModelDeploymentStatus(project=ProjectStatus(name="churn", id="p-1"))
    out = run(DecideGate(DECISION, 2), Projects(), status)
    gate = out.status.project.gate
    assert (gate.executionId, gate.version, gate.decision, gate.by) == (
        "run-7",
        2,
        "Approved",
        "modeldeploy",
    )
    assert out.status.project.id == "p-1"  # the rest of the mirror is kept
    assert out.stall is None and out.transient_error is None


def test_a_gate_that_moved_is_a_warning_not_a_stall() -> None:
    projects = Projects(GateMoved("InvalidApprovalTokenException: the token is stale"))
    out = run(DecideGate(DECISION, 2), projects)
    assert len(projects.decided) == 1
    assert out.stall is None and out.transient_error is None
    assert [(e.type, e.reason) for e in out.events] == [("Warning", "GateMoved")]
    assert "token is stale" in out.events[0].message
    assert out.status.project is None or out.status.project.gate is None  # nothing decided


def test_a_refused_decision_stalls_that_decision() -> None:
    out = run(DecideGate(DECISION, 2), Projects(TerminalError("PipelineNotFoundException")))
    assert out.stall is not None
    assert out.stall.key == "gate:run-7:approve"


class DeletingProjects:
    """A project that takes `looks` deletes to go; records what delete was given."""

    def __init__(self, found: Project | None, looks: int = 2) -> None:
        self.found, self.looks, self.deleted = found, looks, []

    def describe(self, name: str) -> Project | None:
        return self.found

    def delete(self, project: Project) -> tuple[bool, str]:
        self.deleted.append(project)
        self.looks -= 1
        return self.looks <= 0, "bucket sagemaker-project-p-1 (the template retains it)"


class Registry:
    def group_arn(self, group: str) -> str | None:
        return None


def body(policy: str = "Delete", status: dict | None = None) -> dict:
    spec = {
        "provider": "local",
        "modelPackageGroup": {"name": "churn"},
        "deployment": {"via": "Project", "project": {"name": "churn"}},
        "deletionPolicy": policy,
    }
    return {"metadata": {"namespace": "ml", "name": "churn"}, "spec": spec, "status": status or {}}


def clean(projects, raw: dict):
    provider = Provider(projects)
    provider.registry = Registry()  # type: ignore[assignment]
    factory = ProviderFactory("local", {"local": lambda spec, read_only: provider})
    return cleanup(raw, factory)


def test_deletion_takes_the_project_until_it_is_gone_and_says_what_stays() -> None:
    projects = DeletingProjects(Project("churn", "p-1", "arn", "CreateCompleted", owner="ml/churn"))
    first = clean(projects, body())
    assert not first.done and first.message == "deleting project churn and its stacks"
    second = clean(projects, body())
    assert second.done
    (deleted,) = [e.message for e in second.events if e.reason == "Deleted"]
    assert "kept: bucket sagemaker-project-p-1" in deleted


def test_a_project_gone_before_its_stacks_is_deleted_by_the_recorded_id() -> None:
    projects = DeletingProjects(None, looks=1)
    status = {"project": {"name": "churn", "id": "p-1", "arn": "arn:project/churn"}}
    assert clean(projects, body(status=status)).done
    assert [p.project_id for p in projects.deleted] == ["p-1"]


def test_another_owners_project_is_left_alone() -> None:
    projects = DeletingProjects(Project("churn", "p-9", "arn", "CreateCompleted", owner="b/x"))
    result = clean(projects, body())
    assert result.done and projects.deleted == []
    assert [e.type for e in result.events] == ["Warning"]


def test_retain_keeps_the_project() -> None:
    projects = DeletingProjects(Project("churn", "p-1", "arn", "CreateCompleted", owner="ml/churn"))
    result = clean(projects, body("Retain"))
    assert result.done and projects.deleted == []
    assert "the project, its stacks and endpoints are kept" in result.events[0].message
