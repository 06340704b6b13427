"""Will the chosen SageMaker XGBoost image read this artifact the way its trainer wrote it?

Version skew changes predictions silently: xgboost >= 3.1 stores `base_score` as a vector, and
the xgboost inside the 1.7-1 and 3.0-5 images (1.7.4, 3.0.5) loads such a model without error
but reads `base_score` as 0.5, shifting every score (measured on a breast-cancer model written
by xgboost 3.2.0: 0.0125 becomes 0.0075 on the same row). So before registering, we read the
writer's version from the model itself and refuse an image that cannot read it the same way.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import struct
import subprocess
import sys
import threading
from pathlib import Path

from modeldeploy.artifacts import guard
from modeldeploy.artifacts.inspect import (
    BASE_SCORE_PATH,
    ModelInfo,
    inspect_model_bytes,
    load_document,
    ubj_loads,
    ubj_string,
)

Version = tuple[int, int, int]

# First-party SageMaker XGBoost image version (`frameworkVersion`) -> the xgboost it runs.
# Source: the XGBOOST_VERSION build argument of docker/<version>/base/Dockerfile.cpu in
# github.com/aws/sagemaker-xgboost-container (0.90-x: 0.90, 1.0-1: 1.0.0, 1.2-x: 1.2.0,
# 1.3-1: 1.3.3, 1.5-1: 1.5.2), the AWS "XGBoost versions" documentation for 1.7-1 (1.7.4), and
# the image names for 3.0-5 and 3.2-0. sagemaker-core's image_uris knows exactly these versions
# (plus "1", the first-generation algorithm image, which we never pick).
IMAGE_XGBOOST: dict[str, Version] = {
    "0.90-1": (0, 90, 0),
    "0.90-2": (0, 90, 0),
    "1.0-1": (1, 0, 0),
    "1.2-1": (1, 2, 0),
    "1.2-2": (1, 2, 0),
    "1.3-1": (1, 3, 3),
    "1.5-1": (1, 5, 2),
    "1.7-1": (1, 7, 4),
    "3.0-5": (3, 0, 5),
    "3.2-0": (3, 2, 0),
}

# Learner attribute our trainer sets after rewriting a model for an older image (e.g. base_score
# back to the scalar form). It vouches for that image only; the concrete checks still apply.
WRITTEN_FOR_ATTR = "modeldeploy_written_for"

# Images `rewrite_for_image` (and so `modeldeploy train --framework-version`) can target: those
# whose reading of a current model is known (1.7-1 and 3.0-5 load a 3.2 model and differ only
# in how they read base_score). Older images read UBJ not at all (< 1.6) or are unverified.
REWRITE_TARGETS = ("1.7-1", "3.0-5", "3.2-0")

_IMAGE_TAG = re.compile(r"/sagemaker-xgboost:(\d+\.\d+-\d+)(?:-[A-Za-z0-9.\-]+)?$")


class IncompatibleArtifactError(ValueError):
    """The image's xgboost would not read the artifact the way its trainer wrote it."""


def _v(version: Version) -> str:
    return ".".join(str(p) for p in version)


def _sorted_images() -> list[tuple[Version, str]]:
    # Several images can share one xgboost (1.2-1/1.2-2): prefer the later image build.
    return sorted(((xgb, fv) for fv, xgb in IMAGE_XGBOOST.items()), key=lambda t: (t[0], t[1]))


def framework_version_for(xgboost_version: Version) -> str:
    """The image that best reads a model written by `xgboost_version`.

    The image with the same major.minor if there is one, else the oldest image newer than the
    writer, else the newest image of the writer's major version.
    """
    images = _sorted_images()
    minor = tuple(xgboost_version[:2])
    same_minor = [fv for xgb, fv in images if xgb[:2] == minor]
    if same_minor:
        return same_minor[-1]
    newer = [fv for xgb, fv in images if xgb > tuple(xgboost_version)]
    if newer:
        return newer[0]
    same_major = [fv for xgb, fv in images if xgb[0] == xgboost_version[0]]
    if same_major:
        return same_major[-1]
    raise IncompatibleArtifactError(
        f"no first-party SageMaker XGBoost image reads models written by xgboost "
        f"{_v(xgboost_version)}; give an explicit image"
    )


def framework_version_from_image(image: str) -> str:
    """The frameworkVersion of a first-party image URI, or "" for a custom image."""
    match = _IMAGE_TAG.search(image.strip())
    if match and match.group(1) in IMAGE_XGBOOST:
        return match.group(1)
    return ""


# One child per region answers every version we know: {version: uri}, a version without an
# image in that region left out.
_IMAGE_URI_LOOKUP = """
import json, sys
from sagemaker.core import image_uris
found = {}
for version in sys.argv[2:]:
    try:
        found[version] = image_uris.retrieve("xgboost", sys.argv[1], version)
    except ValueError:
        pass
print(json.dumps(found))
"""

