"""What a provider observes of the remote world, and what it is asked to do, in neutral terms.

The planner reads only these types, so it never needs to know which provider is behind them,
and providers import nothing from `reconcile`. Statuses keep SageMaker's spelling
(`PendingManualApproval`, `InService`, ...) for every provider.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

PENDING = "PendingManualApproval"
APPROVED = "Approved"
REJECTED = "Rejected"


class EndpointStatus(StrEnum):
    """SageMaker's endpoint life cycle; every hosting backend reports in these words."""

    CREATING = "Creating"
    UPDATING = "Updating"
    SYSTEM_UPDATING = "SystemUpdating"
    ROLLING_BACK = "RollingBack"
    DELETING = "Deleting"
    IN_SERVICE = "InService"
    FAILED = "Failed"
    OUT_OF_SERVICE = "OutOfService"
    UPDATE_ROLLBACK_FAILED = "UpdateRollbackFailed"

    @staticmethod
    def is_transitional(status: str) -> bool:
        """It will change on its own: poll, do not act."""
        return status in _TRANSITIONAL

    @staticmethod
    def is_failed(status: str) -> bool:
        """It will not recover by itself: delete and recreate it."""
        return status in _FAILED


_TRANSITIONAL = frozenset(
    {
        EndpointStatus.CREATING,
        EndpointStatus.UPDATING,
        EndpointStatus.SYSTEM_UPDATING,
        EndpointStatus.ROLLING_BACK,
        EndpointStatus.DELETING,
    }
)
_FAILED = frozenset(
    {EndpointStatus.FAILED, EndpointStatus.OUT_OF_SERVICE, EndpointStatus.UPDATE_ROLLBACK_FAILED}
)


@dataclass(frozen=True)
class ModelVersion:
    """One version in a model package group."""

    version: int
    arn: str
    approval_status: str  # PendingManualApproval | Approved | Rejected
    image: str = ""
    artifact: str = ""  # where the serving container reads it (s3:// or a local store path)
    metrics: dict[str, float] = field(default_factory=dict)
    artifact_digest: str = ""  # sha256 of model.tar.gz when known
    approval_description: str = ""


@dataclass(frozen=True)
class Endpoint:
    """A hosted endpoint as the provider sees it."""

    name: str
    status: str  # an EndpointStatus, verbatim
    config_name: str = ""
    failure_reason: str = ""
    url: str = ""
    # The model package version its model was made from, when the provider reads it (project
    # mode: the project's pipeline, not the operator, chose it).
    served_version: int | None = None


@dataclass(frozen=True)
class Observed:
    """Remote state relevant to one ModelDeployment, read without mutating anything.

    `versions` is newest first and holds at least the newest version plus every version the
    spec or status refers to (approvedVersion, promotedVersion, what each stage serves).
    """

    group_arn: str | None
    versions: tuple[ModelVersion, ...] = ()
    staging: Endpoint | None = None
    production: Endpoint | None = None
    group_owner: str = ""  # the owning ModelDeployment (namespace/name); "" for none
    project: Project | None = None  # project mode: the project, its pipeline and stacks

    def version(self, number: int | None) -> ModelVersion | None:
        return next((v for v in self.versions if v.version == number), None)

    @property
    def latest(self) -> ModelVersion | None:
        return self.versions[0] if self.versions else None


@dataclass(frozen=True)
class RecordedStage:
    """What status recorded of one stage's endpoint."""

    endpoint_name: str = ""
    # The config status saw the endpoint settle on, when no deployment is in flight: a listed
    # InService endpoint then needs no describe.
    settled_config: str = ""


@dataclass(frozen=True)
class ObserveHint:
    """What status already knows, so a steady observe can skip reads whose answer it holds."""

    group_arn: str | None = None  # the group status recorded, if it is the spec's group
    group_owner: str | None = None  # its owner, when status recorded the resource itself
    latest: ModelVersion | None = None  # the newest version as status described it
    versions: frozenset[int] = frozenset()  # every version the spec or status refers to
    staging: RecordedStage = RecordedStage()
    production: RecordedStage = RecordedStage()

    def stage(self, name: str) -> RecordedStage:
        return self.production if name == "production" else self.staging


@dataclass(frozen=True)
class DeployRequest:
    """Put `version` on an endpoint with this hash-named config (created when missing)."""

    stage: str  # staging | production
    endpoint_name: str
    config_name: str  # content-hash name: immutable, so a change is a new config
    version: ModelVersion
    instance_type: str
    instance_count: int
    data_capture_percent: int = 0
    data_capture_destination: str | None = None
    role_arn: str | None = None  # the identity the endpoint's model runs as (spec.roleArn)


