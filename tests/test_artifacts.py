"""Untrusted model artifacts: safe tar reading, native-format inspection, the image/xgboost
version-skew check, and metrics documents. Malicious tars are built here, in the test."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import xgboost

from modeldeploy.artifacts import compat
from modeldeploy.artifacts.compat import (
    WRITTEN_FOR_ATTR,
    IncompatibleArtifactError,
    check_artifact,
    check_info,
    framework_version_for,
    framework_version_from_image,
    rewrite_for_image,
)
from modeldeploy.artifacts.inspect import (
    ModelInfo,
    TypedArray,
    inspect_model_bytes,
    ubj_loads,
)
from modeldeploy.artifacts.metrics import evaluation_document, parse_metrics
from modeldeploy.artifacts.package import (
    UnsafeArtifactError,
    read_model_member,
    safe_extract,
    sha256_file,
    write_model_tar,
)

INSTALLED = tuple(int(p) for p in xgboost.__version__.split(".")[:3])


@pytest.fixture(scope="module")
def tiny() -> tuple[xgboost.Booster, np.ndarray]:
    """A small real model (5 rounds on random data) and rows to score."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0.3).astype(int)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
        xgboost.DMatrix(X, label=y),
        num_boost_round=5,
    )
    return booster, X


@pytest.fixture(scope="module")
def ubj(tiny: tuple[xgboost.Booster, np.ndarray]) -> bytes:
    return bytes(tiny[0].save_raw("ubj"))


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], gz: bool = True) -> Path:
    mode = "w:gz" if gz else "w"
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# --- package: writing and safe reading ----------------------------------------------------


def test_write_model_tar_round_trip_and_is_reproducible(ubj: bytes, tmp_path: Path) -> None:
    model = tmp_path / "model.ubj"
    model.write_bytes(ubj)
    a, b = tmp_path / "a" / "model.tar.gz", tmp_path / "b" / "model.tar.gz"
    write_model_tar(model, a)
    write_model_tar(model, b)
    with tarfile.open(a, "r:gz") as tar:
        members = tar.getmembers()
    assert [(m.name, m.isreg(), m.size) for m in members] == [("xgboost-model", True, len(ubj))]
    assert read_model_member(a) == ubj
    # Same bytes in, same digest out: registration can key on the artifact digest.
    assert sha256_file(a) == sha256_file(b)
    assert len(sha256_file(a)) == 64


def test_safe_extract_writes_only_the_model_under_dest(ubj: bytes, tmp_path: Path) -> None:
    tar = _tar(tmp_path / "m.tar.gz", [(_info("./xgboost-model"), ubj)])
    dest = tmp_path / "dest"
    out = safe_extract(tar, dest)
    assert out == dest / "xgboost-model"
    assert out.read_bytes() == ubj
    assert _files(dest) == {"xgboost-model"}


