"""The typed `ModelDeployment.spec`.

`crds/modeldeployment.yaml` is the schema the API server enforces; this module is the same
contract in Python (tests/test_crd_sync.py keeps the two from drifting). Rules the schema can
express live in both; `validate_spec` adds what only the operator can check.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

GROUP_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
ROLE_ARN_PATTERN = r"^arn:aws[a-z\-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@\-/]+$"
REGION_PATTERN = r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]$"
ARTIFACT_PATTERN = r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/.+|file://.+)$"
FRAMEWORK_VERSION_PATTERN = r"^[0-9]+\.[0-9]+-[0-9]+$"
INSTANCE_TYPE_PATTERN = r"^ml\.[a-z0-9]+\.[a-z0-9]+$"
METRIC_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$"
# The template's SageMakerProjectName: a letter first (CreateProject alone allows a digit).
PROJECT_NAME_PATTERN = r"^[a-zA-Z](-*[a-zA-Z0-9]){0,31}$"
PRODUCT_ID_PATTERN = r"^prod-[a-z0-9]{1,64}$"
ARTIFACT_ID_PATTERN = r"^pa-[a-z0-9]{1,64}$"
TEMPLATE_URL_PATTERN = r"^https://.+"
PARAMETER_KEY_PATTERN = r"^[A-Za-z][A-Za-z0-9]{0,127}$"

Provider = Literal["sagemaker", "local"]
Policy = Literal["Manual", "Automatic"]
DeletionPolicy = Literal["Delete", "Retain"]
ContentType = Literal["text/csv", "text/libsvm"]


class _Model(BaseModel):
    # Unknown fields are an error: a typo in git must not be silently ignored.
    # strict: "7" is not a version, as the API server would also say. Patterns are ASCII-only
    # ([0-9], not \d) because the API server's regex engine reads \d and \w as ASCII.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, strict=True)


class ModelPackageGroupSpec(_Model):
    name: Annotated[str, Field(pattern=GROUP_NAME_PATTERN, max_length=63)]
    description: Annotated[str | None, Field(max_length=1024)] = None
    # A group that exists and belongs to no ModelDeployment (a training pipeline or
    # `modeldeploy register` created it) is taken over only when the spec says so.
    adopt: bool = False


class ModelSpec(_Model):
    artifact: Annotated[str, Field(pattern=ARTIFACT_PATTERN, max_length=1024)]
    frameworkVersion: Annotated[str | None, Field(pattern=FRAMEWORK_VERSION_PATTERN)] = None
    image: Annotated[str | None, Field(min_length=1, max_length=255)] = None
    # Either the URI of an evaluation.json or an inline map of metric name -> value.
    metrics: str | dict[str, float] | None = None

    @model_validator(mode="after")
    def _one_image_source(self) -> ModelSpec:
        if self.frameworkVersion and self.image:
            raise ValueError("spec.model: give frameworkVersion or image, not both")
        return self


class ApprovalRule(_Model):
    metric: Annotated[str, Field(pattern=METRIC_NAME_PATTERN)]
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _has_bound(self) -> ApprovalRule:
        if self.min is None and self.max is None:
            raise ValueError(f"approval rule for {self.metric!r} needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"approval rule for {self.metric!r}: min is greater than max")
        return self


class Rejection(_Model):
    version: Annotated[int, Field(ge=1)]
    reason: Annotated[str, Field(min_length=1, max_length=1024)]


class ApprovalSpec(_Model):
    policy: Policy = "Manual"
    rules: Annotated[list[ApprovalRule], Field(max_length=32)] = []
    approvedVersion: Annotated[int | None, Field(ge=1)] = None
    rejectedVersions: Annotated[list[Rejection], Field(max_length=50)] = []

    @model_validator(mode="after")
    def _rules_for_automatic(self) -> ApprovalSpec:
        if self.policy == "Automatic" and not self.rules:
            raise ValueError("spec.approval: policy Automatic needs at least one rule")
        return self

    @model_validator(mode="after")
    def _one_decision_per_version(self) -> ApprovalSpec:
        rejected = [r.version for r in self.rejectedVersions]
        if len(set(rejected)) != len(rejected):
            raise ValueError("spec.approval.rejectedVersions: a version is listed twice")
        if self.approvedVersion in rejected:
            raise ValueError(
                f"spec.approval: version {self.approvedVersion} is both approvedVersion and in "
                "rejectedVersions"
            )
        return self


class SmokeTestSpec(_Model):
    payload: Annotated[str, Field(min_length=1, max_length=65536)]
    contentType: ContentType = "text/csv"
    maxLatencyMs: Annotated[int, Field(ge=1, le=60000)] = 500


class StagingSpec(_Model):
    instanceType: Annotated[str, Field(pattern=INSTANCE_TYPE_PATTERN)] = "ml.m5.large"
    instanceCount: Annotated[int, Field(ge=1, le=100)] = 1
    dataCapturePercent: Annotated[int, Field(ge=0, le=100)] = 0
    # Where captured requests go; default: the SageMaker default bucket of the role's account.
    dataCaptureDestination: Annotated[str | None, Field(pattern=r"^s3://.+")] = None
    smokeTest: SmokeTestSpec | None = None


class ProductionSpec(_Model):
    instanceType: Annotated[str, Field(pattern=INSTANCE_TYPE_PATTERN)] = "ml.m5.large"
    instanceCount: Annotated[int, Field(ge=1, le=100)] = 1
    promotion: Policy = "Manual"
    promotedVersion: Annotated[int | None, Field(ge=1)] = None


class ProjectSpec(_Model):
    """The SageMaker project whose pipeline deploys the endpoints (spec.deployment.via:
    Project). The template is the built-in "MLOps template for model deployment" unless
    productId or templateUrl names another with the same pipeline."""

    name: Annotated[str, Field(pattern=PROJECT_NAME_PATTERN, max_length=32)]
    templateProductName: Annotated[str | None, Field(min_length=1, max_length=8191)] = None
    productId: Annotated[str | None, Field(pattern=PRODUCT_ID_PATTERN, max_length=100)] = None
    provisioningArtifactId: Annotated[
        str | None, Field(pattern=ARTIFACT_ID_PATTERN, max_length=100)
    ] = None
    templateUrl: Annotated[str | None, Field(pattern=TEMPLATE_URL_PATTERN, max_length=1024)] = None
    parameters: Annotated[
        dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=20)
    ] = {}

    @model_validator(mode="after")
    def _one_template(self) -> ProjectSpec:
        named = [f for f in ("templateProductName", "productId", "templateUrl") if getattr(self, f)]
        if len(named) > 1:
            raise ValueError(
                f"spec.deployment.project: give one of templateProductName, productId and "
                f"templateUrl, not {' and '.join(named)}"
            )
        if self.provisioningArtifactId and not self.productId:
            raise ValueError("spec.deployment.project.provisioningArtifactId needs productId")
        if "SourceModelPackageGroupName" in self.parameters:
            raise ValueError(
                "spec.deployment.project.parameters.SourceModelPackageGroupName is set from "
                "spec.modelPackageGroup.name; remove it"
            )
        for key in self.parameters:
            if not re.match(PARAMETER_KEY_PATTERN, key):
                raise ValueError(f"spec.deployment.project.parameters: {key!r} is not a name")
        return self


class DeploymentSpec(_Model):
    """Who deploys the endpoints: the operator itself (Direct), or a project's pipeline."""

    via: Literal["Direct", "Project"] = "Direct"
    project: ProjectSpec | None = None

    @model_validator(mode="after")
    def _project_for_project(self) -> DeploymentSpec:
        if (self.via == "Project") != (self.project is not None):
            raise ValueError(
                "spec.deployment: via Project needs spec.deployment.project, and only it"
            )
        return self


