"""Table tests of the planner in project mode: (spec, status, observed project) -> actions,
phase, conditions and Events. A project's pipeline deploys; the operator decides its gate."""

from __future__ import annotations

import dataclasses

from test_planner import GROUP_ARN, ctx, observed, plan, version
from test_planner import spec as direct_spec

from modeldeploy.reconcile.actions import DecideGate, EnsureProject, SmokeTest
from modeldeploy.reconcile.conditions import condition
from modeldeploy.remote import (
    PROJECT_TEMPLATE,
    Endpoint,
    PipelineAction,
    PipelineExecution,
    PipelineStage,
    Project,
    Stack,
)

NAME = "churn"
PIPELINE = "sagemaker-churn-p-abc123def456-modeldeploy"
STAGING_STACK = "sagemaker-churn-p-abc123def456-deploy-staging"
PROD_STACK = "sagemaker-churn-p-abc123def456-deploy-prod"
V1, V2 = version(1), version(2)
RUNNING = (PipelineExecution("run-1", "InProgress"),)


def spec(**overrides):
    """test_planner's spec, deployed by the project `churn`."""
    return direct_spec(**{"deployment": {"via": "Project", "project": {"name": NAME}}, **overrides})


def endpoint(stage: str, v, status: str = "InService", **kw) -> Endpoint:
    name = f"{NAME}-{stage}"
    return Endpoint(name, status, f"{name}-config-{v.version}", served_version=v.version, **kw)


def pipeline(
    run: str = "run-1",
    staging: str = "Succeeded",
    gate: str = "InProgress",
    prod: str = "",
    *,
    token: str = "tok-1",
    gate_summary: str = "",
    updated_by: str = "",
    build: str = "Succeeded",
    build_summary: str = "",
) -> tuple[PipelineStage, ...]:
    ran = bool(staging)
    return (
        PipelineStage(
            "Source", "Succeeded", run, (PipelineAction("ModelDeployInfraCode", "Succeeded"),)
        ),
        PipelineStage(
            "Build", build, run, (PipelineAction("BuildDeploymentTemplates", build, build_summary),)
        ),
        PipelineStage(
            "DeployStaging",
            ("InProgress" if gate == "InProgress" else staging) if ran else "",
            run if ran else "",
            (
                PipelineAction("DeployResourcesStaging", staging),
                PipelineAction("TestStaging", "Succeeded" if staging == "Succeeded" else ""),
                PipelineAction(
                    "ApproveDeployment",
                    gate,
                    gate_summary,
                    token=token if gate == "InProgress" else "",
                    updated_by=updated_by,
                ),
            ),
        ),
        PipelineStage(
            "DeployProd", prod, run if prod else "", (PipelineAction("DeployResourcesProd", prod),)
        ),
    )


def project(
    *,
    status: str = "CreateCompleted",
    stages=(),
    staging: Endpoint | None = None,
    production: Endpoint | None = None,
    executions=RUNNING,
    owner: str = "ml/churn",
    message: str = "",
    staging_stack: Stack | None = None,
) -> Project:
    return Project(
        name=NAME,
        project_id="p-abc123def456",
        arn="arn:aws:sagemaker:us-east-1:123456789012:project/churn",
        status=status,
        message=message,
        owner=owner,
        group="churn",
        pipeline=PIPELINE,
        stages=stages,
        executions=executions,
        staging_stack=staging_stack
        or (Stack(STAGING_STACK, "CREATE_COMPLETE") if staging else None),
        production_stack=Stack(PROD_STACK, "CREATE_COMPLETE") if production else None,
        staging=staging,
        production=production,
    )


def obs(p: Project | None, *versions):
    return observed(GROUP_ARN, versions or (V1,), project=p)


def smoke_passed(v=V1) -> dict:
    return {
        "staging": {
            "endpointName": f"{NAME}-staging",
            "endpointConfigName": f"{NAME}-staging-config-{v.version}",
            "version": v.version,
            "smokeTest": {
                "passed": True,
                "version": v.version,
                "configName": f"{NAME}-staging-config-{v.version}",
                "generation": 1,
                "latencyMs": 9.0,
            },
        }
    }


