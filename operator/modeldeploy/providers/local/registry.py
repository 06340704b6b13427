"""The local provider's registry: groups and versions in `state`, artifacts in the `store`.

Registering copies the artifact into the content-addressed store after the same checks the
sagemaker provider makes, so the same bytes register once. Without a store (a preview) every
change is refused.
"""

from __future__ import annotations

from modeldeploy.providers.errors import TerminalError, read_only_refusal
from modeldeploy.providers.local.state import State
from modeldeploy.providers.local.store import ArtifactStore
from modeldeploy.remote import ModelVersion
from modeldeploy.spec import ModelDeploymentSpec


class LocalRegistry:
    def __init__(self, state: State, store: ArtifactStore | None) -> None:
        self.state = state
        self.store = store

    def _writable(self, what: str) -> ArtifactStore:
        if self.store is None or self.state.read_only:
            raise read_only_refusal(what)
        return self.store

    def group_arn(self, group: str) -> str | None:
        return self.state.group_arn(group)

    def ensure_group(self, name: str, description: str | None, owner: str = "") -> str:
        self._writable("creating a model package group")
        return self.state.ensure_group(name, description, owner)

    def group_owner(self, group_arn: str) -> str:
        return self.state.group_owner(group_arn)

    def release_group(self, group_arn: str, owner: str) -> None:
        self._writable(f"releasing {group_arn}")
        self.state.release_group(group_arn, owner)

    def claim_group(self, group_arn: str, owner: str) -> None:
        self._writable(f"adopting {group_arn}")
        now = self.state.claim_group(group_arn, owner)
        if now != owner:
            raise TerminalError(f"{group_arn} belongs to ModelDeployment {now or '(none)'}")

    def register_version(self, spec: ModelDeploymentSpec) -> ModelVersion:
        store = self._writable("registering a version")
        model = spec.model
        if model is None:
            raise TerminalError("spec.model is not set: there is no artifact to register")
        stored = store.ingest(model.artifact, model.frameworkVersion, model.image)
        return self.state.register(
            spec.modelPackageGroup.name,
            source=model.artifact,
            artifact=stored.path,
            digest=stored.digest,
            framework_version=stored.framework_version or "custom",
            metrics=store.read_metrics(model.metrics),
        )

    def set_approval(self, version_arn: str, status: str, description: str) -> None:
        self._writable(f"setting the approval of {version_arn}")
        if not self.state.set_approval(version_arn, status, description):
            raise TerminalError(f"model package {version_arn} does not exist")
