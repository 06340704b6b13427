"""Planner steps of project mode (spec.deployment.via: Project).

A SageMaker project made from the "MLOps template for model deployment" deploys the endpoints:
its pipeline builds from the newest approved version, deploys `<name>-staging`, waits at
DeployStaging/ApproveDeployment, then deploys `<name>-prod`. The operator creates the project,
mirrors the pipeline, stacks and endpoints into status, smoke-tests staging (the shared step),
and decides the gate from the spec. The stage outcomes and the promotion are expressed in the
direct mode's terms, so `summarize` gives both modes the same phases and conditions.
"""

from __future__ import annotations

from modeldeploy.reconcile.actions import EnsureProject, stall_key
from modeldeploy.reconcile.gates import newest_approved
from modeldeploy.reconcile.pass_state import PassState
from modeldeploy.reconcile.reasons import Phase, Reason, in_service
from modeldeploy.reconcile.stages import StageOutcome
from modeldeploy.reconcile.types import Event, Verdict
from modeldeploy.remote import (
    PROD_STAGE,
    PROJECT_TEMPLATE,
    STAGING_STAGE,
    Endpoint,
    EndpointStatus,
    Project,
    ProjectRequest,
    Stack,
)
from modeldeploy.status import (
    ExecutionStatus,
    PipelineActionStatus,
    PipelineStageStatus,
    ProductionStatus,
    ProjectStatus,
    StacksStatus,
    StagingStatus,
    StallStatus,
)
from modeldeploy.status import StackStatus as StackRecord

# What the template calls each stage's deploy action.
DEPLOY_ACTIONS = {"staging": "DeployResourcesStaging", "production": "DeployResourcesProd"}
PIPELINE_STAGES = {"staging": STAGING_STAGE, "production": PROD_STAGE}


def project_request(s: PassState) -> ProjectRequest:
    wanted = s.spec.project
    assert wanted is not None
    named = wanted.productId or wanted.templateUrl
    return ProjectRequest(
        name=wanted.name,
        group=s.spec.modelPackageGroup.name,
        owner=s.ctx.owner,
        template_product_name=None if named else wanted.templateProductName or PROJECT_TEMPLATE,
        product_id=wanted.productId,
        provisioning_artifact_id=wanted.provisioningArtifactId,
        template_url=wanted.templateUrl,
        parameters=tuple(sorted(wanted.parameters.items())),
        role_arn=s.spec.roleArn,
        description=f"deployment project of ModelDeployment {s.ctx.owner}",
    )


def _stack(stack: Stack | None) -> StackRecord | None:
    if stack is None:
        return None
    return StackRecord(name=stack.name, status=stack.status, reason=stack.reason or None)


def mirror(project: Project | None, name: str, old: ProjectStatus | None) -> ProjectStatus:
    """The project as status shows it; the gate decision recorded earlier is kept."""
    gate = old.gate if old and old.name == name else None
    if project is None:
        return ProjectStatus(name=name, gate=gate)
    newest = project.executions[0] if project.executions else None
    return ProjectStatus(
        name=project.name,
        id=project.project_id or None,
        arn=project.arn or None,
        status=project.status,
        message=project.message or None,
        pipeline=project.pipeline or None,
        execution=ExecutionStatus(id=newest.execution_id, status=newest.status) if newest else None,
        stages=[
            PipelineStageStatus(
                name=stage.name,
                status=stage.status or None,
                executionId=stage.execution_id or None,
                actions=[
                    PipelineActionStatus(
                        name=a.name,
                        status=a.status or None,
                        summary=a.summary or None,
                        lastChange=a.last_change or None,
                    )
                    for a in stage.actions
                ],
            )
            for stage in project.stages
        ]
        or None,
        stacks=StacksStatus(
            staging=_stack(project.staging_stack), production=_stack(project.production_stack)
        ),
        gate=gate,
    )


def _stop(s: PassState, reason: Reason, message: str, key: str) -> Verdict:
    """Remote state only a person can change: judged again every pass."""
    s.conds.set("StagingReady", False, reason, message)
    stall = StallStatus(
        key=stall_key("project", key),
        generation=s.ctx.generation,
        reason=reason,
        message=message,
        source="remote",
    )
    return Verdict(Phase.FAILED, message, s.conds, s.timing.resync, stall=stall)


def _progress(s: PassState, reason: Reason, message: str, requeue: float) -> Verdict:
    s.conds.set("StagingReady", False, reason, message)
    s.conds.not_ready(reason, message)
    s.conds.reconciling(reason, message)
    return Verdict(Phase.DEPLOYING_STAGING, message, s.conds, requeue)


def ensure_project(s: PassState) -> Verdict | None:
    """The project exists, is this resource's, and is created; else say why not."""
    wanted = s.spec.project
    assert wanted is not None
    project = s.observed.project
    s.new.project = mirror(project, wanted.name, s.old.project)
    if project is None:
        s.actions.append(EnsureProject(project_request(s)))
        message = f"creating SageMaker project {wanted.name}"
        return _progress(s, Reason.CREATING_PROJECT, message, s.timing.act)
    if project.owner != s.ctx.owner:
        message = (
            f"project {wanted.name} belongs to {project.owner or 'no ModelDeployment'} (its "
            "modeldeploy.dev/owner tag), not to this resource: choose another "
            "spec.deployment.project.name"
        )
        return _stop(s, Reason.PROJECT_OWNED_ELSEWHERE, message, f"owner:{wanted.name}")
    if project.status.endswith("Failed"):
        message = (
            f"project {wanted.name} is {project.status}: "
            f"{project.message or 'no reason given'}; fix the cause, then delete the project "
            "(`aws sagemaker delete-project`) so that it is made again"
        )
        return _stop(s, Reason.PROJECT_FAILED, message, f"failed:{wanted.name}")
    if project.status in ("Pending", "CreateInProgress"):
        message = f"project {wanted.name} is {project.status}"
        return _progress(s, Reason.CREATING_PROJECT, message, s.timing.poll)
    return None


