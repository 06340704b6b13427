"""Carries out a plan's actions through a provider and folds their results into the status.

The first error ends the run: a terminal one becomes the pass's stall (that input is not
retried until the spec changes), a transient one is returned for the caller to retry with
backoff. Which errors are which is decided in one place, `providers.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modeldeploy import metrics
from modeldeploy.providers.errors import GateMoved, ProviderError, TransientError
from modeldeploy.providers.interface import Provider
from modeldeploy.reconcile.actions import (
    Action,
    ClaimGroup,
    DecideGate,
    DeleteEndpoint,
    DeployEndpoint,
    EnsureGroup,
    EnsureProject,
    RegisterVersion,
    SetApproval,
    SmokeTest,
    action_key,
)
from modeldeploy.reconcile.conditions import timestamp
from modeldeploy.reconcile.project import mirror
from modeldeploy.reconcile.project_gate import OPERATOR
from modeldeploy.reconcile.reasons import Reason
from modeldeploy.reconcile.smoke import SMOKE_REQUESTS, judge, settled
from modeldeploy.reconcile.types import Context, Event, Plan
from modeldeploy.remote import GATE_ACTION, InvokeResult
from modeldeploy.spec import ModelDeploymentSpec
from modeldeploy.status import (
    GateStatus,
    GroupStatus,
    ModelDeploymentStatus,
    RegistrationStatus,
    SmokeTestStatus,
    StagingStatus,
    StallStatus,
)

FAILURE_REASONS: dict[type, Reason] = {
    EnsureGroup: Reason.GROUP_CREATION_FAILED,
    ClaimGroup: Reason.GROUP_OWNED_ELSEWHERE,
    RegisterVersion: Reason.REGISTRATION_FAILED,
    SetApproval: Reason.APPROVAL_FAILED,
    DeployEndpoint: Reason.DEPLOYMENT_FAILED,
    DeleteEndpoint: Reason.DELETION_FAILED,
    EnsureProject: Reason.PROJECT_FAILED,
    DecideGate: Reason.ACTION_FAILED,
}


@dataclass
class Executed:
    status: ModelDeploymentStatus
    events: list[Event] = field(default_factory=list)
    stall: StallStatus | None = None  # a terminal failure
    transient_error: str | None = None


def execute(plan: Plan, provider: Provider, spec: ModelDeploymentSpec, ctx: Context) -> Executed:
    out = Executed(status=plan.status)  # made for this pass; the executor completes it
    for action in plan.actions:
        try:
            with metrics.action(action):
                _run(action, provider, spec, ctx, out)
        except TransientError as err:
            out.transient_error = f"{type(action).__name__}: {err}"
            return out
        except GateMoved as err:
            # Not retried with the same token: the next pass reads the gate again.
            out.events.append(Event("Warning", Reason.GATE_MOVED, str(err)))
            return out
        except ProviderError as err:
            out.stall = StallStatus(
                key=action_key(action),
                generation=ctx.generation,
                reason=FAILURE_REASONS.get(type(action), Reason.ACTION_FAILED),
                message=str(err),
                source="action",
            )
            return out
    return out


def _run(
    action: Action, provider: Provider, spec: ModelDeploymentSpec, ctx: Context, out: Executed
) -> None:
    registry, hosting, status = provider.registry, provider.hosting, out.status
    match action:
        case EnsureGroup(name=name, description=description, owner=owner):
            arn = registry.ensure_group(name, description, owner)
            status.modelPackageGroup = GroupStatus(name=name, arn=arn, owner=owner)
            out.events.append(Event("Normal", Reason.GROUP_READY, f"model package group {arn}"))
        case ClaimGroup(group_arn=arn, owner=owner):
            registry.claim_group(arn, owner)
            name = spec.modelPackageGroup.name
            status.modelPackageGroup = GroupStatus(name=name, arn=arn, owner=owner)
            text = f"model package group {name} adopted: {owner} owns it now"
            out.events.append(Event("Normal", Reason.GROUP_ADOPTED, text))
        case RegisterVersion(artifact=artifact):
            version = registry.register_version(spec)
            model = spec.model
            status.registration = RegistrationStatus(
                artifact=artifact,
                frameworkVersion=(model and model.frameworkVersion) or "",
                image=(model and model.image) or "",
                version=version.version,
                arn=version.arn,
                digest=version.artifact_digest,
            )
            text = f"{artifact} is version {version.version}"
            out.events.append(Event("Normal", Reason.REGISTERED, text))
        case SetApproval(version_arn=arn, status=decision, description=text, version=number):
            registry.set_approval(arn, decision, text)
            out.events.append(Event("Normal", decision, f"version {number}: {text}"))
        case DeployEndpoint(request=request, update=update):
            hosting.deploy(request)
            reason = Reason.PROMOTING if request.stage == "production" else Reason.DEPLOYING_STAGING
            text = (
                f"{'Updating' if update else 'Creating'} endpoint {request.endpoint_name} with "
                f"version {request.version.version} ({request.config_name})"
            )
            out.events.append(Event("Normal", reason, text))
        case SmokeTest():
            _smoke_test(action, provider, ctx, out)
        case DeleteEndpoint(endpoint_name=name):
            hosting.delete(name)
            out.events.append(
                Event("Normal", Reason.DELETING_ENDPOINT, f"deleting endpoint {name}")
            )
        case EnsureProject(request=request):
            made = provider.projects.create(request)
            status.project = mirror(made, request.name, status.project)
            text = f"SageMaker project {made.name} ({made.project_id}) is {made.status}"
            out.events.append(Event("Normal", Reason.CREATING_PROJECT, text))
        case DecideGate(decision=d, version=version):
            provider.projects.decide(d)
            decision = "Approved" if d.approve else "Rejected"
            gate = GateStatus(
                executionId=d.execution_id,
                version=version,
                decision=decision,
                summary=d.summary,
                by=OPERATOR,
            )
            recorded = status.project or mirror(None, d.project, None)
            status.project = recorded.model_copy(update={"gate": gate})
            text = f"{GATE_ACTION} of run {d.execution_id} {decision.lower()}: {d.summary}"
            out.events.append(Event("Normal", Reason.GATE_DECIDED, text))


def _smoke_test(action: SmokeTest, provider: Provider, ctx: Context, out: Executed) -> None:
    record = SmokeTestStatus(
        passed=False,
        version=action.version,
        configName=action.config_name,
        generation=ctx.generation,
        at=timestamp(ctx.now),
    )
    results: list[InvokeResult] = []
    try:
        # Once, unless the only fault is the latency: then again (a first request after a
        # cold start may be slow), up to SMOKE_REQUESTS, and the fastest counts.
        invoke = provider.hosting.invoke
        while len(results) < SMOKE_REQUESTS and not (results and settled(results[-1], action)):
            results.append(invoke(action.endpoint_name, action.payload, action.content_type))
    except TransientError:
        raise
    except ProviderError as err:
        record.message = f"the endpoint refused the payload: {err}"
    else:
        fastest, problem = judge(results, action.payload, action.max_latency_ms)
        record.latencyMs = round(fastest, 1)
        record.passed = not problem
        record.message = problem or "predictions returned"
    metrics.smoke_test(provider.name, record.passed, record.latencyMs)
    staging = out.status.staging or StagingStatus()
    out.status.staging = staging.model_copy(update={"smokeTest": record})
    if record.passed:
        text = f"version {action.version} answered in {record.latencyMs} ms"
        out.events.append(Event("Normal", Reason.SMOKE_TEST_PASSED, text))
