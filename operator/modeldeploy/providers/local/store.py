"""The local provider's artifact store: content-addressed copies of model.tar.gz files.

Artifacts are untrusted. Each one is checked as the sagemaker provider checks it (one native
xgboost member, no pickle, safe tar, a serving xgboost that reads it as written) before it
is stored, and it is stored under its sha256 so the same bytes are kept once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from modeldeploy.artifacts import compat
from modeldeploy.artifacts.inspect import ModelInfo
from modeldeploy.artifacts.metrics import MAX_METRICS_FILE, metrics_from_json
from modeldeploy.artifacts.package import MAX_ARTIFACT, local_file, sha256_file
from modeldeploy.providers.errors import TerminalError, aws, from_os

SCHEMES = ("file", "s3")


@dataclass(frozen=True)
class StoredArtifact:
    path: Path
    digest: str
    info: ModelInfo
    framework_version: str


def _s3():
    import boto3  # honours AWS_ENDPOINT_URL, like the sagemaker provider

    return boto3.client("s3")


def _fetch(uri: str, dest: Path) -> None:
    parsed = urlparse(uri)
    if parsed.scheme not in SCHEMES:
        raise TerminalError(f"{uri}: the local provider reads file:// and s3:// artifacts")
    try:
        if parsed.scheme == "file":
            shutil.copyfile(local_file(uri, MAX_ARTIFACT, "artifact", TerminalError), dest)
        else:
            with aws(f"GetObject {uri}"):
                _s3().download_file(parsed.netloc, parsed.path.lstrip("/"), str(dest))
    except OSError as err:
        raise from_os(err, uri) from err


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "artifacts").mkdir(parents=True, exist_ok=True)

    def ingest(self, uri: str, framework_version: str | None, image: str | None) -> StoredArtifact:
        with tempfile.TemporaryDirectory(dir=self.root, prefix="incoming-") as tmp:
            tar = Path(tmp) / "model.tar.gz"
            _fetch(uri, tar)
            digest = sha256_file(tar)
            try:
                info, framework = compat.inspect_and_check(tar, framework_version, image, uri)
            except ValueError as err:  # unsafe tar, pickle, implausible, over a limit, skew
                raise TerminalError(str(err)) from err
            except OSError as err:  # the inspecting subprocess could not start
                raise from_os(err, f"inspecting {uri}") from err
            final = self.root / "artifacts" / digest / "model.tar.gz"
            if not final.exists():
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tar, final)
        return StoredArtifact(final, digest, info, framework)

    def read_metrics(self, metrics: str | dict[str, float] | None) -> dict[str, float]:
        if metrics is None:
            return {}
        if isinstance(metrics, dict):
            return dict(metrics)
        with tempfile.TemporaryDirectory(dir=self.root, prefix="metrics-") as tmp:
            path = Path(tmp) / "evaluation.json"
            _fetch(metrics, path)
            if path.stat().st_size > MAX_METRICS_FILE:
                raise TerminalError(f"{metrics}: metrics file is over {MAX_METRICS_FILE} bytes")
            try:
                return metrics_from_json(path.read_bytes())
            except ValueError as err:
                raise TerminalError(f"{metrics}: unreadable metrics file: {err}") from err
