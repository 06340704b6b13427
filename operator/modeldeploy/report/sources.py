"""A group's versions, their evaluation files, and what production serves, for a report.

Read through a provider built read-only (`ProviderFactory(read_only=True)`, as `modeldeploy plan`
does), with one reader per provider (`local_source`, `sagemaker_source`): the `Registry`
interface has no "list every version" or "fetch the metrics file", because the operator never
needs them. Nothing here writes to a registry, a store or an endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from modeldeploy import naming
from modeldeploy.artifacts.metrics import MAX_METRICS_FILE
from modeldeploy.providers import ProviderFactory
from modeldeploy.providers.errors import TerminalError, aws
from modeldeploy.providers.interface import Provider
from modeldeploy.remote import ModelVersion
from modeldeploy.report.evaluation import Evaluation
from modeldeploy.spec import SpecError, parse_spec

EVALUATION_FILE = "evaluation.json"  # what `modeldeploy train` writes and `register` uploads
# Every production endpoint's name ends so (naming.endpoint_name); staging's never does.
PRODUCTION_SUFFIX = "-" + naming.endpoint_name("ns", "name", "production").rsplit("-", 1)[1]


@dataclass(frozen=True)
class VersionEvaluation:
    """One version as a report shows it: its metrics and, when found, its curves."""

    version: ModelVersion
    evaluation: Evaluation
    origin: str  # the evaluation file the curves came from, or why there are none

    @property
    def number(self) -> int:
        return self.version.version


class GroupReader(Protocol):
    def versions(self, group: str) -> list[ModelVersion]:
        """Newest first; LookupError when the group does not exist."""

    def evaluation(self, version: ModelVersion) -> VersionEvaluation: ...

    def production(self, versions: Sequence[ModelVersion]) -> dict[int, list[str]]:
        """Version number -> the production endpoints serving it, among `versions`."""


def reader_for(provider: Provider) -> GroupReader:
    from modeldeploy.providers.local import LocalProvider
    from modeldeploy.providers.sagemaker import SageMakerProvider

    if isinstance(provider, LocalProvider):
        from modeldeploy.report.local_source import LocalReader

        return LocalReader(provider)
    if isinstance(provider, SageMakerProvider):
        from modeldeploy.report.sagemaker_source import SageMakerReader

        return SageMakerReader(provider)
    raise SpecError(f"modeldeploy report does not read the {provider.name!r} provider")


def open_reader(group: str, provider: str | None, region: str | None) -> tuple[str, GroupReader]:
    """(provider name, reader) for `group`: the spec of a deployment that names only the group
    (and the region), which is all that picks and builds a provider. Its provider is filled in
    as the operator fills in a default, after validation: a read needs no roleArn, which
    SageMaker's rules ask of a spec that deploys."""
    factory = ProviderFactory(default=provider, read_only=True)
    raw: dict[str, Any] = {"modelPackageGroup": {"name": group}}
    if region:
        raw["region"] = region
    spec = parse_spec(raw).with_default_provider(factory.default)
    return factory.default, reader_for(factory.get(spec))


def without_curves(version: ModelVersion, why: str) -> VersionEvaluation:
    """The registry's metrics alone, and why there is nothing to draw."""
    return VersionEvaluation(version, Evaluation(dict(version.metrics)), why)


def sibling(uri: str, name: str = EVALUATION_FILE) -> str:
    """The URI of `name` in the same folder as `uri` (file:// or s3://)."""
    head, _, _ = uri.rpartition("/")
    return f"{head}/{name}"


def read_s3(client: Any, uri: str) -> bytes:
    """An evaluation file from S3, refused over the size the providers read."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise TerminalError(f"{uri!r} is not an s3://bucket/key URI")
    with aws(f"GetObject {uri}"):
        obj = client.get_object(Bucket=bucket, Key=key)
        if int(obj.get("ContentLength") or 0) > MAX_METRICS_FILE:
            raise TerminalError(f"{uri}: metrics file is over {MAX_METRICS_FILE} bytes")
        return obj["Body"].read(MAX_METRICS_FILE + 1)