IMAGE_TABLE = Path(__file__).with_name("xgboost_images.json")
_IMAGE_URI_LOCK = threading.Lock()
_PREFETCHED: set[str] = set()


def image_uri(region: str, framework_version: str) -> str:
    """The first-party XGBoost image URI for a region (offline, from sagemaker-core's table).

    From IMAGE_TABLE, written from that table by hack/gen-image-table.py (a test keeps it
    current). A region or version it lacks is looked up in a child process: importing
    sagemaker-core costs over two seconds of CPU and ~90 MiB that the operator would keep for
    its lifetime. One child per region, answering every version at once; passes asking
    meanwhile wait for it. ValueError when it has none."""
    if uri := _packaged_images().get(region, {}).get(framework_version):
        return uri
    table = _looked_up(region)
    if framework_version not in table:
        raise ValueError(f"no XGBoost {framework_version} image for {region}")
    return table[framework_version]


@functools.cache
def _packaged_images() -> dict[str, dict[str, str]]:
    return json.loads(IMAGE_TABLE.read_text())["images"]


def prefetch_image_uris(region: str) -> None:
    """Start the region's lookup in the background when the packaged table lacks the region
    (a provider for it was just made: its first registration will need it, seconds from now)."""
    if region in _packaged_images():
        return
    with _IMAGE_URI_LOCK:
        if region in _PREFETCHED:
            return
        _PREFETCHED.add(region)
    threading.Thread(target=_quietly, args=(region,), daemon=True).start()


def _quietly(region: str) -> None:
    with contextlib.suppress(Exception):  # the lookup that needs it says what went wrong
        _looked_up(region)


def _looked_up(region: str) -> dict[str, str]:
    with _IMAGE_URI_LOCK:  # one child per region, however many passes ask meanwhile
        return _region_images(region)


@functools.cache  # a static table: looked up once per region
def _region_images(region: str) -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", _IMAGE_URI_LOOKUP, region, *IMAGE_XGBOOST],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["no output"]
        raise ValueError(f"no XGBoost image table for {region}: {lines[-1]}")
    return json.loads(proc.stdout)


def incompatibility(info: ModelInfo, framework_version: str) -> str | None:
    """Why the image `framework_version` would not read `info`'s model the same way, or None."""
    image_xgb = IMAGE_XGBOOST[framework_version]
    writer = info.xgboost_version
    where = f"model.tar.gz was written by xgboost {info.version_str}"
    image = f"image sagemaker-xgboost:{framework_version} runs xgboost {_v(image_xgb)}"
    if image_xgb < (1, 0, 0):
        return f"{where}; {image}, which cannot read xgboost's JSON/UBJ model formats."
    if info.format == "ubj" and image_xgb < (1, 6, 0):
        return f"{where} in UBJ format; {image}, which reads UBJ only from xgboost 1.6."
    if info.base_score_is_vector and image_xgb < (3, 1, 0):
        return (
            f"{where} (base_score stored as a vector); {image}, which loads it but reads "
            "base_score as 0.5 and shifts every score."
        )
    vouched = info.attribute(WRITTEN_FOR_ATTR)
    vouched_ok = vouched in IMAGE_XGBOOST and IMAGE_XGBOOST[vouched] <= image_xgb
    if image_xgb[0] < writer[0] and not vouched_ok:
        return (
            f"{where}; {image}, an older major version that may load it but score it differently."
        )
    return None


def check_info(info: ModelInfo, framework_version: str | None, image: str | None = None) -> str:
    """`check_artifact` for an already inspected model."""
    if image:
        chosen = framework_version_from_image(image)
        if not chosen:
            # A custom image: we do not know its xgboost, so we cannot check. The caller warns.
            return ""
    elif framework_version:
        if framework_version not in IMAGE_XGBOOST:
            known = ", ".join(IMAGE_XGBOOST)
            raise IncompatibleArtifactError(
                f"unknown SageMaker XGBoost frameworkVersion {framework_version!r} (known: {known})"
            )
        chosen = framework_version
    else:
        return framework_version_for(info.xgboost_version)
    reason = incompatibility(info, chosen)
    if reason is None:
        return chosen
    retrain = f"retrain with --framework-version {chosen}" if chosen in REWRITE_TARGETS else ""
    try:
        use = f"Use frameworkVersion {framework_version_for(info.xgboost_version)}"
        use += f", or {retrain}." if retrain else "."
    except IncompatibleArtifactError:
        use = f"{retrain.capitalize()}." if retrain else "Use an image that runs a newer xgboost."
    raise IncompatibleArtifactError(f"{reason} {use}")


