"""`modeldeploy register`: upload a locally trained model and register it as a version.

The same provider code path the operator uses, so what a person registers by hand and what
the operator registers from spec.model are indistinguishable.
"""

from __future__ import annotations

import os
from pathlib import Path

import boto3

from modeldeploy.artifacts.package import sha256_file
from modeldeploy.providers.sagemaker import SageMakerProvider
from modeldeploy.spec import ModelDeploymentSpec


def register_local_files(
    *,
    group: str,
    artifact: Path,
    metrics: Path | None,
    bucket: str,
    prefix: str = "",  # the S3 key prefix; empty: the group name
    region: str | None = None,
    framework_version: str | None = None,
    image: str | None = None,
) -> str:
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise ValueError("give --region or set AWS_REGION")
    if not artifact.is_file():
        raise ValueError(f"{artifact}: no such file")
    # Content-addressed keys: re-running with the same file uploads to the same place.
    key = f"{(prefix or group).strip('/')}/{sha256_file(artifact)[:16]}"
    s3 = boto3.client("s3", region_name=region)
    s3.upload_file(str(artifact), bucket, f"{key}/model.tar.gz")
    model: dict = {"artifact": f"s3://{bucket}/{key}/model.tar.gz"}
    if metrics:
        s3.upload_file(str(metrics), bucket, f"{key}/evaluation.json")
        model["metrics"] = f"s3://{bucket}/{key}/evaluation.json"
    if framework_version:
        model["frameworkVersion"] = framework_version
    if image:
        model["image"] = image
    spec = ModelDeploymentSpec.model_validate(
        {"region": region, "modelPackageGroup": {"name": group}, "model": model}
    )
    registry = SageMakerProvider(region=region).registry
    registry.ensure_group(group, spec.modelPackageGroup.description)
    return registry.register_version(spec).arn
