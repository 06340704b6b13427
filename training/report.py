"""The report `modeldeploy train` writes beside the artifact: report.html and its PNGs.

The ROC and precision-recall curves and the confusion matrix are drawn from the evaluation.json
just written (what gets registered with the version), so these pictures are the ones
`modeldeploy report` redraws later from the registry; calibration and feature importance need
the held-out scores and the model, which only training has. Needs the `report` extra
(matplotlib); `modeldeploy.report.available()` says whether it is installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xgboost
from sklearn.calibration import calibration_curve

from modeldeploy.report.evaluation import Evaluation, operating_points

FILES = {
    "roc": "roc.png",
    "pr": "pr.png",
    "confusion": "confusion.png",
    "calibration": "calibration.png",
    "importance": "importance.png",
}
CALIBRATION_BINS = 10
TOP_FEATURES = 15
# Total gain: how much the splits on a feature reduced the loss, over all trees. "weight" (how
# often a feature is split on) favours features with many distinct values whatever they add.
IMPORTANCE = "gain"


@dataclass(frozen=True)
class HeldOut:
    """The held-out rows' labels and the model's scores for class 1."""

    y: np.ndarray
    proba: np.ndarray
    threshold: float
    class_names: Sequence[str]  # index = label


def importance(booster: xgboost.Booster, feature_names: Sequence[str]) -> list[tuple[str, float]]:
    """(feature, total gain), largest first, at most TOP_FEATURES. A model trained on a plain
    array calls its features f0, f1, ...: they are named from the dataset."""
    scores = booster.get_score(importance_type=f"total_{IMPORTANCE}")
    named = []
    for key, value in scores.items():
        index = int(key[1:]) if key[:1] == "f" and key[1:].isdigit() else None
        name = feature_names[index] if index is not None and index < len(feature_names) else key
        named.append((name, float(value)))
    return sorted(named, key=lambda kv: kv[1], reverse=True)[:TOP_FEATURES]


def calibration(held: HeldOut) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean predicted, fraction positive) per non-empty bin, the rows in every bin, and the
    bins' edges."""
    fraction, mean = calibration_curve(held.y, held.proba, n_bins=CALIBRATION_BINS)
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    # Binned as calibration_curve bins (a score on an edge goes to the upper bin), so the
    # counts belong to its points.
    bins = np.searchsorted(edges[1:-1], held.proba, side="right")
    counts = np.bincount(bins, minlength=CALIBRATION_BINS)
    return mean, fraction, counts, edges


def write_training_report(
    output: Path,
    evaluation: Evaluation,
    held: HeldOut,
    booster: xgboost.Booster,
    feature_names: Sequence[str],
    facts: list[tuple[str, str]],
) -> Path:
    """Write the five PNGs and report.html into `output`; return report.html's path."""
    from modeldeploy.report import plots
    from modeldeploy.report.html import Cell, Page, Picture

    if evaluation.roc is None or evaluation.pr is None or evaluation.confusion is None:
        raise ValueError("the evaluation has no curve data to draw")
    roc_point, pr_point = operating_points(evaluation.confusion)
    color = plots.PALETTE[0]
    auc = evaluation.roc.area()
    ap = evaluation.pr.step_area()
    t = held.threshold
    mark = f"threshold {t:g}"
    plots.save(
        plots.roc_figure(
            [plots.Line(f"model (AUC {auc:.4f})", evaluation.roc, color, roc_point, mark)]
        ),
        output / FILES["roc"],
    )
    plots.save(
        plots.pr_figure(
            [plots.Line(f"model (AP {ap:.4f})", evaluation.pr, color, pr_point, mark)],
            prevalence=float(np.mean(held.y)),
        ),
        output / FILES["pr"],
    )
    plots.save(
        plots.confusion_figure(evaluation.confusion, held.class_names, t),
        output / FILES["confusion"],
    )
    plots.save(plots.calibration_figure(*calibration(held)), output / FILES["calibration"])
    ranked = importance(booster, feature_names)
    plots.save(
        plots.importance_figure(
            [n for n, _ in ranked], [v for _, v in ranked], f"total {IMPORTANCE}"
        ),
        output / FILES["importance"],
    )

    positive = held.class_names[1]
    page = Page(
        title="Model report: held-out evaluation",
        facts=[
            *facts,
            ("threshold", f"{t:g} (class 1 = {positive} when the score is at least this)"),
        ],
        header=["metric", "value"],
        rows=[[Cell(name), Cell(f"{value:.4f}")] for name, value in evaluation.metrics.items()]
        + [[Cell("average precision (PR curve)"), Cell(f"{ap:.4f}")]],
        pictures=[
            Picture(
                FILES["roc"],
                "ROC curve",
                "How well the scores rank the held-out rows: the nearer the top-left corner, "
                "the better; the diagonal is guessing. The circle is where the threshold "
                f"{t:g} operates.",
            ),
            Picture(
                FILES["pr"],
                "Precision-recall curve",
                f"Of the rows called {positive}, how many are (precision), against how many of "
                f"the {positive} rows are found (recall). The dashed line is calling every row "
                f"{positive}; the circle is the threshold {t:g}.",
            ),
            Picture(
                FILES["confusion"],
                "Confusion matrix",
                f"Counts at threshold {t:g}, actual class by row, predicted by column: the "
                "off-diagonal cells are the mistakes, and which kind costs more decides the "
                "threshold.",
            ),
            Picture(
                FILES["calibration"],
                "Calibration",
                "Whether a score of 0.8 means 8 in 10: points on the diagonal are calibrated. "
                "The bars show where the scores fall; a confident model piles them at 0 and 1, "
                "where the few rows in the middle bins make those points noisy.",
            ),
            Picture(
                FILES["importance"],
                "Feature importance",
                f"The {len(ranked)} features whose splits reduced the loss most (total gain). "
                "A feature that should not matter near the top (an identifier, a leak of the "
                "label) is a reason not to approve.",
            ),
        ],
    )
    return page.write(output)
