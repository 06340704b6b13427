"""The typed status of a ModelDeployment: the twin of the CRD's status schema, as spec.py is of
its spec (tests/test_crd_sync.py keeps them in step).

The operator is the only writer. Field names are the CRD's, so `status.latestVersion.version`
reads as `kubectl get -o yaml` shows it. Optional fields are None when unset and left out of
what is written (`to_dict`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modeldeploy.remote import ModelVersion, ObserveHint, RecordedStage
from modeldeploy.spec import ModelDeploymentSpec

STAGES = ("staging", "production")


class _Status(BaseModel):
    # Unknown keys are dropped: they were written by someone else, or by an older operator.
    model_config = ConfigDict(extra="ignore")


class GroupStatus(_Status):
    name: str = Field(description="Group name.")
    arn: str = Field("", description="Group ARN (or the local store's identifier).")
    owner: str | None = Field(None, description="The owning ModelDeployment, namespace/name.")


class RegistrationStatus(_Status):
    artifact: str = Field(description="The artifact URI as given in spec.model.artifact.")
    frameworkVersion: str = Field(
        "", description="spec.model.frameworkVersion it was registered with, if given."
    )
    image: str = Field("", description="spec.model.image it was registered with, if given.")
    digest: str | None = Field(None, description="sha256 of the artifact's bytes.")
    version: int | None = Field(None, description="The version it was registered as.")
    arn: str | None = Field(None, description="The ARN of that version.")

    def input(self) -> tuple[str, str, str]:
        return self.artifact, self.frameworkVersion, self.image


class LatestVersionStatus(_Status):
    version: int = Field(description="Version number in the group.")
    arn: str = Field(description="Model package ARN of this version.")
    approvalStatus: str = Field(description="Registry approval status, verbatim.")
    approvalDescription: str | None = Field(None, description="Registry approval description.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Metrics by name.")
    artifact: str | None = Field(None, description="Where the serving container reads it.")

    @classmethod
    def of(cls, version: ModelVersion) -> LatestVersionStatus:
        return cls.model_construct(  # from a typed value: no validation needed
            version=version.version,
            arn=version.arn,
            approvalStatus=version.approval_status,
            approvalDescription=version.approval_description or None,
            metrics=dict(version.metrics),
        )

    def as_version(self) -> ModelVersion:
        return ModelVersion(
            version=self.version,
            arn=self.arn,
            approval_status=self.approvalStatus,
            artifact=self.artifact or "",
            metrics=dict(self.metrics),
            approval_description=self.approvalDescription or "",
        )


class VersionStatus(_Status):
    version: int = Field(description="Version number in the group.")
    approvalStatus: str = Field(description="Registry approval status, verbatim.")
    approvalDescription: str | None = Field(None, description="Registry approval description.")
    metrics: dict[str, float] | None = Field(
        None, description="Metrics, for versions that were once the newest."
    )


class SmokeTestStatus(_Status):
    passed: bool = Field(description="Whether it passed.")
    latencyMs: float | None = Field(None, description="Round-trip latency of the request.")
    at: str | None = Field(None, description="When it ran.")
    version: int = Field(description="Version it tested.")
    configName: str = Field(description="Operator bookkeeping; the endpoint config it tested.")
    generation: int | None = Field(None, description="The metadata.generation it ran under.")
    message: str | None = Field(None, description="Why it failed, or a summary of the answer.")


class StageStatus(_Status):
    endpointName: str | None = Field(None, description="Endpoint name.")
    endpointConfigName: str | None = Field(None, description="Endpoint config it serves.")
    version: int | None = Field(None, description="Version the endpoint serves.")
    targetConfigName: str | None = Field(None, description="The config a deployment moves to.")
    targetVersion: int | None = Field(None, description="The version a deployment moves to.")
    endpointStatus: str | None = Field(None, description="Endpoint status, verbatim.")
    failureReason: str | None = Field(None, description="Failure reason, verbatim.")
    url: str | None = Field(None, description="Invocation URL.")


class StagingStatus(StageStatus):
    smokeTest: SmokeTestStatus | None = Field(None, description="The last smoke test.")


class ProductionStatus(StageStatus):
    previousVersion: int | None = Field(None, description="Version production served before.")


class PipelineActionStatus(_Status):
    name: str = Field(description="Action name, e.g. ApproveDeployment.")
    status: str | None = Field(None, description="Its latest status, verbatim.")
    summary: str | None = Field(None, description="The action's summary.")
    lastChange: str | None = Field(None, description="When its status last changed.")


class PipelineStageStatus(_Status):
    name: str = Field(description="Stage name.")
    status: str | None = Field(None, description="Its latest status, verbatim.")
    executionId: str | None = Field(None, description="The run it last ran in.")
    actions: list[PipelineActionStatus] = Field(default_factory=list, description="Actions.")


class ExecutionStatus(_Status):
    id: str = Field(description="Pipeline execution id.")
    status: str = Field(description="Its status, verbatim.")


class StackStatus(_Status):
    name: str = Field(description="Stack name.")
    status: str = Field(description="StackStatus, verbatim.")
    reason: str | None = Field(None, description="StackStatusReason, verbatim.")


class StacksStatus(_Status):
    staging: StackStatus | None = Field(None, description="The staging stack.")
    production: StackStatus | None = Field(None, description="The production stack.")


class GateStatus(_Status):
    executionId: str = Field(description="The pipeline run it decided.")
    version: int | None = Field(None, description="The version that run deployed to staging.")
    decision: str = Field(description="Approved or Rejected.")
    summary: str | None = Field(None, description="The summary written with the decision.")
    by: str | None = Field(None, description="Who decided.")


class ProjectStatus(_Status):
    name: str = Field(description="Project name.")
    id: str | None = Field(None, description="Project id.")
    arn: str | None = Field(None, description="Project ARN.")
    status: str | None = Field(None, description="ProjectStatus, verbatim.")
    message: str | None = Field(None, description="Why the project failed.")
    pipeline: str | None = Field(None, description="The project's pipeline.")
    execution: ExecutionStatus | None = Field(None, description="The pipeline's newest run.")
    stages: list[PipelineStageStatus] | None = Field(None, description="Pipeline stages.")
    stacks: StacksStatus | None = Field(None, description="The stacks the pipeline deploys.")
    gate: GateStatus | None = Field(None, description="The last decision at the gate.")


class StallStatus(_Status):
    """What failed terminally (`key` names the input) and under which generation."""

    model_config = ConfigDict(extra="allow")  # the CRD preserves unknown fields here
    key: str
    generation: int
    reason: str
    message: str
    # "action": a provider refused an action; the planner holds that action back until the
    # spec changes. "remote" / "policy": remote state or the platform policy refuses, judged
    # again every pass. "spec": the spec is invalid.
    source: str | None = None

    def holds(self, generation: int) -> bool:
        return self.generation == generation

    @property
    def rejudged(self) -> bool:
        """Judged afresh every pass (what is outside the spec may change), not held until the
        spec changes."""
        return self.source in ("remote", "policy")


class Condition(_Status):
    type: str
    status: str
    reason: str
    message: str
    observedGeneration: int | None = None
    lastTransitionTime: str


class ModelDeploymentStatus(_Status):
    observedGeneration: int | None = None
    phase: str | None = None
    message: str | None = None
    modelPackageGroup: GroupStatus | None = None
    registration: RegistrationStatus | None = None
    latestVersion: LatestVersionStatus | None = None
    versions: list[VersionStatus] | None = None
    staging: StagingStatus | None = None
    production: ProductionStatus | None = None
    project: ProjectStatus | None = None
    stalled: StallStatus | None = None
    conditions: list[Condition] = Field(default_factory=list)

    def stage(self, name: str) -> StagingStatus | ProductionStatus | None:
        return self.staging if name == "staging" else self.production

    def condition(self, ctype: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == ctype), None)

    def to_dict(self) -> dict:
        return self.model_dump(exclude_none=True)

    def observe_hint(self, spec: ModelDeploymentSpec, owner: str) -> ObserveHint:
        """What this status tells a provider's observe (only what is about the spec's group).
        The group's owner is passed on only when it is `owner`, the resource itself: another
        owner is read again each pass, since it may have let the group go."""
        group = spec.modelPackageGroup.name
        approval = spec.approval
        wanted = {approval.approvedVersion, spec.production.promotedVersion}
        wanted |= {r.version for r in approval.rejectedVersions}
        same_group = self.modelPackageGroup is not None and self.modelPackageGroup.name == group
        if not same_group:
            return ObserveHint(versions=frozenset(v for v in wanted if v is not None))
        stages: dict[str, RecordedStage] = {}
        for name in STAGES:
            st = self.stage(name) or StageStatus()
            wanted |= {st.version, st.targetVersion, getattr(st, "previousVersion", None)}
            config = st.endpointConfigName or ""
            settled = config and (st.targetConfigName or config) == config
            stages[name] = RecordedStage(st.endpointName or "", config if settled else "")
        if self.registration:
            wanted.add(self.registration.version)
        recorded = self.modelPackageGroup
        return ObserveHint(
            group_arn=recorded.arn or None,  # type: ignore[union-attr]
            group_owner=owner if recorded.owner == owner else None,  # type: ignore[union-attr]
            latest=self.latestVersion.as_version() if self.latestVersion else None,
            versions=frozenset(v for v in wanted if v is not None),
            **stages,
        )


def parse_status(raw: dict | None) -> ModelDeploymentStatus:
    """The status as the operator wrote it. One that does not parse (edited by hand) is started
    afresh: it is bookkeeping, and the next pass rebuilds it from the remote state."""
    try:
        return ModelDeploymentStatus.model_validate(raw or {})
    except ValidationError:
        return ModelDeploymentStatus()
