"""The SageMaker Model Registry's versions, evaluation files and production endpoints, read only.

A version's evaluation file is its `ModelMetrics.ModelQuality.Statistics.S3Uri`, which
`modeldeploy register` and the operator set from `spec.model.metrics` (and SageMaker Pipelines
set from an evaluation step). What production serves is read from the endpoints themselves: a
production endpoint's config names its model, and the operator names that model by a hash of
the version's ARN (`naming.model_name`), so the version is recognised without tags or status.
Calls: ListModelPackages once; DescribeModelPackage and one GetObject per version shown;
ListEndpoints, then DescribeEndpoint and DescribeEndpointConfig per production endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from modeldeploy import naming
from modeldeploy.providers.errors import ProviderError
from modeldeploy.providers.sagemaker import SageMakerProvider
from modeldeploy.providers.sagemaker.errors import call_or_none
from modeldeploy.remote import PENDING, EndpointStatus, ModelVersion
from modeldeploy.report.evaluation import evaluation_from_json
from modeldeploy.report.sources import (
    PRODUCTION_SUFFIX,
    VersionEvaluation,
    read_s3,
    without_curves,
)

# ListModelPackages' largest page: a report looks at recent versions.
MAX_VERSIONS = 100


class SageMakerReader:
    def __init__(self, provider: SageMakerProvider) -> None:
        self.registry = provider.registry
        self.hosting = provider.hosting

    def versions(self, group: str) -> list[ModelVersion]:
        summaries = self.registry.list_versions(group, MAX_VERSIONS)
        if not summaries and self.registry.group_arn(group) is None:
            raise LookupError(f"model package group {group!r} does not exist")
        return [
            ModelVersion(
                version=int(s["ModelPackageVersion"]),
                arn=s["ModelPackageArn"],
                approval_status=s.get("ModelApprovalStatus", PENDING),
            )
            for s in summaries
        ]

    def evaluation(self, version: ModelVersion) -> VersionEvaluation:
        desc = self.registry.describe(version.arn)
        if desc is None:
            return without_curves(version, "the model package is gone")
        # The metrics the operator's approval rules see (package metadata first).
        full = self.registry.to_version(desc, read_metrics_file=False)
        quality = (desc.get("ModelMetrics") or {}).get("ModelQuality") or {}
        uri = (quality.get("Statistics") or {}).get("S3Uri")
        if not uri:
            return without_curves(full, "registered without a ModelMetrics statistics file")
        try:
            found = evaluation_from_json(read_s3(self.registry.s3, uri))
        except (ProviderError, ValueError) as err:
            return without_curves(full, f"{uri}: {err}")
        if not full.metrics:  # registered by a pipeline: the file is the only source
            full = replace(full, metrics=found.metrics)
        return VersionEvaluation(full, found, uri)

    def production(self, versions: Sequence[ModelVersion]) -> dict[int, list[str]]:
        serving: dict[int, list[str]] = {}
        names = self.hosting.list_endpoints(PRODUCTION_SUFFIX)
        for name in sorted(n for n in names if n.endswith(PRODUCTION_SUFFIX)):
            endpoint = self.hosting.describe(name)
            if endpoint is None or not endpoint.config_name:
                continue
            if EndpointStatus.is_failed(endpoint.status):
                continue
            config = call_or_none(
                f"DescribeEndpointConfig {endpoint.config_name}",
                self.registry.sm.describe_endpoint_config,
                EndpointConfigName=endpoint.config_name,
            )
            served = {v.get("ModelName") for v in (config or {}).get("ProductionVariants", [])}
            for v in versions:
                if naming.model_name(name, v.arn) in served:
                    serving.setdefault(v.version, []).append(name)
        return serving
