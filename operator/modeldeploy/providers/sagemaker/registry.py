"""The sagemaker provider's registry: model package groups, versions and their approval.

A version's artifact is checked when it is registered (artifacts.py); its sha256 is kept in
the package's metadata, which is what makes registering the same bytes twice return the same
version.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from modeldeploy.artifacts.metrics import MAX_METRICS_FILE, metrics_from_json
from modeldeploy.providers.errors import TerminalError, TransientError, aws, from_aws
from modeldeploy.providers.sagemaker.artifacts import (
    ArtifactChecker,
    CheckedArtifact,
    Kept,
    split_s3,
)
from modeldeploy.providers.sagemaker.errors import (
    already_exists,
    call_or_none,
    retry_only_refusals,
)
from modeldeploy.providers.sagemaker.groups import GroupsView
from modeldeploy.providers.sagemaker.views import VersionsView
from modeldeploy.remote import PENDING, ModelVersion
from modeldeploy.spec import ModelDeploymentSpec

# The ModelDeployment (namespace/name) that owns a group: only it deploys from the group.
OWNER_TAG = "modeldeploy.dev/owner"
DIGEST_KEY = "modeldeploy.dev/artifact-sha256"
FRAMEWORK_KEY = "modeldeploy.dev/framework-version"
WRITER_KEY = "modeldeploy.dev/xgboost-version"
METRIC_PREFIX = "metric."
# CustomerMetadataProperties holds at most 50 entries; keep room for our own keys.
MAX_METRICS = 45
# Versions searched for an already registered artifact (each costs a DescribeModelPackage).
IDEMPOTENCY_WINDOW = 10
CONTENT_TYPES = ["text/csv", "text/libsvm"]
RESPONSE_TYPES = ["text/csv", "application/json", "application/jsonlines"]
# Model package descriptions kept (by ARN: a version is immutable but for its approval).
DESCRIPTIONS_KEPT = 2048
MISSING_KEPT = 1024
# How long a group observe found missing (described, or absent from a listing of them all) is
# believed missing by the create that follows.
MISSING_TRUSTED = 5.0


# -- helpers --------------------------------------------------------------------------------------


def version_number(arn: str) -> int:
    return int(arn.rsplit("/", 1)[1])


def group_of(version_arn: str) -> str:
    """arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version> -> <group>"""
    return version_arn.rsplit("/", 2)[-2]


def _metadata_key(metric: str) -> str:
    # CustomerMetadataProperties keys allow letters, digits, spaces and _.:/=+-@ only.
    return (METRIC_PREFIX + re.sub(r"[^\w.:/=+\-@ ]", "_", metric))[:128]


def metrics_from_metadata(props: dict[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in props.items():
        if key.startswith(METRIC_PREFIX):
            try:
                out[key[len(METRIC_PREFIX) :]] = float(value)
            except ValueError:
                continue
    return out


class SageMakerRegistry:
    """Model package groups and versions, through the SageMaker API and S3."""

    def __init__(self, sm: Any, s3: Any, region: str, versions: VersionsView) -> None:
        self.sm = sm
        self.s3 = s3
        self.region = region
        self.versions = versions
        self._descriptions = Kept(DESCRIPTIONS_KEPT)
        self.artifacts = ArtifactChecker(s3, region)
        self._missing = Kept(MISSING_KEPT)  # group -> when a lookup found it missing
        self.groups = GroupsView(sm, trust=MISSING_TRUSTED)
        # An unanswered CreateModelPackage may have registered a version, and re-sending it
        # registers another wherever ClientToken is not honoured (the emulator ignores it).
        # So the SDK retries it only when it was refused; otherwise the next pass finds what
        # the unanswered attempt registered, by digest (find_registered).
        sm.meta.events.register(
            "needs-retry.sagemaker.CreateModelPackage",
            retry_only_refusals,
            unique_id="modeldeploy-create-model-package-retry",
        )

    # -- groups -----------------------------------------------------------------------------------

    def group_arn(self, group: str) -> str | None:
        arn = self.groups.lookup(group, self.describe_group)
        if arn is None:
            self._missing.keep(group, time.monotonic())
            return None
        self._missing.drop(group)
        return arn

    def describe_group(self, group: str) -> str | None:
        found = call_or_none(
            f"DescribeModelPackageGroup {group}",
            self.sm.describe_model_package_group,
            ModelPackageGroupName=group,
        )
        return found["ModelPackageGroupArn"] if found else None

    def _just_seen_missing(self, group: str) -> bool:
        seen = self._missing.get_fresh(group)
        return seen is not None and time.monotonic() - seen < MISSING_TRUSTED

    def ensure_group(self, name: str, description: str | None, owner: str = "") -> str:
        """The group's ARN, created (tagged with its owner) when missing. Described first,
        although observe has just looked: an existing group must never be retagged, and the
        emulator overwrites a group created twice where SageMaker refuses. Unless observe found
        it missing a moment ago: then SageMaker's refusal of a second create guards the race."""
        if not self._just_seen_missing(name) and (arn := self.group_arn(name)):
            return arn
        kwargs: dict[str, Any] = {"ModelPackageGroupName": name}
        if description:
            kwargs["ModelPackageGroupDescription"] = description
        if owner:
            kwargs["Tags"] = [{"Key": OWNER_TAG, "Value": owner}]
        what = f"CreateModelPackageGroup {name}"
        try:
            arn = self.sm.create_model_package_group(**kwargs)["ModelPackageGroupArn"]
        except ClientError as err:
            if already_exists(err):
                # Created since our describe (by someone else, or by a create whose answer
                # was lost): who owns it is for the next pass to read, not for us to assume.
                raise TransientError(f"{what}: the group exists now; looking again") from err
            raise from_aws(err, what) from err
        except BotoCoreError as err:
            raise from_aws(err, what) from err
        self._missing.drop(name)
        self.groups.created(name, arn)
        self.versions.group_created(name)
        return arn

    def group_owner(self, group_arn: str) -> str:
        with aws(f"ListTags {group_arn}"):
            tags = self.sm.list_tags(ResourceArn=group_arn).get("Tags", [])
        return next((t["Value"] for t in tags if t["Key"] == OWNER_TAG), "")

    def release_group(self, group_arn: str, owner: str) -> None:
        if self.group_owner(group_arn) == owner:
            with aws(f"DeleteTags {group_arn}"):
                self.sm.delete_tags(ResourceArn=group_arn, TagKeys=[OWNER_TAG])

    def claim_group(self, group_arn: str, owner: str) -> None:
        # Tags have no compare-and-set: two resources adopting the same group at the same
        # moment can both write; the next pass of each reads who won.
        current = self.group_owner(group_arn)
        if current and current != owner:
            raise TerminalError(f"{group_arn} belongs to ModelDeployment {current}")
        if not current:
            with aws(f"AddTags {group_arn}"):
                self.sm.add_tags(ResourceArn=group_arn, Tags=[{"Key": OWNER_TAG, "Value": owner}])

    # -- versions ---------------------------------------------------------------------------------

    def list_versions(self, group: str, limit: int) -> list[dict]:
        """Newest first. A missing group lists as empty (as on SageMaker)."""
        with aws(f"ListModelPackages {group}"):
            page = self.sm.list_model_packages(
                ModelPackageGroupName=group,
                SortBy="CreationTime",
                SortOrder="Descending",
                MaxResults=limit,
            )
        summaries = page.get("ModelPackageSummaryList", [])
        # Sort again: the newest version drives the pipeline, so do not trust one server's order.
        return sorted(summaries, key=lambda s: s.get("ModelPackageVersion", 0), reverse=True)

    def describe(self, arn: str, listed_status: str | None = None) -> dict | None:
        """DescribeModelPackage by ARN (the emulator resolves nothing else). A version is
        immutable but for its approval, so a description is kept and used again while the
        approval `listed_status` (what a listing says now) is the one it holds."""
        kept = self._descriptions.get_fresh(arn)
        if kept is not None and listed_status in (None, kept.get("ModelApprovalStatus")):
            return kept
        found = call_or_none(
            f"DescribeModelPackage {arn}", self.sm.describe_model_package, ModelPackageName=arn
        )
        if found is not None:
            found.pop("ResponseMetadata", None)
            self._descriptions.keep(arn, found)
        return found

    def describe_version(
        self, arn: str, *, read_metrics_file: bool = True, listed_status: str | None = None
    ) -> ModelVersion | None:
        desc = self.describe(arn, listed_status)
        return self.to_version(desc, read_metrics_file=read_metrics_file) if desc else None

    def to_version(self, desc: dict, *, read_metrics_file: bool = True) -> ModelVersion:
        containers = (desc.get("InferenceSpecification") or {}).get("Containers") or [{}]
        props = desc.get("CustomerMetadataProperties") or {}
        metrics = metrics_from_metadata(props)
        stats = ((desc.get("ModelMetrics") or {}).get("ModelQuality") or {}).get("Statistics")
        if not metrics and read_metrics_file and stats and stats.get("S3Uri"):
            # Registered by someone else (a training pipeline): read its evaluation report.
            metrics = self.read_metrics(stats["S3Uri"])
        return ModelVersion(
            version=int(desc.get("ModelPackageVersion") or version_number(desc["ModelPackageArn"])),
            arn=desc["ModelPackageArn"],
            approval_status=desc.get("ModelApprovalStatus", PENDING),
            image=containers[0].get("Image", ""),
            artifact=containers[0].get("ModelDataUrl", ""),
            metrics=metrics,
            artifact_digest=props.get(DIGEST_KEY, ""),
            approval_description=desc.get("ApprovalDescription", ""),
        )

    def read_metrics(self, uri: str) -> dict[str, float]:
        bucket, key = split_s3(uri)
        with aws(f"GetObject {uri}"):
            obj = self.s3.get_object(Bucket=bucket, Key=key)
            if int(obj.get("ContentLength") or 0) > MAX_METRICS_FILE:
                raise TerminalError(f"{uri}: metrics file is over {MAX_METRICS_FILE} bytes")
            raw = obj["Body"].read(MAX_METRICS_FILE + 1)
        try:
            return metrics_from_json(raw)
        except ValueError as err:
            raise TerminalError(f"{uri}: unreadable metrics file: {err}") from err

    def find_registered(self, group: str, digest: str, image: str) -> ModelVersion | None:
        """A recent version holding the same artifact bytes for the same image, if any.
        Listed afresh, not from the shared view: a create whose answer was lost registered a
        version that no view has seen. Not listed at all when this process created the group
        and has registered nothing in it (every write it made since is known)."""
        if self.versions.created_empty(group):
            return None
        for summary in self.list_versions(group, IDEMPOTENCY_WINDOW):
            desc = self.describe(summary["ModelPackageArn"], summary.get("ModelApprovalStatus"))
            if not desc:
                continue
            version = self.to_version(desc, read_metrics_file=False)
            if version.artifact_digest == digest and version.image == image:
                return version
        return None

    def register_version(self, spec: ModelDeploymentSpec) -> ModelVersion:
        model = spec.model
        if model is None:
            raise TerminalError("spec.model is not set: there is no artifact to register")
        group = spec.modelPackageGroup.name
        checked = self.artifacts.check(spec)
        existing = self.find_registered(group, checked.digest, checked.image)
        if existing:
            return existing

        metrics = self._metrics(model.metrics)
        kwargs = _create_request(spec, checked, metrics)
        try:
            with aws(f"CreateModelPackage in {group}"):
                arn = self.sm.create_model_package(**kwargs)["ModelPackageArn"]
        except Exception:
            self.versions.forget(group)  # an unanswered create may have registered one
            raise
        self.versions.version_added(group, arn, version_number(arn), PENDING)
        # What it registered is what a describe would say: kept, so approving it reads nothing.
        described = {k: v for k, v in kwargs.items() if k != "ClientToken"}
        described |= {"ModelPackageArn": arn, "ModelPackageVersion": version_number(arn)}
        self._descriptions.keep(arn, described)
        return ModelVersion(
            version=version_number(arn),
            arn=arn,
            approval_status=PENDING,
            image=checked.image,
            artifact=model.artifact,
            metrics=metrics,
            artifact_digest=checked.digest,
        )

    def _metrics(self, metrics: str | dict[str, float] | None) -> dict[str, float]:
        if not isinstance(metrics, str):
            return dict(metrics or {})
        if not metrics.startswith("s3://"):
            raise TerminalError("spec.model.metrics must be an s3:// URI or an inline map")
        return self.read_metrics(metrics)

    def set_approval(self, version_arn: str, status: str, description: str) -> None:
        desc = self.describe(version_arn)
        if desc is None:
            raise TerminalError(f"model package {version_arn} does not exist")
        kwargs: dict[str, Any] = {
            "ModelPackageArn": version_arn,
            "ModelApprovalStatus": status,
            "ApprovalDescription": description[:1024],
        }
        # SageMaker keeps CustomerMetadataProperties when an update omits them; the emulator
        # wipes them. Passing them back unchanged is right for both.
        if desc.get("CustomerMetadataProperties"):
            kwargs["CustomerMetadataProperties"] = desc["CustomerMetadataProperties"]
        group = group_of(version_arn)
        try:
            with aws(f"UpdateModelPackage {version_arn}"):
                self.sm.update_model_package(**kwargs)
        except Exception:
            self._descriptions.drop(version_arn)  # its approval is unknown now
            self.versions.forget(group)
            raise
        approval = {"ModelApprovalStatus": status, "ApprovalDescription": description[:1024]}
        self._descriptions.keep(version_arn, {**desc, **approval})
        self.versions.approval_set(group, version_arn, status)


