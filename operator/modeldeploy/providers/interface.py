"""The interface every provider implements: a `Registry`, a `Hosting`, and `observe`.

A provider is the pair of backends plus one read of everything the planner needs. Adding a
provider means one package under `providers/` with these three pieces, a builder in
`providers/__init__.py`, and the contract suite (`tests/test_provider_contract.py`) run over it.
Errors are `errors.TransientError` (retried) or `errors.TerminalError` (stalls the input).
"""

from __future__ import annotations

from typing import Protocol

from modeldeploy.remote import (
    DeployRequest,
    Endpoint,
    GateDecision,
    InvokeResult,
    ModelVersion,
    Observed,
    Project,
    ProjectRequest,
)
from modeldeploy.remote import ObserveHint as ObserveHint
from modeldeploy.spec import ModelDeploymentSpec


class Registry(Protocol):
    """Model package groups and their versions (SageMaker Model Registry semantics)."""

    def group_arn(self, group: str) -> str | None:
        """The group's ARN, or None when it does not exist."""

    def ensure_group(self, name: str, description: str | None, owner: str = "") -> str:
        """Create the group if missing, owned by `owner` (a ModelDeployment's namespace/name;
        "" for none); return its ARN."""

    def group_owner(self, group_arn: str) -> str:
        """The ModelDeployment that owns the group, "" for none."""

    def release_group(self, group_arn: str, owner: str) -> None:
        """Remove `owner` as the group's owner (its ModelDeployment is deleted); a group owned
        by another is left alone."""

    def claim_group(self, group_arn: str, owner: str) -> None:
        """Make `owner` the owner of a group that has none (adoption); TerminalError if another
        ModelDeployment owns it."""

    def register_version(self, spec: ModelDeploymentSpec) -> ModelVersion:
        """Register spec.model as a new PendingManualApproval version.

        Idempotent: if a version with the same artifact digest exists, return it instead.
        Raises TerminalError when the artifact is unreadable or unsafe, or its xgboost version
        does not match the serving image.
        """

    def set_approval(self, version_arn: str, status: str, description: str) -> None: ...


class Hosting(Protocol):
    """Endpoints with SageMaker's life cycle (`remote.EndpointStatus`)."""

    def describe(self, name: str) -> Endpoint | None: ...

    def names(self, prefix: str) -> list[str]:
        """The endpoints whose names start with `prefix`, sorted."""

    def deploy(self, request: DeployRequest) -> None:
        """Create what the hash-named config needs if missing, then create the endpoint or
        point it at the config. Returns once the change is accepted."""

    def invoke(self, name: str, payload: str, content_type: str) -> InvokeResult: ...

    def delete(self, name: str) -> bool:
        """Start deleting the endpoint (and what only it uses); True once it is gone."""


class Projects(Protocol):
    """Deployment projects (project mode): a project per ModelDeployment whose pipeline deploys
    the newest approved version to `<name>-staging`, waits at DeployStaging/ApproveDeployment,
    then deploys `<name>-prod`. The operator creates it, reads it and decides its gate."""

    def describe(self, name: str) -> Project | None:
        """The project with its pipeline state, stacks and endpoints (each endpoint with the
        version it serves); None when no such project exists (or it is DeleteCompleted)."""

    def create(self, request: ProjectRequest) -> Project:
        """Create the project, or return it when one of that name exists and its owner tag
        names request.owner (a retry after a lost answer). TerminalError, naming the cause and
        the fix, when the template, the portfolio or a launch role is missing, or the name is
        taken by a project another owner made; nothing is left half made."""

    def decide(self, decision: GateDecision) -> None:
        """Approve or reject the waiting gate. `errors.GateMoved` when the token is stale or a
        person decided it first: the caller looks again instead of retrying."""

    def delete(self, project: Project) -> tuple[bool, str]:
        """Delete the project, its staging and production stacks and endpoints. (done, what is
        left behind on purpose, e.g. the project's bucket); call again until done."""


class Provider(Protocol):
    name: str
    registry: Registry
    hosting: Hosting
    projects: Projects  # project mode (spec.deployment.via: Project)
    # The longest a steady resource waits for its next look (None: the operator's resync).
    max_resync_seconds: float | None

    def observe(
        self, spec: ModelDeploymentSpec, hint: ObserveHint, *, namespace: str, name: str
    ) -> Observed:
        """Read remote state with at most two read calls when nothing is transitional; the
        hint says what status already knows (an endpoint settled on a config, the newest
        version's metrics) and which versions must be in the answer."""
