"""`modeldeploy train`: the artifact SageMaker's XGBoost container will load, checked with real
xgboost. Trains once per image target for the whole module (about a second each)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xgboost
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from modeldeploy.artifacts.compat import IncompatibleArtifactError, check_artifact
from modeldeploy.artifacts.inspect import inspect_model_bytes
from modeldeploy.artifacts.metrics import MAX_METRICS_FILE, metrics_from_json, parse_metrics
from modeldeploy.report.evaluation import evaluation_from_json
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


# -- the curve data in evaluation.json (SageMaker's model-quality layout) ------------------------


def _scores(result: TrainResult, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The held-out labels and the registered artifact's scores for them."""
    X, y = _heldout(result)
    return y, _load_booster(result, tmp_path).predict(xgboost.DMatrix(X))


def test_evaluation_json_holds_sagemakers_curve_entries(
    default: TrainResult, tmp_path: Path
) -> None:
    """The entries and key names of SageMaker Model Monitor's binary classification layout,
    with the points sklearn computes on the held-out rows."""
    y, scores = _scores(default, tmp_path)
    section = json.loads(default.evaluation.read_text())["binary_classification_metrics"]
    for name in ("auc", "accuracy", "precision", "recall", "f1"):
        assert set(section[name]) == {"value", "standard_deviation"}

    roc = section["receiver_operating_characteristic_curve"]
    assert set(roc) == {"false_positive_rates", "true_positive_rates"}
    fpr, tpr, _ = roc_curve(y, scores)
    np.testing.assert_allclose(roc["false_positive_rates"], fpr, rtol=0, atol=1e-7)
    np.testing.assert_allclose(roc["true_positive_rates"], tpr, rtol=0, atol=1e-7)

    pr = section["precision_recall_curve"]
    assert set(pr) == {"precisions", "recalls"}
    precision, recall, _ = precision_recall_curve(y, scores)
    # Recall increasing, as in SageMaker's example (sklearn lists it decreasing).
    np.testing.assert_allclose(pr["recalls"], recall[::-1], rtol=0, atol=1e-7)
    np.testing.assert_allclose(pr["precisions"], precision[::-1], rtol=0, atol=1e-7)
    assert pr["recalls"][0] == 0 and pr["recalls"][-1] == 1

    # Keyed actual, then predicted, at the 0.5 threshold the scalar metrics use.
    counts = confusion_matrix(y, (scores >= 0.5).astype(int), labels=[0, 1])
    cm = section["confusion_matrix"]
    assert cm == {
        "0": {"0": int(counts[0, 0]), "1": int(counts[0, 1])},
        "1": {"0": int(counts[1, 0]), "1": int(counts[1, 1])},
    }
    (tn, fp), (fn, tp) = counts
    assert section["precision"]["value"] == pytest.approx(tp / (tp + fp))
    assert section["recall"]["value"] == pytest.approx(tp / (tp + fn))
    assert section["accuracy"]["value"] == pytest.approx((tp + tn) / len(y))


def test_the_curves_agree_with_the_reported_metrics(default: TrainResult, tmp_path: Path) -> None:
    y, scores = _scores(default, tmp_path)
    evaluation = evaluation_from_json(default.evaluation.read_bytes())
    assert evaluation.roc is not None and evaluation.pr is not None
    # The trapezoid under the written ROC points is the AUC the file reports.
    assert evaluation.roc.area() == pytest.approx(evaluation.metrics["auc"], abs=1e-12)
    assert evaluation.roc.area() == pytest.approx(roc_auc_score(y, scores), abs=1e-9)
    assert evaluation.pr.step_area() == pytest.approx(average_precision_score(y, scores), abs=1e-9)
    assert evaluation.problems == ()


def test_providers_read_the_file_with_curves_as_its_five_metrics(default: TrainResult) -> None:
    """What the local store and the SageMaker registry read: the curve entries are skipped,
    the numbers an approval rule compares are kept."""
    assert metrics_from_json(default.evaluation.read_bytes()) == default.metrics
    assert len(default.evaluation.read_bytes()) < MAX_METRICS_FILE // 50


def test_train_writes_the_report_beside_the_artifact(default: TrainResult) -> None:
    assert default.report == default.model_tar.parent / "report.html"
    assert default.report_skipped == ""
    for name in ("roc.png", "pr.png", "confusion.png", "calibration.png", "importance.png"):
        assert (default.model_tar.parent / name).stat().st_size > 0


def test_without_matplotlib_train_skips_the_report_and_says_why(tmp_path: Path) -> None:
    """The operator image has no matplotlib: `modeldeploy train` still writes the artifact and
    evaluation.json. A None in sys.modules is how Python spells "not importable"."""
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from modeldeploy.cli import main\n"
        f"sys.exit(main(['train', '--output', {str(tmp_path)!r}, '--quiet']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "report:          skipped: matplotlib is not installed" in proc.stdout
    assert "modeldeploy[report]" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "evaluation.json",
        "heldout.csv",
        "model.tar.gz",
    ]


def test_the_operator_never_imports_matplotlib() -> None:
    code = (
        "import sys\n"
        "import modeldeploy.cli, modeldeploy.handlers, modeldeploy.training.train\n"
        "import modeldeploy.report.compare, modeldeploy.report.sources\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
