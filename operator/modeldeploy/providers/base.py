"""The one small interface every provider implements, and the errors it may raise."""

from __future__ import annotations

from typing import Protocol

from modeldeploy.reconcile.actions import DeployEndpoint
from modeldeploy.remote import Endpoint, InvokeResult, ModelVersion, Observed
from modeldeploy.spec import ModelDeploymentSpec


class ProviderError(Exception):
    """Base of provider errors; the message is shown to users, so make it actionable."""


class TransientError(ProviderError):
    """Throttling, 5xx, timeouts: retried with backoff."""


class TerminalError(ProviderError):
    """The same input will fail again (bad artifact, access denied, validation): stall."""


class Provider(Protocol):
    name: str

    # -- reads (observe is the only call made on a steady resync) ---------------------------
    def observe(
        self, spec: ModelDeploymentSpec, status: dict, *, namespace: str, name: str
    ) -> Observed:
        """Read remote state with at most two read calls when nothing is transitional.

        When status shows a deployment in flight (`<stage>.targetConfigName` differs from
        `<stage>.endpointConfigName`), the endpoint's real config name must be read too.
        """

    def describe_endpoint(self, name: str) -> Endpoint | None: ...

    # -- registry ----------------------------------------------------------------------------
    def ensure_group(self, spec: ModelDeploymentSpec) -> str:
        """Create the model package group if missing; return its ARN."""

    def register_version(self, spec: ModelDeploymentSpec) -> ModelVersion:
        """Register spec.model as a new PendingManualApproval version.

        Idempotent: if a version with the same artifact digest exists, return it instead.
        Raises TerminalError when the artifact is unreadable or its xgboost version does not
        match the serving image.
        """

    def set_approval(self, version_arn: str, status: str, description: str) -> None: ...

    # -- hosting -----------------------------------------------------------------------------
    def deploy(self, action: DeployEndpoint) -> None:
        """Create the model and the hash-named endpoint config if missing, then create the
        endpoint or point it at the new config. Returns once the change is accepted."""

    def invoke(self, endpoint_name: str, payload: str, content_type: str) -> InvokeResult: ...

    def delete_endpoint(self, name: str) -> bool:
        """Start deleting the endpoint (and its configs and models); True once it is gone."""
