"""The `sagemaker` provider: SageMaker Model Registry + hosting through boto3.

boto3 honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SAGEMAKER, so the same code runs against an
emulator; there is deliberately no endpoint flag of our own. Registry calls live in
sagemaker_registry.py, hosting calls in sagemaker_hosting.py; this module holds `observe`,
which must stay within two read calls on a steady resync by trusting what status recorded.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from modeldeploy import naming
from modeldeploy.providers.sagemaker_hosting import Hosting
from modeldeploy.providers.sagemaker_registry import Registry
from modeldeploy.reconcile.actions import DeployEndpoint
from modeldeploy.remote import PENDING, Endpoint, InvokeResult, ModelVersion, Observed
from modeldeploy.spec import ModelDeploymentSpec

# One ListModelPackages page: versions the planner may need (the newest approved one, what a
# stage serves, rollback targets) are nearly always on it, so steady resyncs describe nothing.
LIST_PAGE = 50
STAGES = ("staging", "production")


def default_config() -> Config:
    return Config(retries={"mode": "standard"})


class SageMakerProvider:
    name = "sagemaker"

    def __init__(
        self,
        region: str,
        role_arn: str | None = None,
        *,
        sagemaker_client: Any = None,
        runtime_client: Any = None,
        s3_client: Any = None,
        config: Config | None = None,
    ) -> None:
        self.region = region
        self.role_arn = role_arn
        if not (sagemaker_client and runtime_client and s3_client):
            session = boto3.session.Session(region_name=region)
            config = config or default_config()
            sagemaker_client = sagemaker_client or session.client("sagemaker", config=config)
            runtime_client = runtime_client or session.client("sagemaker-runtime", config=config)
            s3_client = s3_client or session.client("s3", config=config)
        self.sm = sagemaker_client
        self.registry = Registry(sagemaker_client, s3_client, region)
        self.hosting = Hosting(sagemaker_client, runtime_client, self.registry, region, role_arn)

    # -- reads ------------------------------------------------------------------------------------

    def observe(
        self, spec: ModelDeploymentSpec, status: dict, *, namespace: str, name: str
    ) -> Observed:
        """Read calls: ListModelPackages + ListEndpoints when steady. Describes only for a new
        latest version (or one whose approval changed), referenced versions off the first page,
        an unknown group ARN, and endpoints that are not settled on the config status records."""
        group = spec.modelPackageGroup.name
        status = status or {}
        recorded_group = status.get("modelPackageGroup") or {}
        same_group = recorded_group.get("name") == group
        summaries = self.registry.list_versions(group, LIST_PAGE)

        group_arn = recorded_group.get("arn") if same_group else None
        if not summaries or not group_arn:
            # An empty list cannot tell an empty group from a missing one.
            group_arn = self.registry.group_arn(group)
            if group_arn is None:
                return Observed(group_arn=None)

        versions = self._versions(summaries, status if same_group else {}, spec)
        staging = production = None
        recorded_endpoints = any((status.get(s) or {}).get("endpointName") for s in STAGES)
        if summaries or recorded_endpoints:
            staging, production = self._endpoints(status, namespace, name)
        return Observed(
            group_arn=group_arn, versions=versions, staging=staging, production=production
        )

    def _versions(
        self, summaries: list[dict], status: dict, spec: ModelDeploymentSpec
    ) -> tuple[ModelVersion, ...]:
        by_number = {
            s["ModelPackageVersion"]: ModelVersion(
                version=s["ModelPackageVersion"],
                arn=s["ModelPackageArn"],
                approval_status=s.get("ModelApprovalStatus", PENDING),
            )
            for s in summaries
        }
        if summaries:
            newest = by_number[summaries[0]["ModelPackageVersion"]]
            by_number[newest.version] = self._latest_details(newest, status)

        wanted = {
            spec.approval.approvedVersion,
            spec.production.promotedVersion,
            (status.get("registration") or {}).get("version"),
        }
        for stage in STAGES:
            recorded = status.get(stage) or {}
            wanted |= {recorded.get(k) for k in ("version", "targetVersion", "previousVersion")}
        missing = {v for v in wanted if isinstance(v, int) and v not in by_number}
        if missing and summaries:
            # Off the first page: describe by ARN, built like the ARNs SageMaker returned.
            base = summaries[0]["ModelPackageArn"].rsplit("/", 1)[0]
            for number in sorted(missing):
                found = self.registry.describe_version(f"{base}/{number}")
                if found:
                    by_number[found.version] = found
        return tuple(sorted(by_number.values(), key=lambda v: v.version, reverse=True))

    def _latest_details(self, listed: ModelVersion, status: dict) -> ModelVersion:
        """Metrics and approval description of the newest version: from status when status
        already describes this version in this approval state, else one DescribeModelPackage."""
        recorded = status.get("latestVersion") or {}
        if (
            recorded.get("arn") == listed.arn
            and recorded.get("approvalStatus") == listed.approval_status
            and isinstance(recorded.get("metrics"), dict)
        ):
            return ModelVersion(
                version=listed.version,
                arn=listed.arn,
                approval_status=listed.approval_status,
                image=recorded.get("image", ""),
                artifact=recorded.get("artifact", ""),
                metrics={k: float(v) for k, v in recorded["metrics"].items()},
                artifact_digest=recorded.get("artifactDigest", ""),
                approval_description=recorded.get("approvalDescription", ""),
            )
        return self.registry.describe_version(listed.arn) or listed

    def _endpoints(
        self, status: dict, namespace: str, name: str
    ) -> tuple[Endpoint | None, Endpoint | None]:
        listed = self.hosting.list_endpoints(naming.endpoint_prefix(namespace, name))
        found: list[Endpoint | None] = []
        for stage in STAGES:
            endpoint = naming.endpoint_name(namespace, name, stage)
            if endpoint not in listed:
                found.append(None)
                continue
            recorded = status.get(stage) or {}
            config = recorded.get("endpointConfigName")
            settled = (
                listed[endpoint] == "InService"
                and recorded.get("endpointName") == endpoint
                and config
                and recorded.get("targetConfigName", config) == config
            )
            if settled:
                # ListEndpoints carries no config name; status recorded the one it settled on.
                found.append(
                    Endpoint(endpoint, "InService", config, url=self.hosting.url(endpoint))
                )
            else:
                found.append(self.hosting.describe_endpoint(endpoint))
        return found[0], found[1]

    def describe_endpoint(self, name: str) -> Endpoint | None:
        return self.hosting.describe_endpoint(name)

    # -- registry ---------------------------------------------------------------------------------

    def ensure_group(self, spec: ModelDeploymentSpec) -> str:
        return self.registry.ensure_group(spec)

    def register_version(self, spec: ModelDeploymentSpec) -> ModelVersion:
        return self.registry.register_version(spec)

    def set_approval(self, version_arn: str, status: str, description: str) -> None:
        self.registry.set_approval(version_arn, status, description)

    # -- hosting ----------------------------------------------------------------------------------

    def deploy(self, action: DeployEndpoint) -> None:
        self.hosting.deploy(action)

    def invoke(self, endpoint_name: str, payload: str, content_type: str) -> InvokeResult:
        return self.hosting.invoke(endpoint_name, payload, content_type)

    def delete_endpoint(self, name: str) -> bool:
        return self.hosting.delete_endpoint(name)
