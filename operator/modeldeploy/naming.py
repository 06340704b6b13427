"""Deterministic names for the remote objects of one ModelDeployment.

SageMaker names (endpoints, endpoint configs, models) follow ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$.
Names are derived, never stored-only, so a restarted operator finds what it created before:

    endpoint  <readable namespace-name>-<hash of namespace/name>-<staging|prod>   (<= 51 chars)
    config    <endpoint>-c<hash of the config's content>                         (<= 63 chars)
    model     <endpoint>-m<hash of the model package version ARN>               (<= 63 chars)

The hash in the endpoint keeps names unique even when truncation or sanitising would make two
resources look alike (`a-b/c` and `a/b-c`). Configs and models are immutable, so a change of
content is a new name, and every config and model of an endpoint starts with `<endpoint>-`.
"""

from __future__ import annotations

import hashlib
import json
import re

MAX_NAME = 63
# Leaves room for "-c" + 10 hex digits of content hash behind every endpoint name.
MAX_ENDPOINT = MAX_NAME - 12
_HASH = 8
_STAGE_SUFFIX = {"staging": "staging", "production": "prod"}
_READABLE = MAX_ENDPOINT - 1 - _HASH - 1 - max(len(s) for s in _STAGE_SUFFIX.values())
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _sanitize(text: str) -> str:
    # Kubernetes names may hold dots; SageMaker names may not. Runs of hyphens are legal but ugly.
    return re.sub(r"-+", "-", re.sub(r"[^a-zA-Z0-9]", "-", text)).strip("-")


def endpoint_prefix(namespace: str, name: str) -> str:
    """The part shared by both stages' endpoint names (for ListEndpoints NameContains)."""
    readable = _sanitize(f"{namespace}-{name}")[:_READABLE].rstrip("-") or "md"
    return f"{readable}-{_digest(f'{namespace}/{name}', _HASH)}"


def endpoint_name(namespace: str, name: str, stage: str) -> str:
    """The endpoint of one stage ("staging" or "production") of one ModelDeployment."""
    suffix = _STAGE_SUFFIX.get(stage)
    if suffix is None:
        raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(_STAGE_SUFFIX)}")
    return f"{endpoint_prefix(namespace, name)}-{suffix}"


def _child(endpoint: str, kind: str, payload: object) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    base = endpoint[: MAX_NAME - 12].rstrip("-")
    return f"{base}-{kind}{_digest(text, 10)}"


def config_name(endpoint: str, content: dict) -> str:
    """Endpoint config name: a change of any content value gives a new name."""
    return _child(endpoint, "c", content)


def model_name(endpoint: str, version_arn: str) -> str:
    """Model name for serving one model package version (which fixes image and artifact)."""
    return _child(endpoint, "m", [version_arn])