def check_artifact(tar_path: Path, framework_version: str | None, image: str | None) -> str:
    """Inspect `tar_path` and return the frameworkVersion to register it with.

    - `image` given: a first-party `.../sagemaker-xgboost:<fv>[-cpu-py3]` URI is checked as
      `<fv>` and `<fv>` returned; any other image returns "" (cannot check; the caller warns).
    - `framework_version` given: checked and returned.
    - neither: the image matching the writer (`framework_version_for`) is returned.

    Raises IncompatibleArtifactError naming both xgboost versions and the frameworkVersion to
    use instead, and UnsafeArtifactError (a ValueError) for a tar or model we refuse to read.
    """
    return inspect_and_check(Path(tar_path), framework_version, image)[1]


def inspect_and_check(
    tar_path: Path, framework_version: str | None, image: str | None, source: str = ""
) -> tuple[ModelInfo, str]:
    """`check_artifact` that also returns what the inspection found. Error messages name
    `source` (the URI a user gave) instead of the local copy at `tar_path`.

    The inspection runs in a subprocess under the artifact memory and time limits
    (`artifacts.guard`); over a limit is an UnsafeArtifactError naming it."""
    try:
        return guard.inspect_file(Path(tar_path), framework_version=framework_version, image=image)
    except ValueError as err:
        if not source:
            raise
        raise type(err)(f"{source}: {str(err).replace(str(tar_path), source)}") from err


def _splice_ubj(model: bytes, scalar: str | None, framework_version: str) -> bytes:
    attrs_path = ("learner", "attributes")
    _, spans = ubj_loads(model, (BASE_SCORE_PATH, attrs_path))
    start, end = spans[attrs_path]
    if model[start : start + 1] != b"{" or model[end - 1 : end] != b"}":
        raise IncompatibleArtifactError("unexpected UBJ layout of learner.attributes")
    key = WRITTEN_FOR_ATTR.encode()
    entry = b"L" + struct.pack(">q", len(key)) + key + ubj_string(framework_version)
    # Splice from the end backwards so the earlier span stays valid.
    edits = [(end - 1, end - 1, entry)]
    if scalar is not None:
        bs_start, bs_end = spans[BASE_SCORE_PATH]
        edits.append((bs_start, bs_end, ubj_string(scalar)))
    for lo, hi, new in sorted(edits, reverse=True):
        model = model[:lo] + new + model[hi:]
    return model


def _splice_json(model: bytes, scalar: str | None, framework_version: str) -> bytes:
    # Textual edits keep every number exactly as xgboost wrote it (a JSON round trip through
    # Python floats could change the last digit of a float32). Inside a JSON string a quote is
    # always escaped, so these patterns only match real keys.
    if scalar is not None:
        model, n = re.subn(rb'("base_score"\s*:\s*)"\[([^\]",]*)\]"', rb'\1"\2"', model)
        if n != 1:
            raise IncompatibleArtifactError("unexpected JSON layout of base_score")
    entry = json.dumps({WRITTEN_FOR_ATTR: framework_version})[1:-1].encode()
    match = re.search(rb'"attributes"\s*:\s*\{\s*(\}?)', model)
    if match is None:
        raise IncompatibleArtifactError("unexpected JSON layout of learner.attributes")
    sep = b"" if match.group(1) else b","
    pos = match.end() - len(match.group(1))
    return model[:pos] + entry + sep + model[pos:]


def rewrite_for_image(model: bytes, framework_version: str) -> bytes:
    """Rewrite a native model so that image `framework_version`'s xgboost reads it the same.

    Changes only what is known to differ: a one-element vector base_score becomes the scalar
    form older xgboost reads. Every other byte stays as xgboost wrote it. The model is then
    marked with the learner attribute WRITTEN_FOR_ATTR = framework_version, which lets the
    check accept an image older than the writer's major version. Raises
    IncompatibleArtifactError if the result would still not be read the same.
    """
    if framework_version not in REWRITE_TARGETS:
        raise IncompatibleArtifactError(
            f"cannot write a model for image sagemaker-xgboost:{framework_version}; "
            f"supported: {', '.join(REWRITE_TARGETS)}"
        )
    info = inspect_model_bytes(model)
    marked = info.attribute(WRITTEN_FOR_ATTR)
    if marked is not None:
        raise IncompatibleArtifactError(f"model is already rewritten for image {marked}")
    scalar = None
    if info.base_score_is_vector and IMAGE_XGBOOST[framework_version] < (3, 1, 0):
        if len(info.base_score) != 1:
            raise IncompatibleArtifactError(
                f"base_score has {len(info.base_score)} values (multi-target); xgboost "
                f"{_v(IMAGE_XGBOOST[framework_version])} has no such form"
            )
        # Keep xgboost's own digits: "[6.2676054E-1]" -> "6.2676054E-1".
        doc, _ = load_document(model)
        scalar = str(doc["learner"]["learner_model_param"]["base_score"]).strip()[1:-1].strip()
    if info.format == "ubj":
        model = _splice_ubj(model, scalar, framework_version)
    else:
        model = _splice_json(model, scalar, framework_version)
    reason = incompatibility(inspect_model_bytes(model), framework_version)
    if reason is not None:
        raise IncompatibleArtifactError(reason)
    return model