def waiting_at_gate(**kw) -> Project:
    return project(stages=pipeline(**kw), staging=endpoint("staging", V1))


def gate_actions(planned) -> list[DecideGate]:
    return [a for a in planned.actions if isinstance(a, DecideGate)]


def test_a_missing_project_is_created_from_the_built_in_template() -> None:
    p = plan(spec(), {}, obs(None), ctx())
    (action,) = p.actions
    assert isinstance(action, EnsureProject)
    r = action.request
    assert (r.name, r.group, r.owner, r.template_product_name) == (
        NAME,
        "churn",
        "ml/churn",
        PROJECT_TEMPLATE,
    )
    assert p.status["phase"] == "DeployingStaging"
    assert condition(p.status["conditions"], "StagingReady")["reason"] == "CreatingProject"


def test_a_product_id_replaces_the_template_name_and_parameters_are_passed() -> None:
    deployment = {
        "via": "Project",
        "project": {"name": NAME, "productId": "prod-abc", "parameters": {"Owner": "ml"}},
    }
    (action,) = plan(spec(deployment=deployment), {}, obs(None), ctx()).actions
    assert action.request.template_product_name is None
    assert action.request.product_id == "prod-abc"
    assert action.request.parameters == (("Owner", "ml"),)


def test_a_project_being_created_is_waited_for() -> None:
    p = plan(spec(), {}, obs(project(status="CreateInProgress")), ctx())
    assert p.actions == []
    assert p.status["phase"] == "DeployingStaging"
    assert p.status["project"]["status"] == "CreateInProgress"
    assert p.requeue_after == 30.0


def test_a_failed_project_stalls_with_its_own_message() -> None:
    failed = project(status="CreateFailed", message="Access denied while assuming the role")
    p = plan(spec(), {}, obs(failed), ctx())
    assert p.actions == []
    assert p.status["phase"] == "Failed"
    assert "CreateFailed: Access denied while assuming the role" in p.status["message"]
    assert condition(p.status["conditions"], "Stalled")["reason"] == "ProjectFailed"


def test_a_project_of_another_resource_is_not_used() -> None:
    p = plan(spec(), {}, obs(project(owner="team-b/churn")), ctx())
    assert p.actions == []
    assert p.status["phase"] == "Failed"
    assert "belongs to team-b/churn" in p.status["message"]


def test_a_build_without_an_approved_version_says_so() -> None:
    stages = pipeline(
        staging="", gate="", build="Failed", build_summary="No approved ModelPackage found"
    )
    p = plan(spec(), {}, obs(project(stages=stages), version(1, "PendingManualApproval")), ctx())
    assert (
        "Build/BuildDeploymentTemplates: No approved ModelPackage found"
        in (condition(p.status["conditions"], "StagingReady")["message"])
    )


def test_the_pipeline_deploying_staging_is_deploying_staging() -> None:
    stages = pipeline(staging="InProgress", gate="")
    running = project(stages=stages, staging_stack=Stack(STAGING_STACK, "CREATE_IN_PROGRESS"))
    p = plan(spec(), {}, obs(running), ctx())
    assert p.status["phase"] == "DeployingStaging"
    assert f"stack {STAGING_STACK} is CREATE_IN_PROGRESS" in p.status["message"]
    assert p.status["project"]["stages"][2]["actions"][0]["status"] == "InProgress"


def test_staging_served_by_the_pipeline_is_smoke_tested() -> None:
    p = plan(spec(), {}, obs(waiting_at_gate()), ctx())
    (smoke,) = p.actions
    assert isinstance(smoke, SmokeTest) and smoke.endpoint_name == f"{NAME}-staging"
    assert p.status["staging"]["version"] == 1
    assert p.status["phase"] == "Testing"


def test_a_version_waiting_at_the_gate_is_offered_for_promotion() -> None:
    p = plan(spec(), smoke_passed(), obs(waiting_at_gate()), ctx())
    assert p.actions == []
    assert p.status["phase"] == "AwaitingPromotion"
    assert "set spec.production.promotedVersion: 1 to approve it" in p.status["message"]


