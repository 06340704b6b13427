"""`modeldeploy train`: the artifact SageMaker's XGBoost container will load, checked with real
xgboost. Trains once per image target for the whole module (about a second each)."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xgboost
from sklearn.metrics import roc_auc_score

from modeldeploy.artifacts.compat import IncompatibleArtifactError, check_artifact
from modeldeploy.artifacts.inspect import inspect_model_bytes
from modeldeploy.artifacts.metrics import parse_metrics
from modeldeploy.training.train import TrainResult, train

INSTALLED = xgboost.__version__


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(tmp_path_factory.mktemp("default"), progress=False)


@pytest.fixture(scope="module")
def for_17(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, str]:
    # This run also shows progress, captured here to check the display.
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        result = train(tmp_path_factory.mktemp("v17"), framework_version="1.7-1")
    return result, err.getvalue()


def _members(tar_path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(tar_path, "r:gz") as tar:
        return tar.getmembers()


def _model_bytes(tar_path: Path) -> bytes:
    # Read with the standard library, independently of modeldeploy's reader.
    with tarfile.open(tar_path, "r:gz") as tar:
        f = tar.extractfile("xgboost-model")
        assert f is not None
        return f.read()


def _heldout(result: TrainResult) -> tuple[np.ndarray, np.ndarray]:
    assert result.heldout is not None
    data = np.loadtxt(result.heldout, delimiter=",", ndmin=2)
    return data[:, 1:], data[:, 0].astype(int)


def _load_booster(result: TrainResult, tmp_path: Path) -> xgboost.Booster:
    model_file = tmp_path / "xgboost-model"
    model_file.write_bytes(_model_bytes(result.model_tar))
    booster = xgboost.Booster()
    # No extension, as in the container: xgboost 3.x guesses UBJ from the bytes and warns.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        booster.load_model(str(model_file))
    return booster


@pytest.mark.parametrize("which", ["default", "for_17"])
def test_tar_holds_exactly_one_regular_member_named_xgboost_model(
    which: str, request: pytest.FixtureRequest
) -> None:
    result = request.getfixturevalue(which)
    result = result[0] if isinstance(result, tuple) else result
    members = _members(result.model_tar)
    assert [m.name for m in members] == ["xgboost-model"]
    assert members[0].isreg()
    info = inspect_model_bytes(_model_bytes(result.model_tar))
    assert info.format == "ubj"
    assert info.num_feature == 30
    assert info.objective == "binary:logistic"


def test_artifact_predicts_what_the_trained_model_predicts(
    default: TrainResult, tmp_path: Path
) -> None:
    X, _ = _heldout(default)
    booster = _load_booster(default, tmp_path)
    assert default.model is not None
    expected = default.model.predict_proba(X)[:, 1]
    got = booster.predict(xgboost.DMatrix(X))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_heldout_auc_and_evaluation_file(default: TrainResult, tmp_path: Path) -> None:
    X, y = _heldout(default)
    # 25% stratified split of the 569 rows, both classes present.
    assert 140 <= len(y) <= 145
    assert set(np.unique(y)) == {0, 1}
    scores = _load_booster(default, tmp_path).predict(xgboost.DMatrix(X))
    auc = roc_auc_score(y, scores)
    assert auc >= 0.95, f"held-out AUC {auc:.4f}"

    doc = json.loads(default.evaluation.read_text())
    metrics = parse_metrics(doc)
    assert set(metrics) == {"auc", "accuracy", "precision", "recall", "f1"}
    assert metrics == pytest.approx(default.metrics)
    assert metrics["auc"] == pytest.approx(auc, abs=1e-9)
    accuracy = float(np.mean((scores >= 0.5).astype(int) == y))
    assert metrics["accuracy"] == pytest.approx(accuracy)


def test_default_targets_the_matching_image(default: TrainResult) -> None:
    assert default.xgboost_version == INSTALLED
    if INSTALLED == "3.2.0":
        assert default.framework_version == "3.2-0"
    assert check_artifact(default.model_tar, None, None) == default.framework_version
    assert check_artifact(default.model_tar, default.framework_version, None) == (
        default.framework_version
    )


def test_default_artifact_is_refused_for_the_1_7_image(default: TrainResult) -> None:
    info = inspect_model_bytes(_model_bytes(default.model_tar))
    assert info.base_score_is_vector  # xgboost >= 3.1 writes the vector form
    with pytest.raises(IncompatibleArtifactError) as err:
        check_artifact(default.model_tar, "1.7-1", None)
    message = str(err.value)
    assert f"xgboost {INSTALLED}" in message
    assert "xgboost 1.7.4" in message
    assert "base_score" in message
    assert f"Use frameworkVersion {default.framework_version}" in message
    assert "--framework-version 1.7-1" in message


def test_artifact_for_1_7_passes_the_check_and_scores_the_same(
    for_17: tuple[TrainResult, str], tmp_path: Path
) -> None:
    result, _ = for_17
    assert result.framework_version == "1.7-1"
    assert check_artifact(result.model_tar, "1.7-1", None) == "1.7-1"
    info = inspect_model_bytes(_model_bytes(result.model_tar))
    assert not info.base_score_is_vector
    assert len(info.base_score) == 1 and 0 < info.base_score[0] < 1
    # The rewritten model still loads in this xgboost and scores exactly as trained.
    X, _ = _heldout(result)
    assert result.model is not None
    got = _load_booster(result, tmp_path).predict(xgboost.DMatrix(X))
    np.testing.assert_allclose(got, result.model.predict_proba(X)[:, 1], rtol=0, atol=1e-6)


def test_progress_is_shown_per_round(for_17: tuple[TrainResult, str]) -> None:
    _, stderr = for_17
    lines = [line for line in stderr.splitlines() if line.startswith("training")]
    assert lines, stderr
    assert "round 100/100" in lines[-1]
    assert "train-logloss=" in lines[-1]


def test_seed_makes_training_reproducible(default: TrainResult, tmp_path: Path) -> None:
    again = train(tmp_path, progress=False)
    assert again.metrics == default.metrics
    assert _model_bytes(again.model_tar) == _model_bytes(default.model_tar)


def test_unsupported_image_is_refused_before_training(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(IncompatibleArtifactError, match=r"1\.5-1"):
        train(tmp_path, framework_version="1.5-1", progress=False)
    with pytest.raises(IncompatibleArtifactError, match="unknown"):
        train(tmp_path, framework_version="9.9-9", progress=False)
    assert time.monotonic() - start < 1.0
    assert list(tmp_path.iterdir()) == []
