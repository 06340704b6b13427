"""Actions the planner asks for. Plain data: the executor turns them into provider calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from modeldeploy.remote import DeployRequest, GateDecision, ProjectRequest

Stage = Literal["staging", "production"]


@dataclass(frozen=True)
class EnsureGroup:
    """Create the spec's group, owned by the ModelDeployment (namespace/name) creating it."""

    name: str
    description: str | None
    owner: str


class ClaimGroup(NamedTuple):
    """Adopt the spec's group, which exists and belongs to no ModelDeployment."""

    group_arn: str
    owner: str


@dataclass(frozen=True)
class RegisterVersion:
    artifact: str


@dataclass(frozen=True)
class SetApproval:
    version: int
    version_arn: str
    status: str  # Approved | Rejected
    description: str


@dataclass(frozen=True)
class DeployEndpoint:
    request: DeployRequest
    update: bool = False  # the endpoint exists: an update, not a creation

    @property
    def stage(self) -> str:
        return self.request.stage

    @property
    def version(self) -> int:
        return self.request.version.version


@dataclass(frozen=True)
class SmokeTest:
    endpoint_name: str
    version: int
    config_name: str
    payload: str
    content_type: str
    max_latency_ms: int


@dataclass(frozen=True)
class DeleteEndpoint:
    stage: Stage
    endpoint_name: str


@dataclass(frozen=True)
class EnsureProject:
    """Project mode: create the deployment project (found first by name and owner tag)."""

    request: ProjectRequest


@dataclass(frozen=True)
class DecideGate:
    """Project mode: approve or reject the pipeline's ApproveDeployment for one run."""

    decision: GateDecision
    version: int  # the version that run deployed to staging


Action = (
    EnsureGroup
    | ClaimGroup
    | RegisterVersion
    | SetApproval
    | DeployEndpoint
    | SmokeTest
    | DeleteEndpoint
    | EnsureProject
    | DecideGate
)


def stall_key(kind: str, *parts: object) -> str:
    return ":".join([kind, *(str(p) for p in parts)])


def action_key(action: Action) -> str:
    """Identifies an action's input: a terminal failure stalls exactly this key."""
    match action:
        case RegisterVersion(artifact=artifact):
            return stall_key("register", artifact)
        case DeployEndpoint(request=request):
            return stall_key("deploy", request.stage, request.config_name)
        case SetApproval(version=version):
            return stall_key("approval", version)
        case SmokeTest(config_name=config):
            return stall_key("smoke", config)
        case DeleteEndpoint(endpoint_name=name):
            return stall_key("delete", name)
        case ClaimGroup(group_arn=arn):
            return stall_key("adopt", arn)
        case EnsureProject(request=request):
            return stall_key("project", request.name)
        case DecideGate(decision=d):
            return stall_key("gate", d.execution_id, "approve" if d.approve else "reject")
    return stall_key("group")


def describe(action: Action) -> str:
    """One line a person reads in `modeldeploy plan` and in Events."""
    match action:
        case EnsureGroup(name=name, owner=owner):
            return f"create model package group {name}, owned by {owner}"
        case ClaimGroup(group_arn=arn, owner=owner):
            return f"adopt model package group {arn} (no ModelDeployment owns it) for {owner}"
        case RegisterVersion(artifact=artifact):
            return f"register {artifact} as a new PendingManualApproval version"
        case SetApproval(version=v, status=s, description=d):
            return f"set version {v} to {s} ({d})"
        case DeployEndpoint(request=r, update=update):
            return (
                f"{'update' if update else 'create'} {r.stage} endpoint {r.endpoint_name} -> "
                f"version {r.version.version} on {r.instance_count} x {r.instance_type} "
                f"(config {r.config_name})"
            )
        case SmokeTest(endpoint_name=name, version=v, content_type=ct):
            return f"smoke-test {name} (version {v}) with the spec's {ct} payload"
        case DeleteEndpoint(endpoint_name=name):
            return f"delete endpoint {name}"
        case EnsureProject(request=r):
            template = r.template_url or r.product_id or r.template_product_name
            return (
                f"create SageMaker project {r.name} from {template!r} for model package group "
                f"{r.group}, owned by {r.owner}"
            )
        case DecideGate(decision=d, version=v):
            verb = "approve" if d.approve else "reject"
            return (
                f"{verb} ApproveDeployment of pipeline {d.pipeline} run {d.execution_id} "
                f"(version {v}): {d.summary}"
            )
    return repr(action)