def test_promoting_the_staged_version_approves_the_gate_with_its_token() -> None:
    s = spec(production={"promotedVersion": 1})
    p = plan(s, smoke_passed(), obs(waiting_at_gate()), ctx())
    (gate,) = gate_actions(p)
    d = gate.decision
    assert (d.approve, d.token, d.execution_id, d.pipeline, gate.version) == (
        True,
        "tok-1",
        "run-1",
        PIPELINE,
        1,
    )
    assert "spec.production.promotedVersion of ModelDeployment ml/churn" in d.summary
    assert p.status["phase"] == "Promoting"


def test_the_gate_is_not_approved_before_the_smoke_test_passes() -> None:
    p = plan(spec(production={"promotedVersion": 1}), {}, obs(waiting_at_gate()), ctx())
    assert gate_actions(p) == []


def test_promoting_another_version_than_the_staged_one_is_blocked() -> None:
    p = plan(
        spec(production={"promotedVersion": 2}),
        smoke_passed(),
        obs(waiting_at_gate(), V2, V1),
        ctx(),
    )
    assert gate_actions(p) == []
    assert (
        "deployed version 1 to staging: the gate is approved only for the version it deployed"
        in (p.status["message"])
    )


def test_a_rejection_in_the_spec_rejects_the_gate_with_its_reason() -> None:
    s = spec(approval={"rejectedVersions": [{"version": 1, "reason": "drift on segment B"}]})
    p = plan(s, smoke_passed(), obs(waiting_at_gate(), version(1, "Rejected")), ctx())
    (gate,) = gate_actions(p)
    assert gate.decision.approve is False
    assert gate.decision.summary.startswith("drift on segment B (spec.approval.rejectedVersions")


def test_a_rejection_reaches_the_gate_before_the_registry() -> None:
    """The registry's rejection starts a run that supersedes the waiting one: the gate is
    rejected first, in the same pass, so the run ends with the spec's reason."""
    s = spec(approval={"rejectedVersions": [{"version": 1, "reason": "drift on segment B"}]})
    p = plan(s, {}, obs(waiting_at_gate()), ctx())
    assert [type(a).__name__ for a in p.actions] == ["DecideGate", "SetApproval"]
    assert p.actions[0].decision.approve is False
    assert p.actions[1].status == "Rejected"


def test_automatic_promotion_approves_after_the_smoke_test() -> None:
    p = plan(
        spec(production={"promotion": "Automatic"}), smoke_passed(), obs(waiting_at_gate()), ctx()
    )
    (gate,) = gate_actions(p)
    assert gate.decision.approve and "Automatic promotion" in gate.decision.summary


def test_a_gate_the_operator_decided_is_not_decided_twice() -> None:
    status = smoke_passed()
    status["project"] = {
        "name": NAME,
        "gate": {"executionId": "run-1", "decision": "Approved", "by": "modeldeploy"},
    }
    p = plan(spec(production={"promotedVersion": 1}), status, obs(waiting_at_gate()), ctx())
    assert gate_actions(p) == []


def test_a_gate_decided_by_a_person_is_recorded_once_with_an_event() -> None:
    person = "arn:aws:sts::123456789012:assumed-role/Admin/alice"
    decided = project(
        stages=pipeline(
            gate="Succeeded", prod="InProgress", gate_summary="ok from console", updated_by=person
        ),
        staging=endpoint("staging", V1),
    )
    seen_waiting = plan(spec(), smoke_passed(), obs(waiting_at_gate()), ctx()).status
    p = plan(spec(), seen_waiting, obs(decided), ctx())
    gate = p.status["project"]["gate"]
    assert (gate["executionId"], gate["decision"], gate["by"], gate["version"]) == (
        "run-1",
        "Approved",
        person,
        1,
    )
    assert [e.reason for e in p.events if e.reason == "GateDecided"] == ["GateDecided"]
    again = plan(spec(), p.status, obs(decided), ctx())
    assert [e for e in again.events if e.reason == "GateDecided"] == []
    assert again.status["phase"] == "Promoting"


