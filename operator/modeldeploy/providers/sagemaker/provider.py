"""The `sagemaker` provider: SageMaker Model Registry and hosting through boto3.

boto3 honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SAGEMAKER, so the same code runs against an
emulator; there is deliberately no endpoint flag of our own. This module composes the registry
and the hosting and holds `observe`, which reads the region's shared views (views.py) and
trusts what the hint says status recorded: a steady resync makes no call of its own.

One provider serves a region for every resource in it, whatever role each names (the role is
the endpoint's identity, carried by each DeployRequest; the credentials are the operator's).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any

import boto3
from botocore.config import Config

from modeldeploy import metrics, naming
from modeldeploy.providers.sagemaker import limits
from modeldeploy.providers.sagemaker.hosting import SageMakerHosting
from modeldeploy.providers.sagemaker.project import SageMakerProjects
from modeldeploy.providers.sagemaker.registry import SageMakerRegistry
from modeldeploy.providers.sagemaker.views import EndpointsView, VersionsView
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


def view_seconds() -> float:
    """How old the shared views may grow before a pass lists the region again."""
    return float(os.environ.get("MODELDEPLOY_VIEW_SECONDS", 60))


def default_config() -> Config:
    return limits.client_config()


class SageMakerProvider:
    name = "sagemaker"
    max_resync_seconds: float | None = None  # the operator's own steady resync

    def __init__(
        self,
        region: str,
        default_role: str | None = None,
        *,
        sagemaker_client: Any = None,
        runtime_client: Any = None,
        s3_client: Any = None,
        servicecatalog_client: Any = None,
        codepipeline_client: Any = None,
        cloudformation_client: Any = None,
        iam_client: Any = None,
        config: Config | None = None,
        view_max_age: float | None = None,
    ) -> None:
        self.region = region
        self._config = config or default_config()
        self._session: Any = None
        self._lock = threading.Lock()  # a boto3 session is not thread-safe
        if not (sagemaker_client and runtime_client and s3_client):
            session = self._boto_session()
            sagemaker_client = sagemaker_client or session.client("sagemaker", config=self._config)
            runtime_client = runtime_client or session.client(
                "sagemaker-runtime", config=self._config
            )
            s3_client = s3_client or session.client("s3", config=self._config)
        metrics.watch_aws_clients(self.name, sagemaker_client, runtime_client, s3_client)
        rate = limits.max_tps()
        self.rate_limit = limits.TokenBucket(rate) if rate > 0 else None
        if self.rate_limit:  # the control plane only: invocations have their own quotas
            limits.limit(sagemaker_client, self.rate_limit)
        # Project mode's services: made when first needed (most resources never use them).
        self._clients: dict[str, Any] = {}
        injected = {
            "servicecatalog": servicecatalog_client,
            "codepipeline": codepipeline_client,
            "cloudformation": cloudformation_client,
            "iam": iam_client,
        }
        for service, client in injected.items():
            if client is not None:
                self._clients[service] = self._watched(client)
        max_age = view_seconds() if view_max_age is None else view_max_age
        self.versions = VersionsView(sagemaker_client, limit=LIST_PAGE, max_age=max_age)
        self.endpoints = EndpointsView(sagemaker_client, max_age=max_age)
        self.registry = SageMakerRegistry(sagemaker_client, s3_client, region, self.versions)
        self.hosting = SageMakerHosting(
            sagemaker_client, runtime_client, region, self.endpoints, default_role
        )
        self.projects = SageMakerProjects(sagemaker_client, self.client, self.hosting.url)

    def _boto_session(self) -> Any:
        if self._session is None:
            self._session = boto3.session.Session(region_name=self.region)
        return self._session

    def _watched(self, client: Any) -> Any:
        metrics.watch_aws_clients(self.name, client)
        if self.rate_limit:  # the same region's budget as SageMaker's control plane
            limits.limit(client, self.rate_limit)
        return client

    def client(self, service: str) -> Any:
        """The client of a project-mode service (servicecatalog, codepipeline, ...)."""
        with self._lock:
            if service not in self._clients:
                made = self._boto_session().client(service, config=self._config)
                self._clients[service] = self._watched(made)
            return self._clients[service]

    def observe(
        self, spec: ModelDeploymentSpec, hint: ObserveHint, *, namespace: str, name: str
    ) -> Observed:
        """Reads nothing remote when steady: versions and endpoints come from the region's
        views. Describes only an unknown group, a new latest version (or one whose approval
        changed), referenced versions off the view, and endpoints this process changed or that
        are not settled on the config status records."""
        group = spec.modelPackageGroup.name
        # The group status recorded is trusted: an empty view cannot tell an empty group from
        # a missing one, and a group deleted behind our back fails the next registration.
        group_arn = hint.group_arn or self.registry.group_arn(group)
        # Project mode: the project's pipeline deploys <project>-staging and <project>-prod;
        # the operator's own endpoint names are not read.
        project = self.projects.describe(spec.project.name) if spec.project else None
        if group_arn is None:  # no versions to list either
            return Observed(group_arn=None, project=project)
        summaries = self.versions.versions(group)

        # Who owns the group: one ListTags, until status records the resource itself as owner.
        owner = hint.group_owner or self.registry.group_owner(group_arn)
        versions = self._versions(summaries, hint)
        if spec.project is not None:
            staging = project.staging if project else None
            production = project.production if project else None
            return Observed(
                group_arn, versions, staging, production, group_owner=owner, project=project
            )
        staging = production = None
        if summaries or any(hint.stage(s).endpoint_name for s in STAGES):
            staging = self._endpoint("staging", hint, namespace, name)
            production = self._endpoint("production", hint, namespace, name)
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
            # Off the view: describe by ARN, built like the ARNs SageMaker returned.
            base = summaries[0]["ModelPackageArn"].rsplit("/", 1)[0]
            for number in sorted(missing):
                found = self.registry.describe_version(f"{base}/{number}")
                if found:
                    by_number[found.version] = found
        return tuple(sorted(by_number.values(), key=lambda v: v.version, reverse=True))

    def _latest_details(self, listed: ModelVersion, recorded: ModelVersion | None) -> ModelVersion:
        """Metrics and approval description of the newest version: as status recorded them
        when it recorded this version in this approval state, else its description (kept by
        the registry while the approval is the listed one)."""
        if (
            recorded is not None
            and recorded.arn == listed.arn
            and recorded.approval_status == listed.approval_status
        ):
            return dataclasses.replace(recorded, version=listed.version)
        found = self.registry.describe_version(listed.arn, listed_status=listed.approval_status)
        return found or listed

    def _endpoint(
        self, stage: str, hint: ObserveHint, namespace: str, name: str
    ) -> Endpoint | None:
        endpoint = naming.endpoint_name(namespace, name, stage)
        recorded = hint.stage(stage)
        if created := self.endpoints.created_status(endpoint):
            status, config = created
            return Endpoint(endpoint, status, config, url=self.hosting.url(endpoint))
        if not self.endpoints.needs_describe(endpoint):
            listed = self.endpoints.listed_status(endpoint)
            if listed is None:
                return None
            if (
                listed == EndpointStatus.IN_SERVICE
                and recorded.endpoint_name == endpoint
                and recorded.settled_config
            ):
                # A listing carries no config name; status recorded the one it settled on.
                config, url = recorded.settled_config, self.hosting.url(endpoint)
                return Endpoint(endpoint, EndpointStatus.IN_SERVICE, config, url=url)
        return self.hosting.describe(endpoint)