def _create_request(
    spec: ModelDeploymentSpec, checked: CheckedArtifact, metrics: dict[str, float]
) -> dict[str, Any]:
    """CreateModelPackage's arguments for spec.model, checked and digested."""
    model = spec.model
    assert model is not None
    digest, image, framework = checked.digest, checked.image, checked.framework
    props = {DIGEST_KEY: digest, WRITER_KEY: checked.writer}
    token = f"{spec.modelPackageGroup.name}|{digest}|{image}"
    if framework:
        props[FRAMEWORK_KEY] = framework
    for metric in sorted(metrics)[:MAX_METRICS]:
        props[_metadata_key(metric)] = repr(float(metrics[metric]))
    instance_types = sorted({spec.staging.instanceType, spec.production.instanceType})
    kwargs: dict[str, Any] = {
        "ModelPackageGroupName": spec.modelPackageGroup.name,
        "ModelPackageDescription": f"{model.artifact} (sha256 {digest[:12]})",
        "InferenceSpecification": {
            "Containers": [{"Image": image, "ModelDataUrl": model.artifact}],
            "SupportedContentTypes": CONTENT_TYPES,
            "SupportedResponseMIMETypes": RESPONSE_TYPES,
            "SupportedRealtimeInferenceInstanceTypes": instance_types,
        },
        # Explicit: SageMaker's default depends on the API caller; never leave it implicit.
        "ModelApprovalStatus": PENDING,
        # SageMaker's own idempotency: a retried create with this token returns the same ARN.
        # The group is part of it: the same bytes registered in another group are another
        # version, not this one.
        "ClientToken": "md-" + hashlib.sha256(token.encode()).hexdigest()[:32],
        "CustomerMetadataProperties": props,
    }
    if isinstance(model.metrics, str):
        kwargs["ModelMetrics"] = {
            "ModelQuality": {
                "Statistics": {"ContentType": "application/json", "S3Uri": model.metrics}
            }
        }
    return kwargs
