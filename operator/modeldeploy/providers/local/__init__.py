"""The embedded `local` provider: the whole pipeline on one machine, no AWS account.

Registry: a SQLite file. Artifacts: a content-addressed store. Endpoints: supervised
`modeldeploy serve` processes on loopback that speak the SageMaker XGBoost container contract,
or, with MODELDEPLOY_LOCAL_HOSTING=kubernetes, a Deployment and a Service per endpoint running
the same server in the cluster (kube_endpoints.py).
State lives under MODELDEPLOY_LOCAL_DIR (default ~/.local/share/modeldeploy).

`LocalProvider(supervise=False)` only looks (a preview): the registry is opened read-only,
endpoint checks report what they see without starting, stopping or rewriting anything, and
every mutating call is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from modeldeploy import naming
from modeldeploy.providers.base import TerminalError
from modeldeploy.providers.local.endpoints import Endpoints
from modeldeploy.providers.local.registry import Registry
from modeldeploy.providers.local.store import ArtifactStore
from modeldeploy.reconcile.actions import DeployEndpoint
from modeldeploy.remote import Endpoint, InvokeResult, ModelVersion, Observed
from modeldeploy.spec import ModelDeploymentSpec, SpecError

if TYPE_CHECKING:
    from modeldeploy.providers.local.kube_endpoints import KubernetesEndpoints

HOSTINGS = ("process", "kubernetes")
# A dead server is noticed at the next check; observing is SQLite plus a /ping (or one read of
# a Deployment), so the steady resync can be short.
RESYNC_ENV = "MODELDEPLOY_LOCAL_RESYNC_SECONDS"
DEFAULT_RESYNC = 10.0


def default_root() -> Path:
    if os.environ.get("MODELDEPLOY_LOCAL_DIR"):
        return Path(os.environ["MODELDEPLOY_LOCAL_DIR"])
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "modeldeploy"


def resync_seconds() -> float:
    raw = os.environ.get(RESYNC_ENV) or str(DEFAULT_RESYNC)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise SpecError(f"{RESYNC_ENV}={raw!r}: expected a positive number of seconds")
    return value


class LocalProvider:
    name = "local"

    def __init__(
        self, root: Path | None = None, workers: int = 1, *, supervise: bool = True
    ) -> None:
        self.root = root or default_root()
        self.supervise = supervise
        # The controller's steady resync is at most this (it is 600 s for remote providers).
        self.max_resync_seconds: float | None = resync_seconds()
        self.registry = Registry(self.root / "registry.db", read_only=not supervise)
        self._store = ArtifactStore(self.root) if supervise else None
        self.hosting = os.environ.get("MODELDEPLOY_LOCAL_HOSTING") or "process"
        self.endpoints = self._endpoints(workers)

    @property
    def store(self) -> ArtifactStore:
        if self._store is None:
            raise TerminalError("this local provider only observes: it stores no artifact")
        return self._store

    def _writable(self, what: str) -> None:
        if not self.supervise:
            raise TerminalError(f"{what}: this local provider only observes (read-only)")

    def _endpoints(self, workers: int) -> Endpoints | KubernetesEndpoints:
        if self.hosting == "process":
            return Endpoints(self.registry, self.root, workers=workers, supervise=self.supervise)
        if self.hosting == "kubernetes":
            # Imported here: the kubernetes client is needed only for this hosting.
            from modeldeploy.providers.local.kube_endpoints import KubernetesEndpoints

            try:
                return KubernetesEndpoints(self.registry, workers=workers, supervise=self.supervise)
            except TerminalError as err:  # no cluster to talk to, or bad settings
                raise SpecError(f"local provider, kubernetes hosting: {err}") from err
        raise SpecError(
            f"MODELDEPLOY_LOCAL_HOSTING={self.hosting!r}: expected one of {', '.join(HOSTINGS)}"
        )

    def observe(
        self, spec: ModelDeploymentSpec, status: dict, *, namespace: str, name: str
    ) -> Observed:
        group = spec.modelPackageGroup.name
        arn = self.registry.group_arn(group)
        if arn is None:
            return Observed(group_arn=None)
        stages = [
            self.endpoints.check(naming.endpoint_name(namespace, name, stage))
            for stage in ("staging", "production")
        ]
        return Observed(arn, tuple(self.registry.versions(group)), stages[0], stages[1])

    def describe_endpoint(self, name: str) -> Endpoint | None:
        return self.endpoints.check(name)

    def ensure_group(self, spec: ModelDeploymentSpec) -> str:
        self._writable("creating a model package group")
        group = spec.modelPackageGroup
        return self.registry.ensure_group(group.name, group.description)

    def register_version(self, spec: ModelDeploymentSpec) -> ModelVersion:
        self._writable("registering a version")
        model = spec.model
        if model is None:
            raise TerminalError("spec.model is not set: there is no artifact to register")
        stored = self.store.ingest(model.artifact, model.frameworkVersion, model.image)
        return self.registry.register(
            spec.modelPackageGroup.name,
            source=model.artifact,
            artifact=stored.path,
            digest=stored.digest,
            framework_version=stored.framework_version or "custom",
            metrics=self.store.read_metrics(model.metrics),
        )

    def set_approval(self, version_arn: str, status: str, description: str) -> None:
        self._writable(f"setting the approval of {version_arn}")
        if not self.registry.set_approval(version_arn, status, description):
            raise TerminalError(f"model package {version_arn} does not exist")

    def deploy(self, action: DeployEndpoint) -> None:
        version = self.registry.version_by_arn(action.version_arn)
        if version is None:
            raise TerminalError(f"model package {action.version_arn} does not exist")
        # In a cluster, the instance type picks the pods' resources and the count their replicas.
        sizing = (
            {"instance_type": action.instance_type, "instance_count": action.instance_count}
            if self.hosting == "kubernetes"
            else {}
        )
        self.endpoints.deploy(action.endpoint_name, action.config_name, version.artifact, **sizing)

    def invoke(self, endpoint_name: str, payload: str, content_type: str) -> InvokeResult:
        return self.endpoints.invoke(endpoint_name, payload, content_type)

    def delete_endpoint(self, name: str) -> bool:
        return self.endpoints.delete(name)
