"""What a provider observes of the remote world, in provider-neutral terms.

The planner reads only these types, so it never needs to know which provider is behind them.
Statuses keep SageMaker's spelling (`PendingManualApproval`, `InService`, ...) for every provider.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PENDING = "PendingManualApproval"
APPROVED = "Approved"
REJECTED = "Rejected"

# Endpoint statuses that will change on their own: poll, do not act.
TRANSITIONAL_ENDPOINT_STATUSES = frozenset(
    {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"}
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
    status: str  # Creating | Updating | InService | Failed | ...
    config_name: str = ""
    failure_reason: str = ""
    url: str = ""


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

    def version(self, number: int | None) -> ModelVersion | None:
        return next((v for v in self.versions if v.version == number), None)

    @property
    def latest(self) -> ModelVersion | None:
        return self.versions[0] if self.versions else None


@dataclass(frozen=True)
class InvokeResult:
    body: bytes
    content_type: str
    latency_ms: float