def _record_endpoint(
    st: StagingStatus | ProductionStatus, endpoint: Endpoint | None, name: str
) -> None:
    st.endpointName = endpoint.name if endpoint else name
    st.endpointStatus = endpoint.status if endpoint else None
    st.failureReason = (endpoint.failure_reason or None) if endpoint else None
    st.url = (endpoint.url or None) if endpoint else None
    st.targetConfigName = st.targetVersion = None  # the pipeline, not the operator, targets
    if endpoint is None:
        st.endpointConfigName = st.version = None
    elif endpoint.status == EndpointStatus.IN_SERVICE:
        st.endpointConfigName, st.version = endpoint.config_name, endpoint.served_version
    # Otherwise (updating, failed) it still serves what it served last, as recorded.


def _stage_status(s: PassState, stage: str, name: str, endpoint: Endpoint | None):
    old = s.old.stage(stage)
    fresh = StagingStatus() if stage == "staging" else ProductionStatus()
    st = old.model_copy() if old else fresh
    setattr(s.new, stage, st)
    _record_endpoint(st, endpoint, name)
    if st.version is not None and (old is None or old.version != st.version):
        text = f"{st.endpointName} serves version {st.version} ({st.endpointConfigName})"
        s.events.append(Event("Normal", in_service(stage), text))
        if isinstance(st, ProductionStatus) and old and old.version is not None:
            st.previousVersion = old.version
    return st


def project_stage(s: PassState, stage: str) -> StageOutcome:
    """Where the pipeline has taken one stage's endpoint."""
    project = s.observed.project
    assert project is not None
    suffix = "staging" if stage == "staging" else "prod"
    endpoint = project.staging if stage == "staging" else project.production
    stack = project.staging_stack if stage == "staging" else project.production_stack
    st = _stage_status(s, stage, f"{project.name}-{suffix}", endpoint)
    pipeline_stage = project.stage(PIPELINE_STAGES[stage])
    deploy = pipeline_stage.action(DEPLOY_ACTIONS[stage]) if pipeline_stage else None
    run = pipeline_stage.execution_id if pipeline_stage else ""
    out = StageOutcome()
    where = f"stack {stack.name} is {stack.status}" if stack else "no stack yet"
    if (deploy and deploy.status == "InProgress") or (
        endpoint and EndpointStatus.is_transitional(endpoint.status)
    ):
        out.state = "deploying"
        out.message = f"the project's pipeline deploys {stage} (run {run}): {where}"
    elif deploy and deploy.status == "Failed":
        cause = (stack.reason if stack else "") or deploy.summary or "no reason given"
        out.state = "stalled"
        out.message = (
            f"the project's pipeline failed to deploy {stage} in run {run}: {where}: {cause}; "
            "the next approval or rejection in the group starts a new run"
        )
        out.stall = StallStatus(
            key=stall_key("pipeline", stage, run),
            generation=s.ctx.generation,
            reason=Reason.PIPELINE_FAILED,
            message=out.message,
            source="remote",
        )
    elif st.version is not None:
        out.state = "serving"
    else:
        out.message = _not_deployed(project, stage)
    return out


def _not_deployed(project: Project, stage: str) -> str:
    """Why the pipeline has not deployed a stage: its newest run's failure, if any."""
    newest = project.executions[0] if project.executions else None
    failed = next(
        (
            (st.name, a)
            for st in project.stages
            for a in st.actions
            if a.status == "Failed" and (newest is None or st.execution_id == newest.execution_id)
        ),
        None,
    )
    if failed:
        name, action = failed
        return (
            f"the project's pipeline run {newest.execution_id if newest else ''} failed at "
            f"{name}/{action.name}: {action.summary or 'no reason given'}"
        )
    return f"the project's pipeline has not deployed {stage} yet"


def deploy_staging(s: PassState) -> None:
    """Staging serves what the pipeline deployed; say so when that is not the newest
    approved version (the template's build may pick the oldest)."""
    s.staging = project_stage(s, "staging")
    staging = s.new.staging
    served = s.version(staging.version if staging else None)
    s.candidate = served if s.staging.state == "serving" else None
    newest = newest_approved(s.observed)
    settled_now = staging and (s.old.staging is None or s.old.staging.version != staging.version)
    if served and newest and served.version < newest.version and settled_now:
        text = (
            f"{staging.endpointName} serves version {served.version}, not the newest approved "  # type: ignore[union-attr]
            f"version {newest.version}: the project's build chose it (the template lists "
            "approved versions without SortOrder, which sorts oldest first)"
        )
        s.events.append(Event("Warning", Reason.STAGING_NOT_NEWEST, text))
