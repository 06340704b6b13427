"""The sagemaker provider's artifact check: download spec.model.artifact from S3, digest it and
inspect it (one native xgboost member, no pickle, safe tar, a serving image that reads it as
written), sharing the work between resources that name the same bytes."""

from __future__ import annotations

import functools
import logging
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldeploy.artifacts import compat
from modeldeploy.artifacts.package import MAX_ARTIFACT, sha256_file
from modeldeploy.providers.errors import TerminalError, aws
from modeldeploy.spec import ModelDeploymentSpec, ModelSpec

log = logging.getLogger(__name__)

# Artifacts checked, by S3 object and ETag, and by sha256.
ARTIFACTS_KEPT = 256


def split_s3(uri: str) -> tuple[str, str]:
    match = re.match(r"^s3://([^/]+)/(.+)$", uri)
    if not match:
        raise TerminalError(f"{uri!r} is not an s3://bucket/key URI")
    return match.group(1), match.group(2)


@dataclass(frozen=True)
class CheckedArtifact:
    digest: str
    writer: str  # the xgboost version that wrote it
    framework: str  # the serving framework version it was checked against ("" for none)
    image: str


class Kept(OrderedDict):
    """A small thread-safe LRU map."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.lock = threading.Lock()
        self._making: dict[Any, threading.Lock] = {}

    def get_fresh(self, key: Any) -> Any:
        with self.lock:
            if key in self:
                self.move_to_end(key)
                return self[key]
            return None

    def keep(self, key: Any, value: Any) -> None:
        with self.lock:
            self[key] = value
            self.move_to_end(key)
            while len(self) > self.size:
                self.popitem(last=False)

    def drop(self, key: Any) -> None:
        with self.lock:
            self.pop(key, None)

    def get_or_make(self, key: Any, make: Callable[[], Any]) -> Any:
        """The value kept for `key`, made once when missing: threads asking for the same key
        at once wait for the one making it (twenty resources naming the same bytes at once
        started twenty inspections before)."""
        with self.lock:
            making = self._making.setdefault(key, threading.Lock())
        try:
            with making:
                found = self.get_fresh(key)
                if found is None:
                    found = make()
                    self.keep(key, found)
                return found
        finally:
            with self.lock:
                if not making.locked():
                    self._making.pop(key, None)


class ArtifactChecker:
    def __init__(self, s3: Any, region: str) -> None:
        self.s3 = s3
        self.region = region
        self._artifacts = Kept(ARTIFACTS_KEPT)  # (bucket, key, etag, asked) -> checked
        self._inspected = Kept(ARTIFACTS_KEPT)  # (sha256, asked) -> checked

    def check(self, spec: ModelDeploymentSpec) -> CheckedArtifact:
        """Download, digest and inspect spec.model.artifact. Resources naming the same bytes
        share the work: not downloaded again for the same S3 object and ETag, not inspected
        again for the same sha256 (ETags, MD5-based, are never trusted across objects)."""
        model = spec.model
        assert model is not None
        bucket, key = split_s3(model.artifact)
        with aws(f"GetObject {model.artifact}"):
            obj = self.s3.get_object(Bucket=bucket, Key=key)
        etag = obj.get("ETag") or ""
        asked = (model.frameworkVersion, model.image)
        kept = self._artifacts.get_fresh((bucket, key, etag, *asked)) if etag else None
        if kept is not None:
            obj["Body"].close()  # the bytes are the ones checked before: not read again
            return kept
        if int(obj.get("ContentLength") or 0) > MAX_ARTIFACT:
            obj["Body"].close()
            raise TerminalError(f"{model.artifact}: artifact is over {MAX_ARTIFACT} bytes")
        with tempfile.TemporaryDirectory(prefix="modeldeploy-") as tmp:
            tar = Path(tmp) / "model.tar.gz"
            with aws(f"GetObject {model.artifact}"), open(tar, "wb") as f:
                shutil.copyfileobj(obj["Body"], f, 1 << 20)
            digest = sha256_file(tar)
            inspect = functools.partial(self._inspect, model, tar, digest)
            checked = self._inspected.get_or_make((digest, *asked), inspect)
        if etag:
            self._artifacts.keep((bucket, key, etag, *asked), checked)
        return checked

    def _inspect(self, model: ModelSpec, tar: Path, digest: str) -> CheckedArtifact:
        try:
            info, framework = compat.inspect_and_check(
                tar, model.frameworkVersion, model.image, model.artifact
            )
            image = model.image or compat.image_uri(self.region, framework)
        except ValueError as err:  # IncompatibleArtifactError, UnsafeArtifactError, ...
            raise TerminalError(str(err)) from err
        if model.image and not framework:
            log.warning("custom image %s: cannot check that it reads %s", image, model.artifact)
        return CheckedArtifact(digest, info.version_str, framework, image)
