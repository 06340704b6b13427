"""The embedded `local` provider: the whole pipeline on one machine, no AWS account.

Registry: a SQLite file (`state`) and a content-addressed artifact store. Hosting: supervised
`modeldeploy serve` processes on loopback that speak the SageMaker XGBoost container contract
(`hosting_process`), or, with MODELDEPLOY_LOCAL_HOSTING=kubernetes, a Deployment and a Service
per endpoint running the same server in the cluster (`hosting_kubernetes`).
State lives under MODELDEPLOY_LOCAL_DIR (default ~/.local/share/modeldeploy), which only its
owner can open (0700, tightened with a log line when it was open): the registry, the artifacts
and the servers' logs are 0600 files in 0700 directories. A registry lost from a directory
that held one (`history`) stalls every pass with RegistryLost until it is restored or
`modeldeploy local reset` starts a new history; it is never silently created anew.

Project mode (spec.deployment.via: Project): `project.LocalProjects`, the counterpart of a
SageMaker project made from the "MLOps template for model deployment", whose pipeline deploys
`<project>-staging` and `<project>-prod` through the same hosting.

`LocalProvider(supervise=False)` only looks (a preview): the state is opened read-only,
endpoint looks report what they see without starting, stopping or rewriting anything, and
every change is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from modeldeploy import metrics, naming
from modeldeploy.processes import private_dir
from modeldeploy.providers.errors import TerminalError
from modeldeploy.providers.interface import Hosting
from modeldeploy.providers.local.history import MARKER
from modeldeploy.providers.local.hosting_process import ProcessHosting
from modeldeploy.providers.local.project import LocalProjects
from modeldeploy.providers.local.registry import LocalRegistry
from modeldeploy.providers.local.state import State
from modeldeploy.providers.local.store import ArtifactStore, StoredArtifact
from modeldeploy.remote import Observed, ObserveHint
from modeldeploy.spec import ModelDeploymentSpec, SpecError

HOSTING_ENV = "MODELDEPLOY_LOCAL_HOSTING"
HOSTINGS = ("process", "kubernetes")
# A dead server is noticed at the next look; observing is SQLite plus a /ping (or one read of
# a Deployment), so the steady resync can be short.
RESYNC_ENV = "MODELDEPLOY_LOCAL_RESYNC_SECONDS"
DEFAULT_RESYNC = 10.0
REGISTRY = "registry.db"
# SQLite creates the WAL and shared-memory files with the database file's mode.
REGISTRY_FILES = (REGISTRY, f"{REGISTRY}-wal", f"{REGISTRY}-shm")


def _owner_only(path: Path, mode: int) -> None:
    if path.exists() and path.stat().st_mode & 0o077:
        path.chmod(mode)


def private_root(root: Path) -> Path:
    """`root` as the local provider keeps it: 0700, its registry files 0600 (the state creates
    them so; an older, more open one is tightened). A missing registry is not created here: the
    state tells a fresh directory from one whose registry was lost."""
    private_dir(root)
    for name in (*REGISTRY_FILES, MARKER):
        _owner_only(root / name, 0o600)
    return root


class PrivateArtifactStore(ArtifactStore):
    """The artifact store with its directories 0700 and the stored copies 0600."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        private_dir(root / "artifacts")

    def ingest(self, uri: str, framework_version: str | None, image: str | None) -> StoredArtifact:
        stored = super().ingest(uri, framework_version, image)
        _owner_only(stored.path.parent, 0o700)
        _owner_only(stored.path, 0o600)
        return stored


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


def hosting_from_env(state: State, root: Path, workers: int, supervise: bool) -> Hosting:
    kind = os.environ.get(HOSTING_ENV) or "process"
    if kind == "process":
        return ProcessHosting(state, root, workers=workers, supervise=supervise)
    if kind == "kubernetes":
        # Imported here: the kubernetes client is needed only for this hosting.
        from modeldeploy.providers.local.hosting_kubernetes import KubernetesHosting

        try:
            return KubernetesHosting(state, workers=workers, supervise=supervise)
        except TerminalError as err:  # no cluster to talk to, or bad settings
            raise SpecError(f"local provider, kubernetes hosting: {err}") from err
    raise SpecError(f"{HOSTING_ENV}={kind!r}: expected one of {', '.join(HOSTINGS)}")


class LocalProvider:
    name = "local"

    def __init__(
        self,
        root: Path | None = None,
        workers: int = 1,
        *,
        supervise: bool = True,
        hosting: Hosting | None = None,
    ) -> None:
        """`hosting` replaces the one MODELDEPLOY_LOCAL_HOSTING names (tests, embedders)."""
        self.root = root or default_root()
        self.supervise = supervise
        # The controller's steady resync is at most this (it is 600 s for remote providers).
        self.max_resync_seconds: float | None = resync_seconds()
        if supervise:
            private_root(self.root)
        self.state = State(self.root / REGISTRY, read_only=not supervise)
        store = PrivateArtifactStore(self.root) if supervise else None
        self.registry = LocalRegistry(self.state, store)
        self.hosting = hosting or hosting_from_env(self.state, self.root, workers, supervise)
        self.projects = LocalProjects(self.state, self.hosting, self.root, supervise=supervise)
        metrics.watch_calls(self.name, self.registry, self.hosting)

    def observe(
        self, spec: ModelDeploymentSpec, hint: ObserveHint, *, namespace: str, name: str
    ) -> Observed:
        """Everything is local and cheap to read; only the owner is taken from the hint. In
        project mode the project's pipeline deploys, so its endpoints are the stages'."""
        group = spec.modelPackageGroup.name
        arn = self.state.group_arn(group)
        if arn is None:
            return Observed(group_arn=None)
        project = None
        if spec.project is not None:
            project = self.projects.describe(spec.project.name)
            staging = project.staging if project else None
            production = project.production if project else None
        else:
            staging, production = (
                self.hosting.describe(naming.endpoint_name(namespace, name, stage))
                for stage in ("staging", "production")
            )
        versions = tuple(self.state.versions(group))
        owner = hint.group_owner or self.state.group_owner(arn)
        return Observed(arn, versions, staging, production, owner, project=project)
