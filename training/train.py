"""Train the seed model (the bring-your-own-model path): an XGBoost classifier on scikit-learn's
bundled breast-cancer data, packaged for SageMaker's first-party XGBoost container.

Writes into the output directory:
- model.tar.gz     exactly one member, `xgboost-model`, in xgboost's native UBJ format
- evaluation.json  held-out metrics in SageMaker's model-quality form, with that form's confusion
                   matrix, ROC and precision-recall curves
- heldout.csv      the held-out rows, label first, no header (payloads for smoke tests)
- report.html      and its PNGs (ROC, precision-recall, confusion matrix, calibration, feature
                   importance) when the `report` extra (matplotlib) is installed
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xgboost
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import train_test_split

from modeldeploy.artifacts.compat import (
    IMAGE_XGBOOST,
    REWRITE_TARGETS,
    IncompatibleArtifactError,
    framework_version_for,
    rewrite_for_image,
)
from modeldeploy.artifacts.metrics import SECTION, evaluation_document
from modeldeploy.artifacts.package import MODEL_MEMBER, read_model_member, write_model_tar
from modeldeploy.report import MISSING_EXTRA
from modeldeploy.report import available as can_draw
from modeldeploy.report.evaluation import curve_entries, evaluation_from_json
from modeldeploy.training import report

HELDOUT_FRACTION = 0.25
# The score at or above which a row is called class 1: the metrics, the confusion matrix and the
# report's operating points are all at this threshold.
THRESHOLD = 0.5
N_ROUNDS = 100
PARAMS: dict[str, Any] = {
    "n_estimators": N_ROUNDS,
    "max_depth": 3,
    "learning_rate": 0.1,
    "subsample": 0.9,
    "tree_method": "hist",
    "eval_metric": "logloss",
    "n_jobs": 1,  # tiny data: threads cost more than they save
}


@dataclass
class TrainResult:
    model_tar: Path
    evaluation: Path
    metrics: dict[str, float]
    framework_version: str
    xgboost_version: str
    heldout: Path | None = None
    report: Path | None = None  # report.html, when the `report` extra is installed
    report_skipped: str = ""  # why there is no report
    # The in-memory model, so that callers (and tests) can compare it with the artifact.
    model: xgboost.XGBClassifier | None = field(default=None, repr=False, compare=False)


class _Progress(xgboost.callback.TrainingCallback):
    """One progress line per boosting round on stderr (redrawn in place on a terminal)."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds = rounds
        self.tty = sys.stderr.isatty()

    def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
        done = epoch + 1
        loss = ""
        for metrics in evals_log.values():  # one eval set: the training split
            for name, values in metrics.items():
                loss = f" train-{name}={values[-1]:.4f}"
        width = 30
        bar = "#" * (width * done // self.rounds)
        line = f"training [{bar:<{width}}] round {done}/{self.rounds}{loss}"
        if self.tty:
            end = "\n" if done == self.rounds else ""
            print(f"\r{line}", end=end, file=sys.stderr, flush=True)
        elif done % 10 == 0 or done == self.rounds:
            print(line, file=sys.stderr, flush=True)
        return False  # never stop early


def compute_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Held-out metrics at THRESHOLD (positive class 1 = benign in this dataset)."""
    pred = (proba >= THRESHOLD).astype(int)
    return {
        "auc": float(roc_auc_score(y_true, proba)),
        "accuracy": float(accuracy_score(y_true, pred)),
        "precision": float(precision_score(y_true, pred, zero_division=0)),
        "recall": float(recall_score(y_true, pred, zero_division=0)),
        "f1": float(f1_score(y_true, pred, zero_division=0)),
    }


def _installed_xgboost() -> tuple[int, int, int]:
    # "3.2.0", "3.1.0rc1", "2.1.4.dev0" -> the first three numbers.
    nums = [int(n) for n in re.findall(r"\d+", xgboost.__version__)[:3]]
    major, minor, patch = (*nums, 0, 0, 0)[:3]
    return major, minor, patch


def _write_heldout(path: Path, X: np.ndarray, y: np.ndarray) -> None:
    # repr() is the shortest text that reads back as the same float.
    with open(path, "w") as f:
        for label, row in zip(y, X, strict=True):
            f.write(",".join([str(int(label)), *(repr(float(v)) for v in row)]) + "\n")


def _package(model_bytes: bytes, out_tar: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model_file = Path(tmp) / MODEL_MEMBER
        model_file.write_bytes(model_bytes)
        write_model_tar(model_file, out_tar)


def train(
    output: Path, framework_version: str | None = None, seed: int = 0, progress: bool = True
) -> TrainResult:
    """Train, evaluate on a stratified held-out split, and write the artifacts into `output`.

    `framework_version` is the SageMaker XGBoost image the artifact is for; by default the image
    matching the installed xgboost. For an older image the saved model is rewritten so that the
    image's xgboost reads it the same way (see compat.rewrite_for_image).
    """
    writer = _installed_xgboost()
    target = framework_version or framework_version_for(writer)
    if target not in REWRITE_TARGETS:
        # Fail before training, not after.
        known = "known" if target in IMAGE_XGBOOST else "unknown"
        raise IncompatibleArtifactError(
            f"cannot train for SageMaker XGBoost frameworkVersion {target!r} ({known} image); "
            f"modeldeploy train writes models for {', '.join(REWRITE_TARGETS)}"
        )

    data = load_breast_cancer()
    X, y = data.data, data.target
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=HELDOUT_FRACTION, stratify=y, random_state=seed
    )
    callbacks = [_Progress(N_ROUNDS)] if progress else None
    model = xgboost.XGBClassifier(**PARAMS, random_state=seed, callbacks=callbacks)
    # Progress reports training loss only: the held-out split stays unseen until evaluation.
    model.fit(X_train, y_train, eval_set=[(X_train, y_train)], verbose=False)

    proba = model.predict_proba(X_test)[:, 1]
    metrics = compute_metrics(y_test, proba)

    # Native UBJ straight from memory: no file extension decides the format.
    model_bytes = rewrite_for_image(bytes(model.get_booster().save_raw("ubj")), target)

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    model_tar = output / "model.tar.gz"
    _package(model_bytes, model_tar)
    _verify(model_tar, X_test, proba)

    evaluation = output / "evaluation.json"
    document = evaluation_document(metrics)
    document[SECTION].update(curve_entries(y_test, proba, THRESHOLD))
    evaluation.write_text(json.dumps(document, indent=2) + "\n")
    heldout = output / "heldout.csv"
    _write_heldout(heldout, X_test, y_test)

    report_path, skipped = None, MISSING_EXTRA
    if can_draw():
        facts = [
            (
                "data",
                f"scikit-learn's breast-cancer set, {len(y_test)} held-out rows "
                f"({HELDOUT_FRACTION:.0%}, stratified, seed {seed})",
            ),
            ("model", f"XGBClassifier, {N_ROUNDS} rounds, max_depth {PARAMS['max_depth']}"),
            ("written by", f"xgboost {xgboost.__version__}, for frameworkVersion {target}"),
            ("artifact", model_tar.name),
        ]
        report_path = report.write_training_report(
            output,
            # Drawn from the file just written: what is registered is what is pictured.
            evaluation_from_json(evaluation.read_bytes()),
            report.HeldOut(y_test, proba, THRESHOLD, tuple(data.target_names)),
            model.get_booster(),
            tuple(data.feature_names),
            facts,
        )
        skipped = ""
    return TrainResult(
        model_tar=model_tar,
        evaluation=evaluation,
        metrics=metrics,
        framework_version=target,
        xgboost_version=xgboost.__version__,
        heldout=heldout,
        report=report_path,
        report_skipped=skipped,
        model=model,
    )


def _verify(model_tar: Path, X: np.ndarray, expected: np.ndarray) -> None:
    """Reload the packaged model and check it scores exactly like the trained one."""
    booster = xgboost.Booster()
    booster.load_model(bytearray(read_model_member(model_tar)))
    got = booster.predict(xgboost.DMatrix(X))
    if not np.allclose(got, expected, rtol=0, atol=1e-6):
        raise RuntimeError(
            f"packaged model scores differ from the trained one "
            f"(max diff {float(np.max(np.abs(got - expected))):.3g})"
        )