def test_the_last_runs_decision_is_not_taken_for_a_new_runs() -> None:
    """GetPipelineState keeps the previous run's approval while a new run deploys staging: it
    is not this run's decision, and the new run's gate is decided when it opens."""
    first = waiting_at_gate()
    status = plan(spec(production={"promotedVersion": 1}), smoke_passed(), obs(first), ctx()).status
    status["project"]["gate"] = {
        "executionId": "run-1",
        "decision": "Approved",
        "by": "modeldeploy",
    }
    stale = pipeline(run="run-2", staging="InProgress", gate="Succeeded", gate_summary="v1 ok")
    stale = (*stale[:2], dataclasses.replace(stale[2], status="InProgress"), stale[3])
    deploying = project(stages=stale, staging=endpoint("staging", V1, status="Updating"))
    p = plan(spec(production={"promotedVersion": 2}), status, obs(deploying, V2, V1), ctx())
    assert p.status["project"]["gate"]["executionId"] == "run-1"
    assert [e for e in p.events if e.reason == "GateDecided"] == []
    opened = project(stages=pipeline(run="run-2", token="tok-2"), staging=endpoint("staging", V2))
    p = plan(
        spec(production={"promotedVersion": 2}),
        {**p.status, **smoke_passed(V2)},
        obs(opened, V2, V1),
        ctx(),
    )
    (gate,) = gate_actions(p)
    assert (gate.decision.execution_id, gate.decision.token, gate.version) == ("run-2", "tok-2", 2)


def test_between_an_approved_gate_and_deploy_prod_production_is_promoting() -> None:
    """CodePipeline takes a moment to start DeployProd after the approval: not Deployed on the
    old production meanwhile, and not blocked."""
    status = smoke_passed()
    status["project"] = {
        "name": NAME,
        "gate": {"executionId": "run-1", "version": 1, "decision": "Approved", "by": "modeldeploy"},
    }
    approved = project(stages=pipeline(gate="Succeeded"), staging=endpoint("staging", V1))
    p = plan(spec(production={"promotedVersion": 1}), status, obs(approved), ctx())
    assert p.actions == []
    assert p.status["phase"] == "Promoting"
    assert "the pipeline deploys version 1 to production (run run-1)" in p.status["message"]


def test_a_run_superseded_while_it_waited_is_reported() -> None:
    status = {
        **smoke_passed(),
        "project": {"name": NAME, "execution": {"id": "run-1", "status": "InProgress"}},
    }
    newer = project(
        stages=pipeline(run="run-2", staging="InProgress", gate=""),
        staging=endpoint("staging", V1, status="Updating"),
        executions=(
            PipelineExecution("run-2", "InProgress"),
            PipelineExecution("run-1", "Superseded"),
        ),
    )
    p = plan(spec(), status, obs(newer, V2, V1), ctx())
    assert any(e.reason == "RunSuperseded" and "run-1" in e.message for e in p.events)
    assert p.status["project"]["execution"] == {"id": "run-2", "status": "InProgress"}


def test_production_deployed_by_the_pipeline_is_ready() -> None:
    done = project(
        stages=pipeline(gate="Succeeded", prod="Succeeded"),
        staging=endpoint("staging", V1),
        production=endpoint("prod", V1),
        executions=(PipelineExecution("run-1", "Succeeded"),),
    )
    p = plan(spec(production={"promotedVersion": 1}), smoke_passed(), obs(done), ctx())
    assert p.actions == []
    assert p.status["phase"] == "Deployed"
    assert p.status["production"]["version"] == 1
    assert p.status["production"]["endpointName"] == f"{NAME}-prod"
    assert condition(p.status["conditions"], "Ready")["status"] == "True"
    assert p.status["project"]["stacks"]["production"]["status"] == "CREATE_COMPLETE"


