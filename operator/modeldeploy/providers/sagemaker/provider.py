"""The `sagemaker` provider: SageMaker Model Registry and hosting through boto3.

boto3 honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SAGEMAKER, so the same code runs against an
emulator; there is deliberately no endpoint flag of our own. This module composes the registry
and the hosting and holds `observe`, which must stay within two read calls on a steady resync
by trusting what the hint says status recorded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import boto3
from botocore.config import Config

from modeldeploy import metrics, naming
from modeldeploy.providers.sagemaker.hosting import SageMakerHosting
from modeldeploy.providers.sagemaker.registry import SageMakerRegistry
from modeldeploy.remote import (
    PENDING,
    Endpoint,
    EndpointStatus,
    ModelVersion,
    Observed,
    ObserveHint,
)
from modeldeploy.spec import ModelDeploymentSpec

# One ListModelPackages page: versions the planner may need (the newest approved one, what a
# stage serves, rollback targets) are nearly always on it, so steady resyncs describe nothing.
LIST_PAGE = 50
STAGES = ("staging", "production")


def default_config() -> Config:
    return Config(retries={"mode": "standard"})


class SageMakerProvider:
    name = "sagemaker"
    max_resync_seconds: float | None = None  # the operator's own steady resync

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
        metrics.watch_aws_clients(self.name, sagemaker_client, runtime_client, s3_client)
        self.registry = SageMakerRegistry(sagemaker_client, s3_client, region)
        self.hosting = SageMakerHosting(sagemaker_client, runtime_client, region, role_arn)

    def observe(
        self, spec: ModelDeploymentSpec, hint: ObserveHint, *, namespace: str, name: str
    ) -> Observed:
        """Read calls: ListModelPackages + ListEndpoints when steady. Describes only for a new
        latest version (or one whose approval changed), referenced versions off the first page,
        an unknown group ARN, and endpoints that are not settled on the config status records."""
        group = spec.modelPackageGroup.name
        summaries = self.registry.list_versions(group, LIST_PAGE)
        group_arn = hint.group_arn
        if not summaries or not group_arn:
            # An empty list cannot tell an empty group from a missing one.
            group_arn = self.registry.group_arn(group)
            if group_arn is None:
                return Observed(group_arn=None)

        # Who owns the group: one ListTags, until status records the resource itself as owner.
        owner = hint.group_owner or self.registry.group_owner(group_arn)
        versions = self._versions(summaries, hint)
        staging = production = None
        if summaries or any(hint.stage(s).endpoint_name for s in STAGES):
            staging, production = self._endpoints(hint, namespace, name)
        return Observed(group_arn, versions, staging, production, group_owner=owner)

    def _versions(self, summaries: list[dict], hint: ObserveHint) -> tuple[ModelVersion, ...]:
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
            by_number[newest.version] = self._latest_details(newest, hint.latest)

        missing = {v for v in hint.versions if v not in by_number}
        if missing and summaries:
            # Off the first page: describe by ARN, built like the ARNs SageMaker returned.
            base = summaries[0]["ModelPackageArn"].rsplit("/", 1)[0]
            for number in sorted(missing):
                found = self.registry.describe_version(f"{base}/{number}")
                if found:
                    by_number[found.version] = found
        return tuple(sorted(by_number.values(), key=lambda v: v.version, reverse=True))

    def _latest_details(self, listed: ModelVersion, recorded: ModelVersion | None) -> ModelVersion:
        """Metrics and approval description of the newest version: as status recorded them
        when it recorded this version in this approval state, else one DescribeModelPackage."""
        if (
            recorded is not None
            and recorded.arn == listed.arn
            and recorded.approval_status == listed.approval_status
        ):
            return dataclasses.replace(recorded, version=listed.version)
        return self.registry.describe_version(listed.arn) or listed

    def _endpoints(
        self, hint: ObserveHint, namespace: str, name: str
    ) -> tuple[Endpoint | None, Endpoint | None]:
        listed = self.hosting.list_endpoints(naming.endpoint_prefix(namespace, name))
        found: list[Endpoint | None] = []
        for stage in STAGES:
            endpoint = naming.endpoint_name(namespace, name, stage)
            recorded = hint.stage(stage)
            if endpoint not in listed:
                found.append(None)
            elif (
                listed[endpoint] == EndpointStatus.IN_SERVICE
                and recorded.endpoint_name == endpoint
                and recorded.settled_config
            ):
                # ListEndpoints carries no config name; status recorded the one it settled on.
                config, url = recorded.settled_config, self.hosting.url(endpoint)
                found.append(Endpoint(endpoint, EndpointStatus.IN_SERVICE, config, url=url))
            else:
                found.append(self.hosting.describe(endpoint))
        return found[0], found[1]