MALICIOUS = {
    "parent traversal": ([(_info("../evil"), b"x")], "escapes"),
    "nested traversal": ([(_info("a/../../evil"), b"x")], "escapes"),
    "absolute path": ([(_info("/tmp/evil-modeldeploy"), b"x")], "absolute"),
    "symlink": ([(_info("xgboost-model", tarfile.SYMTYPE, "/etc/passwd"), None)], "link"),
    "hardlink": ([(_info("xgboost-model", tarfile.LNKTYPE, "/etc/passwd"), None)], "link"),
    "char device": ([(_info("xgboost-model", tarfile.CHRTYPE), None)], "not a regular file"),
    "block device": ([(_info("xgboost-model", tarfile.BLKTYPE), None)], "not a regular file"),
    "fifo": ([(_info("xgboost-model", tarfile.FIFOTYPE), None)], "not a regular file"),
    "two files": (
        [(_info("xgboost-model"), b"{}"), (_info("other-model"), b"{}")],
        "more than one file",
    ),
    "wrong name": ([(_info("model.bin"), b"{}")], "xgboost-model"),
    "in a subdirectory": ([(_info("sub/xgboost-model"), b"{}")], "top-level"),
    "empty": ([], "no model file"),
    "many directories": ([(_info(f"d{i}", tarfile.DIRTYPE), None) for i in range(40)], "entries"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_tars_are_refused_and_nothing_is_written(case: str, tmp_path: Path) -> None:
    members, message = MALICIOUS[case]
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    tar = _tar(sandbox / "m.tar.gz", members)
    dest = sandbox / "dest"
    with pytest.raises(UnsafeArtifactError, match=message):
        read_model_member(tar)
    with pytest.raises(UnsafeArtifactError, match=message):
        safe_extract(tar, dest)
    # Nothing inside dest, nothing next to it, nothing at an absolute target.
    assert _files(tmp_path) == {"sandbox", "sandbox/m.tar.gz"}
    assert not Path("/tmp/evil-modeldeploy").exists()


def test_not_a_gzip_tar_is_refused(ubj: bytes, tmp_path: Path) -> None:
    plain = _tar(tmp_path / "plain.tar", [(_info("xgboost-model"), ubj)], gz=False)
    with pytest.raises(UnsafeArtifactError, match="not a gzip"):
        read_model_member(plain)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(ubj)
    with pytest.raises(UnsafeArtifactError, match="not a gzip"):
        read_model_member(raw)
    gz_not_tar = tmp_path / "g.gz"
    gz_not_tar.write_bytes(gzip.compress(b"hello, not a tar" * 100))
    with pytest.raises(UnsafeArtifactError):
        read_model_member(gz_not_tar)
    good = _tar(tmp_path / "good.tar.gz", [(_info("xgboost-model"), ubj)])
    truncated = tmp_path / "trunc.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UnsafeArtifactError):
        read_model_member(truncated)


def test_oversize_member_is_refused(ubj: bytes, tmp_path: Path) -> None:
    tar = _tar(tmp_path / "m.tar.gz", [(_info("xgboost-model"), ubj)])
    with pytest.raises(UnsafeArtifactError, match="limit"):
        read_model_member(tar, max_bytes=len(ubj) - 1)
    assert read_model_member(tar, max_bytes=len(ubj)) == ubj


def test_pickled_model_is_refused_without_unpickling(
    tiny: tuple[xgboost.Booster, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tar = _tar(tmp_path / "m.tar.gz", [(_info("xgboost-model"), pickle.dumps(tiny[0]))])

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the artifact was unpickled")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    with pytest.raises(UnsafeArtifactError, match="pickled models are refused"):
        check_artifact(tar, "3.2-0", None)
    assert not (tmp_path / "dest").exists()


# --- inspect ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ubj", "json"])
def test_inspect_native_formats(fmt: str, tiny: tuple[xgboost.Booster, np.ndarray]) -> None:
    booster, _ = tiny
    raw = bytes(booster.save_raw(fmt))
    info = inspect_model_bytes(raw)
    config = json.loads(booster.save_config())
    assert info.format == fmt
    assert info.xgboost_version == INSTALLED
    assert info.num_feature == 4
    assert info.objective == "binary:logistic"
    # What xgboost itself reports as base_score, in the writer's form.
    written = json.loads(booster.save_raw("json"))["learner"]["learner_model_param"]["base_score"]
    assert info.base_score_is_vector == written.startswith("[")
    assert info.base_score_is_vector == (INSTALLED >= (3, 1, 0))
    reported = float(config["learner"]["learner_model_param"]["base_score"].strip("[]"))
    assert info.base_score == pytest.approx((reported,), rel=1e-6)


@pytest.mark.parametrize(
    "data",
    [
        b"binf\x00\x00\x00\x00",  # xgboost's legacy binary format
        b"",
        b"\x00\x01\x02",
        b'{"a": 1}',  # JSON, but not an xgboost model
        b"[1, 2]",
        b"{L\x00\x00\x00\x00\x00\x00\x00\x07learn",  # truncated UBJ
        b"{L\x00\x00\x00\x00\x00\x00\x00\x01a" * 200 + b"}" * 200,  # nested too deeply
        b"{L\x7f\xff\xff\xff\xff\xff\xff\xffa}",  # length beyond the data
    ],
)
def test_inspect_refuses_non_native_models(data: bytes) -> None:
    with pytest.raises(UnsafeArtifactError, match="not an xgboost native model"):
        inspect_model_bytes(data)


def test_ubj_reader_handles_optimized_containers() -> None:
    # {"a": [$d#i 2 floats], "b": {#i 1 "c": "xy"}, "n": Z, "t": T, noop, "i": I 300}
    doc = (
        b"{"
        + b"i\x01a[$d#i\x02"
        + struct.pack(">ff", 1.0, 2.0)
        + b"i\x01b{#i\x01i\x01cSi\x02xy"
        + b"i\x01nZ"
        + b"i\x01tT"
        + b"N"
        + b"i\x01iI"
        + struct.pack(">h", 300)
        + b"i\x01s[#i\x02Si\x01pU\x07"
        + b"}"
    )
    value, _ = ubj_loads(doc)
    assert value == {
        "a": TypedArray("d", 2),
        "b": {"c": "xy"},
        "n": None,
        "t": True,
        "i": 300,
        "s": ["p", 7],
    }


# --- compat: the version-skew check -----------------------------------------------------


def _model(
    version: tuple[int, int, int], fmt: str = "ubj", vector: bool = False, written_for: str = ""
) -> ModelInfo:
    attrs = ((WRITTEN_FOR_ATTR, written_for),) if written_for else ()
    return ModelInfo(version, fmt, vector, 30, "binary:logistic", (0.6,), attrs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("writer", "expected"),
    [
        ((3, 2, 0), "3.2-0"),
        ((3, 2, 1), "3.2-0"),
        ((3, 1, 0), "3.2-0"),  # no 3.1 image: the oldest newer one
        ((3, 0, 2), "3.0-5"),
        ((2, 1, 4), "3.0-5"),
        ((1, 7, 6), "1.7-1"),
        ((1, 6, 2), "1.7-1"),
        ((1, 2, 1), "1.2-2"),
        ((0, 90, 0), "0.90-2"),
        ((3, 3, 0), "3.2-0"),  # newer than every image: newest of its major
    ],
)
def test_framework_version_for(writer: tuple[int, int, int], expected: str) -> None:
    assert framework_version_for(writer) == expected


def test_framework_version_for_an_unknown_major() -> None:
    with pytest.raises(IncompatibleArtifactError, match=r"4\.0\.0"):
        framework_version_for((4, 0, 0))


REFUSED = [
    # (model, frameworkVersion, words the message must contain)
    (
        _model((3, 2, 0), vector=True),
        "1.7-1",
        ["3.2.0", "1.7.4", "base_score", "Use frameworkVersion 3.2-0"],
    ),
    (_model((3, 2, 0), vector=True), "3.0-5", ["3.2.0", "3.0.5", "base_score"]),
    (_model((3, 1, 1), "json", vector=True), "1.7-1", ["3.1.1", "1.7.4", "3.2-0"]),
    (_model((3, 2, 0)), "1.7-1", ["older major version"]),  # scalar, but not vouched for 1.7
    (_model((3, 2, 0), written_for="3.0-5"), "1.7-1", ["older major version"]),
    (_model((1, 7, 4)), "1.5-1", ["UBJ", "1.5.2", "Use frameworkVersion 1.7-1."]),
    (_model((3, 2, 0), written_for="1.7-1"), "1.5-1", ["UBJ"]),  # vouching cannot add UBJ
    (_model((1, 7, 4), "json"), "0.90-1", ["0.90.0", "JSON/UBJ"]),
]


@pytest.mark.parametrize(("info", "framework_version", "words"), REFUSED)
def test_incompatible_images_are_refused(
    info: ModelInfo, framework_version: str, words: list[str]
) -> None:
    with pytest.raises(IncompatibleArtifactError) as err:
        check_info(info, framework_version)
    for word in words:
        assert word in str(err.value)


ACCEPTED = [
    (_model((3, 2, 0), vector=True), "3.2-0"),
    (_model((3, 2, 0)), "3.0-5"),  # scalar base_score, same major
    (_model((3, 2, 0), written_for="1.7-1"), "1.7-1"),  # rewritten by modeldeploy train
    (_model((1, 7, 4)), "1.7-1"),
    (_model((1, 7, 4)), "3.2-0"),  # newer images read older models
    (_model((1, 5, 2), "json"), "1.5-1"),
    (_model((1, 0, 0), "json"), "1.0-1"),
]


@pytest.mark.parametrize(("info", "framework_version"), ACCEPTED)
def test_compatible_images_are_accepted(info: ModelInfo, framework_version: str) -> None:
    assert check_info(info, framework_version) == framework_version


def test_default_and_unknown_framework_versions() -> None:
    info = _model((3, 2, 0), vector=True)
    assert check_info(info, None) == "3.2-0"
    assert check_info(_model((1, 7, 4)), None) == "1.7-1"
    with pytest.raises(IncompatibleArtifactError, match="unknown"):
        check_info(info, "9.9-9")


def test_explicit_images() -> None:
    ecr = "683313688378.dkr.ecr.us-east-1.amazonaws.com"
    assert framework_version_from_image(f"{ecr}/sagemaker-xgboost:1.7-1") == "1.7-1"
    assert framework_version_from_image(f"{ecr}/sagemaker-xgboost:1.7-1-cpu-py3") == "1.7-1"
    assert framework_version_from_image(f"{ecr}/sagemaker-xgboost:9.9-9") == ""
    assert framework_version_from_image(f"{ecr}/my-xgboost:1.7-1") == ""
    assert framework_version_from_image(f"{ecr}/sagemaker-xgboost@sha256:{'0' * 64}") == ""
    info = _model((3, 2, 0), vector=True)
    assert check_info(info, None, f"{ecr}/sagemaker-xgboost:3.2-0-cpu-py3") == "3.2-0"
    with pytest.raises(IncompatibleArtifactError, match=r"1\.7\.4"):
        check_info(info, None, f"{ecr}/sagemaker-xgboost:1.7-1")
    # A custom image: its xgboost is unknown, nothing to check; the caller warns.
    assert check_info(info, None, f"{ecr}/team/custom-xgb:latest") == ""


def test_image_uri_from_the_packaged_table_else_once_per_region_outside_the_operator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compat._region_images.cache_clear()
    uri = compat.image_uri("us-east-1", "1.7-1")
    assert uri.endswith(".dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1")
    assert compat.image_uri("eu-west-1", "0.90-1").endswith(
        ".eu-west-1.amazonaws.com/sagemaker-xgboost:0.90-1-cpu-py3"
    )
    assert compat._region_images.cache_info().currsize == 0  # no child for a packaged region

    # A region the packaged table lacks: one child answers all its versions.
    monkeypatch.setattr(compat, "_packaged_images", lambda: {})
    assert compat.image_uri("us-east-1", "1.7-1") == uri
    assert compat.image_uri("us-east-1", "3.2-0").endswith("/sagemaker-xgboost:3.2-0")
    assert compat._region_images.cache_info().hits == 1
    # sagemaker-core's ~90 MiB never enter the operator's process
    assert not any(m.startswith("sagemaker.core") for m in sys.modules)
    with pytest.raises(ValueError, match=r"no XGBoost 1\.7-1 image for mars-north-1"):
        compat.image_uri("mars-north-1", "1.7-1")
    compat._region_images.cache_clear()


def test_the_packaged_image_table_is_sagemaker_cores() -> None:
    script = Path(__file__).resolve().parents[1] / "hack" / "gen-image-table.py"
    check = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=300
    )
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("fmt", ["ubj", "json"])
@pytest.mark.parametrize("target", ["1.7-1", "3.0-5", "3.2-0"])
def test_rewrite_for_older_images_scores_the_same(
    fmt: str, target: str, tiny: tuple[xgboost.Booster, np.ndarray], tmp_path: Path
) -> None:
    booster, X = tiny
    raw = bytes(booster.save_raw(fmt))
    rewritten = rewrite_for_image(raw, target)
    info = inspect_model_bytes(rewritten)
    assert info.format == fmt
    assert info.attribute(WRITTEN_FOR_ATTR) == target
    assert info.base_score_is_vector == (
        inspect_model_bytes(raw).base_score_is_vector and target == "3.2-0"
    )
    reloaded = xgboost.Booster()
    reloaded.load_model(bytearray(rewritten))
    np.testing.assert_allclose(
        reloaded.predict(xgboost.DMatrix(X)), booster.predict(xgboost.DMatrix(X)), atol=1e-7
    )
    model = tmp_path / "xgboost-model"
    model.write_bytes(rewritten)
    write_model_tar(model, tmp_path / "model.tar.gz")
    assert check_artifact(tmp_path / "model.tar.gz", target, None) == target


def test_rewrite_refuses_unsupported_targets(ubj: bytes) -> None:
    with pytest.raises(IncompatibleArtifactError, match="supported"):
        rewrite_for_image(ubj, "1.5-1")
    with pytest.raises(IncompatibleArtifactError, match="already"):
        rewrite_for_image(rewrite_for_image(ubj, "1.7-1"), "1.7-1")


# --- metrics ------------------------------------------------------------------------------


def test_parse_metrics_flat_and_sagemaker_forms() -> None:
    assert parse_metrics({"auc": 0.97, "f1": 1}) == {"auc": 0.97, "f1": 1.0}
    doc = {
        "binary_classification_metrics": {
            "auc": {"value": 0.97, "standard_deviation": "NaN"},
            "recall": {"value": 0.9},
        },
        "regression_metrics": {"mse": {"value": 0.1}},
        "version": "ignored outside *_metrics sections",
    }
    assert parse_metrics(doc) == {"auc": 0.97, "recall": 0.9, "mse": 0.1}
    metrics = {"auc": 0.98, "accuracy": 0.95}
    assert parse_metrics(json.loads(json.dumps(evaluation_document(metrics)))) == metrics


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"auc": "0.97"}, "'auc'.*not a number"),
        ({"auc": True}, "not a number"),
        ({"auc": float("nan")}, "not finite"),
        ({"auc": None}, "not a number"),
        ({}, "non-empty"),
        ({"binary_classification_metrics": {"auc": 0.9}}, "auc must be an object"),
        ({"binary_classification_metrics": {"auc": {"value": "high"}}}, "not a number"),
        ({"binary_classification_metrics": []}, "must be an object"),
    ],
)
def test_parse_metrics_rejects_non_numeric(doc: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_metrics(doc)
