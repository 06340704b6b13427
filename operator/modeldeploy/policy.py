"""The platform policy: what each namespace may use — IAM roles, artifact locations, regions.

A ModelDeployment is written by a tenant, but the operator acts on it with its own credentials:
it passes spec.roleArn to SageMaker and reads spec.model.artifact, the metrics URI and writes
the data-capture destination. The platform team says once, in one YAML file, which of those
each namespace may name (`MODELDEPLOY_POLICY_FILE`; the chart renders it from `policy:`):

    namespaces:
      team-a:                      # a namespace, or a glob such as "ml-*"
        roles: ["arn:aws:iam::111111111111:role/team-a-*"]
        locations: ["s3://team-a-models/*", "file:///srv/models/team-a/*"]
        regions: ["eu-west-1"]

Patterns are shell globs (`*` also matches `/`). A namespace takes the entry of its own name,
else the first glob that matches it; a namespace without an entry may use nothing, and a kind
an entry leaves out (no `roles:`) is refused too — what is not granted is refused. Without a
policy file every namespace may use everything (a single-tenant cluster, the demo).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from modeldeploy.spec import ModelDeploymentSpec

log = logging.getLogger(__name__)

ENV_VAR = "MODELDEPLOY_POLICY_FILE"


class PolicyError(Exception):
    """The policy file cannot be read or is not a policy; the message says where and why."""


class Grant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    roles: tuple[str, ...] = ()
    locations: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()


class PlatformPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    namespaces: dict[str, Grant]
    source: str = ""  # the file it came from, named in every refusal

    def grant_for(self, namespace: str) -> Grant | None:
        if namespace in self.namespaces:
            return self.namespaces[namespace]
        return next(
            (g for key, g in self.namespaces.items() if fnmatch.fnmatchcase(namespace, key)), None
        )

    def refusal(self, namespace: str, spec: ModelDeploymentSpec) -> str | None:
        """Why `spec` may not be acted on in `namespace`, or None when everything is granted."""
        where = f"the platform policy ({self.source})" if self.source else "the platform policy"
        grant = self.grant_for(namespace)
        if grant is None:
            return (
                f"namespace {namespace} has no entry in {where}, so it may use no role, "
                "location or region; ask the platform team to grant it what it needs"
            )
        refused = [
            _refuse(f"{field} {value}", patterns)
            for field, value, patterns in _named(spec, grant)
            if not any(fnmatch.fnmatchcase(_canonical(value), p) for p in patterns)
        ]
        if not refused:
            return None
        return (
            f"{'; '.join(refused)}: not granted to namespace {namespace} by {where}; name a "
            "granted one, or ask the platform team to grant it"
        )


def _refuse(what: str, patterns: tuple[str, ...]) -> str:
    allowed = ", ".join(patterns) if patterns else "none"
    return f"{what} (granted: {allowed})"


def _named(spec: ModelDeploymentSpec, grant: Grant) -> list[tuple[str, str, tuple[str, ...]]]:
    """Every role, location and region the spec names, with the patterns that may grant it."""
    named: list[tuple[str, str, tuple[str, ...]]] = []
    if spec.roleArn:
        named.append(("spec.roleArn", spec.roleArn, grant.roles))
    if spec.region:
        named.append(("spec.region", spec.region, grant.regions))
    if spec.model:
        named.append(("spec.model.artifact", spec.model.artifact, grant.locations))
        if isinstance(spec.model.metrics, str):
            named.append(("spec.model.metrics", spec.model.metrics, grant.locations))
    if spec.staging.dataCaptureDestination:
        capture = spec.staging.dataCaptureDestination
        named.append(("spec.staging.dataCaptureDestination", capture, grant.locations))
    return named


def _canonical(uri: str) -> str:
    """A file:// path as the operator would open it: `..` and symlinks resolved, so a tenant
    can't step out of a granted directory. S3 keys are literal: nothing to resolve."""
    if uri.startswith("file://"):
        return "file://" + os.path.realpath(uri.removeprefix("file://"))
    return uri


def load_policy(path: Path) -> PlatformPolicy:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PolicyError(f"cannot read the platform policy {path}: {err}") from err
    if not isinstance(data, dict):
        raise PolicyError(f"the platform policy {path} is not a mapping with `namespaces:`")
    try:
        return PlatformPolicy.model_validate({**data, "source": str(path)})
    except ValidationError as err:
        first = err.errors()[0]
        at = ".".join(str(p) for p in first["loc"])
        raise PolicyError(f"the platform policy {path}: {at}: {first['msg']}") from err


class PolicySource:
    """The policy as the file says now: read again when the file changes (a mounted ConfigMap
    is updated in place); a broken edit keeps the last good policy and logs why. The first
    read is eager: an operator with a broken policy file must not start."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self._policy = load_policy(path) if path else None
        self._stamp = _stamp(path) if path else None
        self._lock = threading.Lock()  # passes ask from worker threads

    @classmethod
    def from_env(cls) -> PolicySource:
        value = os.environ.get(ENV_VAR, "")
        return cls(Path(value) if value else None)

    def current(self) -> PlatformPolicy | None:
        if self.path is None:
            return None
        with self._lock:
            try:
                stamp = _stamp(self.path)
                if stamp != self._stamp:
                    self._stamp = stamp
                    self._policy = load_policy(self.path)
                    log.info("platform policy %s loaded", self.path)
            except (OSError, PolicyError) as err:
                log.error("%s; keeping the policy read before", err)
            return self._policy


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size