@dataclass(frozen=True)
class InvokeResult:
    body: bytes
    content_type: str
    latency_ms: float


# Project mode: a SageMaker project made from the "MLOps template for model deployment" (or the
# local provider's counterpart) deploys the endpoints; the operator drives its approval gate.
SOURCE_STAGE, BUILD_STAGE = "Source", "Build"
STAGING_STAGE, PROD_STAGE = "DeployStaging", "DeployProd"
GATE_ACTION = "ApproveDeployment"  # the manual approval in DeployStaging
PROJECT_TEMPLATE = "MLOps template for model deployment"


def pipeline_name(name: str, project_id: str) -> str:
    """The template's CodePipeline (and CodeCommit repository)."""
    return f"sagemaker-{name}-{project_id}-modeldeploy"


def stack_name(name: str, project_id: str, stage: str) -> str:
    """The stack the pipeline deploys for StageName `stage` (staging | prod)."""
    return f"sagemaker-{name}-{project_id}-deploy-{stage}"


@dataclass(frozen=True)
class PipelineAction:
    """One action's latest execution (CodePipeline's actionStates[].latestExecution)."""

    name: str
    status: str = ""  # InProgress | Succeeded | Failed | Abandoned; "" never ran
    summary: str = ""
    token: str = ""  # set while a manual approval waits for a decision
    last_change: str = ""  # ISO 8601
    updated_by: str = ""  # who decided an approval (an IAM ARN, or the operator)


@dataclass(frozen=True)
class PipelineStage:
    """One stage's latest execution (CodePipeline's stageStates[])."""

    name: str
    status: str = ""  # InProgress | Succeeded | Failed | Stopped | Cancelled | ...; "" never ran
    execution_id: str = ""  # the pipeline execution the stage last ran
    actions: tuple[PipelineAction, ...] = ()

    def action(self, name: str) -> PipelineAction | None:
        return next((a for a in self.actions if a.name == name), None)


@dataclass(frozen=True)
class PipelineExecution:
    execution_id: str
    status: str  # InProgress | Succeeded | Superseded | Failed | Stopped | Cancelled | ...
    summary: str = ""


@dataclass(frozen=True)
class Stack:
    """A CloudFormation stack the pipeline deploys (its local counterpart says the same)."""

    name: str
    status: str  # StackStatus, verbatim
    reason: str = ""


@dataclass(frozen=True)
class Project:
    """A deployment project as observed: the project, its pipeline, stacks and endpoints."""

    name: str
    project_id: str
    arn: str
    status: str  # ProjectStatus: Pending | CreateInProgress | CreateCompleted | CreateFailed ...
    message: str = ""  # why it failed, verbatim
    owner: str = ""  # the ModelDeployment (namespace/name) its owner tag names; "" for none
    group: str = ""  # its SourceModelPackageGroupName
    pipeline: str = ""  # sagemaker-<name>-<id>-modeldeploy
    stages: tuple[PipelineStage, ...] = ()
    executions: tuple[PipelineExecution, ...] = ()  # newest first
    staging_stack: Stack | None = None
    production_stack: Stack | None = None
    staging: Endpoint | None = None  # <name>-staging, with served_version
    production: Endpoint | None = None  # <name>-prod, with served_version

    def stage(self, name: str) -> PipelineStage | None:
        return next((s for s in self.stages if s.name == name), None)

    def execution(self, execution_id: str) -> PipelineExecution | None:
        return next((e for e in self.executions if e.execution_id == execution_id), None)

    @property
    def gate(self) -> PipelineAction | None:
        """The ApproveDeployment action of DeployStaging."""
        stage = self.stage(STAGING_STAGE)
        return stage.action(GATE_ACTION) if stage else None


@dataclass(frozen=True)
class ProjectRequest:
    """Create a deployment project for `group`, tagged as owned by `owner`. Exactly one of
    template_product_name, product_id and template_url names the template."""

    name: str
    group: str
    owner: str  # namespace/name of the ModelDeployment
    template_product_name: str | None = PROJECT_TEMPLATE
    product_id: str | None = None
    provisioning_artifact_id: str | None = None
    template_url: str | None = None
    parameters: tuple[tuple[str, str], ...] = ()  # besides SourceModelPackageGroupName
    role_arn: str | None = None  # the launch role of a templateUrl project
    description: str = ""


@dataclass(frozen=True)
class GateDecision:
    """Approve or reject the ApproveDeployment action that waits in `execution_id`."""

    project: str
    pipeline: str
    execution_id: str
    token: str
    approve: bool
    summary: str
