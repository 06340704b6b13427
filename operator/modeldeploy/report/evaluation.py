"""The curve data of SageMaker's model-quality layout, written at training time and read back.

SageMaker Model Monitor's "Model quality metrics" page shows what `binary_classification_metrics`
holds besides `{"value": ..., "standard_deviation": ...}` entries:

    "confusion_matrix": {"0": {"0": 1, "1": 2}, "1": {"0": 0, "1": 1}},
    "receiver_operating_characteristic_curve": {"false_positive_rates": [...],
                                                 "true_positive_rates": [...]},
    "precision_recall_curve": {"precisions": [...], "recalls": [...]}

The confusion matrix is keyed actual label, then predicted label (the page's example has recall
1.0, precision 1/3 and accuracy 0.5, which only that reading gives). Its curves list recall in
increasing order, and so does `curve_entries`. Keeping the curves in the file that is registered
with a version is what lets `modeldeploy report` redraw any version from its evaluation.json alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve

from modeldeploy.artifacts.metrics import (
    CONFUSION_MATRIX,
    PR_CURVE,
    ROC_CURVE,
    SECTION,
    parse_metrics,
)

LABELS = ("0", "1")


def curve_entries(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict:
    """The three structured entries of `binary_classification_metrics` for held-out scores:
    the confusion matrix at `threshold`, and the ROC and precision-recall curves (sklearn's
    points, every one of them: the file is read back to draw and to check them)."""
    fpr, tpr, _ = roc_curve(y_true, proba)
    precision, recall, _ = precision_recall_curve(y_true, proba)
    counts = confusion_matrix(y_true, (proba >= threshold).astype(int), labels=[0, 1])
    return {
        CONFUSION_MATRIX: {
            actual: {predicted: int(counts[i][j]) for j, predicted in enumerate(LABELS)}
            for i, actual in enumerate(LABELS)
        },
        ROC_CURVE: {
            "false_positive_rates": [float(v) for v in fpr],
            "true_positive_rates": [float(v) for v in tpr],
        },
        # sklearn lists recall decreasing; SageMaker's example lists it increasing.
        PR_CURVE: {
            "precisions": [float(v) for v in precision[::-1]],
            "recalls": [float(v) for v in recall[::-1]],
        },
    }


@dataclass(frozen=True)
class Curve:
    """Points of a curve, in the order they are drawn."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def area(self) -> float:
        """Trapezoidal area under the points: the ROC curve's is the AUC."""
        return float(np.trapezoid(self.y, self.x))

    def step_area(self) -> float:
        """Right-step area (x increasing): the precision-recall curve's is the average
        precision, as sklearn's average_precision_score computes it."""
        x, y = np.asarray(self.x), np.asarray(self.y)
        return float(np.sum(np.diff(x) * y[1:]))


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation.json says: its metrics and, when present, its curve data."""

    metrics: dict[str, float]
    roc: Curve | None = None  # x: false positive rate, y: true positive rate
    pr: Curve | None = None  # x: recall (increasing), y: precision
    # counts[actual][predicted], labels 0 and 1
    confusion: tuple[tuple[int, int], tuple[int, int]] | None = None
    problems: tuple[str, ...] = field(default=())  # curve entries that could not be read

    @property
    def has_curves(self) -> bool:
        return self.roc is not None or self.pr is not None


def _rates(entry: object, x_key: str, y_key: str, name: str) -> Curve:
    if not isinstance(entry, dict):
        raise ValueError(f"{name} must be an object")
    xs, ys = entry.get(x_key), entry.get(y_key)
    if not isinstance(xs, list) or not isinstance(ys, list):
        raise ValueError(f"{name} needs lists {x_key!r} and {y_key!r}")
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"{name}: {x_key} and {y_key} must be two lists of the same length >= 2")
    for v in (*xs, *ys):
        # A rate is a number in [0, 1]; bool is an int subclass and not a rate.
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
            raise ValueError(f"{name}: {v!r} is not a rate in [0, 1]")
    if any(b < a for a, b in pairwise(xs)):
        raise ValueError(f"{name}: {x_key} must not decrease")
    return Curve(tuple(float(v) for v in xs), tuple(float(v) for v in ys))


def _confusion(entry: object) -> tuple[tuple[int, int], tuple[int, int]]:
    if not isinstance(entry, dict) or set(entry) != set(LABELS):
        raise ValueError(f"{CONFUSION_MATRIX} must map the labels 0 and 1")
    rows = []
    for actual in LABELS:
        row = entry[actual]
        if not isinstance(row, dict) or set(row) != set(LABELS):
            raise ValueError(f"{CONFUSION_MATRIX}[{actual}] must map the labels 0 and 1")
        counts = [row[predicted] for predicted in LABELS]
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
            raise ValueError(f"{CONFUSION_MATRIX}[{actual}]: counts must be whole numbers >= 0")
        rows.append((counts[0], counts[1]))
    return rows[0], rows[1]


def _roc(entry: object) -> Curve:
    return _rates(entry, "false_positive_rates", "true_positive_rates", ROC_CURVE)


def _pr(entry: object) -> Curve:
    return _rates(entry, "recalls", "precisions", PR_CURVE)


_READERS = {
    "roc": (ROC_CURVE, _roc),
    "pr": (PR_CURVE, _pr),
    "confusion": (CONFUSION_MATRIX, _confusion),
}


def parse_evaluation(doc: dict) -> Evaluation:
    """Metrics (as the providers read them; ValueError when unreadable) and the curve data.

    A curve entry that is malformed does not make the metrics unreadable: it is left out and
    named in `problems`, so a report can still show the numbers."""
    metrics = parse_metrics(doc)
    section = doc.get(SECTION)
    if not isinstance(section, dict):
        return Evaluation(metrics)
    parts: dict = {}
    problems: list[str] = []
    for attr, (key, read) in _READERS.items():
        if key not in section:
            continue
        try:
            parts[attr] = read(section[key])
        except (ValueError, TypeError) as err:
            problems.append(str(err))
    return Evaluation(metrics, problems=tuple(problems), **parts)


def evaluation_from_json(raw: bytes) -> Evaluation:
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    return parse_evaluation(doc)


def same_metrics(a: dict[str, float], b: dict[str, float]) -> bool:
    """The same metric names with the same values (JSON round-trips floats exactly; the
    tolerance covers a writer that printed fewer digits)."""
    return set(a) == set(b) and all(math.isclose(a[k], b[k], rel_tol=1e-9) for k in a)


def operating_points(
    confusion: tuple[tuple[int, int], tuple[int, int]] | None,
) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """Where the threshold's confusion matrix puts the model on the ROC curve (false positive
    rate, true positive rate) and on the precision-recall curve (recall, precision)."""
    if confusion is None:
        return None, None
    (tn, fp), (fn, tp) = confusion
    roc = (fp / (fp + tn), tp / (tp + fn)) if fp + tn and tp + fn else None
    pr = (tp / (tp + fn), tp / (tp + fp)) if tp + fn and tp + fp else None
    return roc, pr