def test_production_keeps_its_version_through_an_update_and_records_the_previous() -> None:
    serving_v1 = project(
        stages=pipeline(gate="Succeeded", prod="Succeeded"),
        staging=endpoint("staging", V1),
        production=endpoint("prod", V1),
    )
    status = plan(spec(production={"promotedVersion": 1}), smoke_passed(), obs(serving_v1), ctx())
    assert status.status["production"]["version"] == 1
    updating = dataclasses.replace(
        serving_v1,
        stages=pipeline(run="run-2", gate="Succeeded", prod="InProgress"),
        staging=endpoint("staging", V2),
        production=endpoint("prod", V1, status="Updating"),
    )
    s2 = spec(production={"promotedVersion": 2})
    during = plan(s2, {**status.status, **smoke_passed(V2)}, obs(updating, V2, V1), ctx())
    assert during.status["production"]["version"] == 1  # still serves it while updating
    assert during.status["phase"] == "Promoting"
    done = dataclasses.replace(updating, production=endpoint("prod", V2))
    after = plan(s2, during.status, obs(done, V2, V1), ctx())
    assert (
        after.status["production"]["version"],
        after.status["production"]["previousVersion"],
    ) == (2, 1)


def test_a_failed_staging_stack_stalls_with_its_reason() -> None:
    failed = project(
        stages=pipeline(staging="Failed", gate=""),
        staging_stack=Stack(
            STAGING_STACK, "ROLLBACK_COMPLETE", "Endpoint churn-staging failed: image not found"
        ),
        executions=(PipelineExecution("run-1", "Failed"),),
    )
    p = plan(spec(), {}, obs(failed), ctx())
    assert p.status["phase"] == "Failed"
    assert (
        "ROLLBACK_COMPLETE: Endpoint churn-staging failed: image not found" in p.status["message"]
    )
    assert condition(p.status["conditions"], "Stalled")["reason"] == "PipelineFailed"


def test_staging_on_an_older_version_than_the_newest_approved_is_reported() -> None:
    older = project(stages=pipeline(), staging=endpoint("staging", V1))
    p = plan(spec(), {}, obs(older, V2, V1), ctx())
    (warning,) = [e for e in p.events if e.reason == "StagingNotNewest"]
    assert "serves version 1, not the newest approved version 2" in warning.message


def test_a_promoted_version_production_does_not_serve_is_explained() -> None:
    done = project(
        stages=pipeline(gate="Succeeded", prod="Succeeded"),
        staging=endpoint("staging", V2),
        production=endpoint("prod", V2),
        executions=(PipelineExecution("run-1", "Succeeded"),),
    )
    p = plan(spec(production={"promotedVersion": 1}), smoke_passed(V2), obs(done, V2, V1), ctx())
    assert p.actions == []
    assert p.status["phase"] == "AwaitingPromotion"
    assert "in project mode a version reaches production when a pipeline run" in p.status["message"]


def test_direct_mode_has_no_project_status() -> None:
    direct = spec(deployment={})
    p = plan(direct, {}, obs(None), ctx())
    assert "project" not in p.status
    assert not any(isinstance(a, EnsureProject) for a in p.actions)


def test_the_project_mirror_survives_an_early_return() -> None:
    recorded = {"project": {"name": NAME, "id": "p-abc123def456", "status": "CreateCompleted"}}
    pending = observed(
        GROUP_ARN, (version(2, "PendingManualApproval"), V1), project=waiting_at_gate()
    )
    s = spec(approval={"approvedVersion": 2})
    p = plan(s, recorded, pending, ctx())
    assert p.status["phase"] == "PendingApproval"
    assert p.status["project"]["id"] == "p-abc123def456"


def test_stages_mirror_every_action() -> None:
    p = plan(spec(), smoke_passed(), obs(waiting_at_gate()), ctx())
    stages = p.status["project"]["stages"]
    assert [s["name"] for s in stages] == ["Source", "Build", "DeployStaging", "DeployProd"]
    gate = stages[2]["actions"][2]
    assert gate == {"name": "ApproveDeployment", "status": "InProgress"}
    assert dataclasses.replace(waiting_at_gate()).gate.token == "tok-1"
