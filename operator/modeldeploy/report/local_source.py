"""The local provider's versions, evaluation files and production endpoints, read only.

The local registry keeps each version's metrics as numbers and every URI its artifact was
registered from (`State.sources`), not the URI of its metrics file. The evaluation file is looked
for where `modeldeploy train` writes it and `modeldeploy register` uploads it, beside the
artifact, and used only if its metrics are the ones registered with the version: a folder that
was trained into again since then holds another model's curves, and those are not shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlparse

from modeldeploy.artifacts.metrics import MAX_METRICS_FILE
from modeldeploy.artifacts.package import local_file
from modeldeploy.providers.errors import ProviderError, TerminalError
from modeldeploy.providers.local import LocalProvider
from modeldeploy.remote import EndpointStatus, ModelVersion
from modeldeploy.report.evaluation import evaluation_from_json, same_metrics
from modeldeploy.report.sources import (
    EVALUATION_FILE,
    PRODUCTION_SUFFIX,
    VersionEvaluation,
    read_s3,
    sibling,
    without_curves,
)


def _read(uri: str) -> bytes:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return local_file(uri, MAX_METRICS_FILE, "metrics file", TerminalError).read_bytes()
    if parsed.scheme == "s3":
        import boto3  # the client the local provider's store uses for s3:// artifacts

        return read_s3(boto3.client("s3"), uri)
    raise TerminalError(f"{uri}: the local provider reads file:// and s3:// only")


class LocalReader:
    def __init__(self, provider: LocalProvider) -> None:
        self.state = provider.state

    def versions(self, group: str) -> list[ModelVersion]:
        if not self.state.path.is_file():
            raise LookupError(f"there is no local registry at {self.state.path}")
        if self.state.group_arn(group) is None:
            raise LookupError(f"model package group {group!r} is not in {self.state.path}")
        return self.state.versions(group)

    def evaluation(self, version: ModelVersion) -> VersionEvaluation:
        if not version.metrics:
            return without_curves(version, "registered without metrics")
        tried = []
        for source in self.state.sources(version.artifact_digest):
            uri = sibling(source)
            try:
                found = evaluation_from_json(_read(uri))
            except (ProviderError, ValueError) as err:  # missing, unreadable: try the next
                tried.append(f"{uri} ({err})")
                continue
            if same_metrics(found.metrics, version.metrics):
                return VersionEvaluation(version, found, uri)
            tried.append(f"{uri} (its metrics are not the ones registered with the version)")
        return without_curves(
            version, f"no {EVALUATION_FILE} beside its artifact: " + "; ".join(tried)
        )

    def production(self, versions: Sequence[ModelVersion]) -> dict[int, list[str]]:
        """Production endpoints of any ModelDeployment that serve one of `versions`: the
        endpoint's row names the stored artifact its server reads, which is the version's."""
        by_artifact: dict[str, int] = {}
        for v in versions:  # newest first: the same bytes registered twice count as the newest
            by_artifact.setdefault(v.artifact, v.version)
        serving: dict[int, list[str]] = {}
        for name in self.state.endpoint_names(""):
            if not name.endswith(PRODUCTION_SUFFIX):
                continue
            row = self.state.endpoint(name)
            if row is None or EndpointStatus.is_failed(row.status):
                continue
            # During an update the old config still serves (pending_model is the new one).
            number = by_artifact.get(row.model)
            if number is not None:
                serving.setdefault(number, []).append(name)
        return serving