class ModelDeploymentSpec(_Model):
    provider: Provider | None = None
    region: Annotated[str | None, Field(pattern=REGION_PATTERN, max_length=32)] = None
    roleArn: Annotated[str | None, Field(pattern=ROLE_ARN_PATTERN, max_length=2048)] = None
    modelPackageGroup: ModelPackageGroupSpec
    model: ModelSpec | None = None
    approval: ApprovalSpec = ApprovalSpec()
    staging: StagingSpec = StagingSpec()
    production: ProductionSpec = ProductionSpec()
    deployment: DeploymentSpec = DeploymentSpec()
    deletionPolicy: DeletionPolicy = "Delete"

    @property
    def project(self) -> ProjectSpec | None:
        """The deployment project, in project mode."""
        return self.deployment.project if self.deployment.via == "Project" else None

    @model_validator(mode="after")
    def _provider_rules(self) -> ModelDeploymentSpec:
        if self.provider == "sagemaker":
            if not self.roleArn:
                raise ValueError("spec.roleArn is required when spec.provider is sagemaker")
            if self.model and self.model.artifact.startswith("file://"):
                raise ValueError(
                    "spec.model.artifact: file:// artifacts work only with the local provider; "
                    "upload it to S3 for sagemaker"
                )
        return self

    def with_default_provider(self, default: str) -> ModelDeploymentSpec:
        return self if self.provider else self.model_copy(update={"provider": default})


class SpecError(ValueError):
    """The spec is invalid: terminal until the spec changes."""


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = "spec"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def parse_spec(raw: dict) -> ModelDeploymentSpec:
    """Parse a raw spec, raising SpecError with one line per problem naming the field."""
    try:
        return ModelDeploymentSpec.model_validate(raw or {})
    except ValidationError as err:
        lines = []
        for e in err.errors():
            msg = re.sub(r"^Value error, ", "", e["msg"])
            loc = tuple(p for p in e["loc"] if not str(p).startswith(("function-", "str", "dict")))
            lines.append(msg if msg.startswith("spec") else f"{_field_path(loc)}: {msg}")
        raise SpecError("; ".join(lines)) from None
