"""The comparison report's page: the metrics table with differences, and overlaid curves.

Every number and curve comes from the versions' evaluation files as registered (or the
registry's metrics when a version has no file), so the page can be made again at any time.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from modeldeploy.report import plots
from modeldeploy.report.compare import Compared
from modeldeploy.report.evaluation import operating_points
from modeldeploy.report.html import Cell, Page, Picture

FILES = {"roc": "roc.png", "pr": "pr.png"}
KEY_METRICS = ("auc", "accuracy", "precision", "recall", "f1")
AVERAGE_PRECISION = "average precision (PR curve)"
CONFUSION_ROWS = ("true negatives", "false positives", "false negatives", "true positives")
# Which way is better, for the metrics whose direction is known; others are not coloured.
HIGHER_IS_BETTER = frozenset({*KEY_METRICS, AVERAGE_PRECISION, "true negatives", "true positives"})
LOWER_IS_BETTER = frozenset(
    {"false positives", "false negatives", "mse", "rmse", "mae", "logloss", "log_loss"}
)


def _values(column: Compared) -> dict[str, float]:
    ev = column.entry.evaluation
    values = dict(ev.metrics)
    if ev.pr is not None:
        values[AVERAGE_PRECISION] = ev.pr.step_area()
    if ev.confusion is not None:
        (tn, fp), (fn, tp) = ev.confusion
        values.update(zip(CONFUSION_ROWS, (tn, fp, fn, tp), strict=True))
    return values


def _row_names(values: list[dict[str, float]]) -> list[str]:
    names = set().union(*values)
    first = [n for n in (*KEY_METRICS, AVERAGE_PRECISION) if n in names]
    last = [n for n in CONFUSION_ROWS if n in names]
    return first + sorted(names - set(first) - set(last)) + last


def _number(name: str, value: float) -> str:
    return f"{value:.0f}" if name in CONFUSION_ROWS else f"{value:.4f}"


def _delta(name: str, new: float | None, old: float | None) -> Cell:
    if new is None or old is None:
        return Cell("")
    diff = new - old
    text = f"{diff:+.0f}" if name in CONFUSION_ROWS else f"{diff:+.4f}"
    if abs(diff) < 1e-12:
        return Cell(text)
    good = diff > 0 if name in HIGHER_IS_BETTER else diff < 0 if name in LOWER_IS_BETTER else None
    return Cell(text, "" if good is None else "better" if good else "worse")


def table(columns: list[Compared]) -> tuple[list[str], list[list[Cell]]]:
    """Header and rows: a metric per row, a version per column, then the candidate's
    difference from each other version."""
    candidate, others = columns[0], columns[1:]
    values = [_values(c) for c in columns]
    header = ["", *(c.heading for c in columns)]
    header += [f"v{candidate.number} - v{o.number}" for o in others]
    rows = []
    for name in _row_names(values):
        cells = [Cell(name)]
        cells += [Cell(_number(name, v[name]) if name in v else "—") for v in values]
        cells += [_delta(name, values[0].get(name), v.get(name)) for v in values[1:]]
        rows.append(cells)
    padding = [Cell("")] * len(others)
    rows.append(
        [Cell("approval"), *(Cell(c.entry.version.approval_status) for c in columns), *padding]
    )
    return header, rows


def _lines(columns: list[Compared]) -> tuple[list[plots.Line], list[plots.Line]]:
    roc, pr = [], []
    for i, column in enumerate(columns):
        ev = column.entry.evaluation
        color = plots.PALETTE[i % len(plots.PALETTE)]
        roc_point, pr_point = operating_points(ev.confusion)
        if ev.roc is not None:
            label = f"{column.heading} (AUC {ev.roc.area():.4f})"
            roc.append(plots.Line(label, ev.roc, color, roc_point))
        if ev.pr is not None:
            label = f"{column.heading} (AP {ev.pr.step_area():.4f})"
            pr.append(plots.Line(label, ev.pr, color, pr_point))
    return roc, pr


def _prevalence(columns: list[Compared]) -> float | None:
    """The share of class 1 in the candidate's held-out rows: what precision a model that
    calls everything class 1 gets."""
    confusion = columns[0].entry.evaluation.confusion
    if confusion is None:
        return None
    counts = np.asarray(confusion)
    return float(counts[1].sum() / counts.sum()) if counts.sum() else None


def _draw(directory: Path, name: str, figure: Figure | None) -> bool:
    path = directory / name
    if figure is None:  # nothing to draw: an older run's picture would pass for this one's
        path.unlink(missing_ok=True)
        return False
    plots.save(figure, path)
    return True


def write_comparison(directory: Path, group: str, provider: str, columns: list[Compared]) -> Path:
    """Write roc.png, pr.png and report.html into `directory`; return report.html's path."""
    roc, pr = _lines(columns)
    pictures = []
    roc_figure = plots.roc_figure(roc, title=f"ROC curves: {group}") if roc else None
    if _draw(directory, FILES["roc"], roc_figure):
        pictures.append(
            Picture(
                FILES["roc"],
                "ROC curves",
                "The candidate against the others, each over its own held-out rows: a curve "
                "nearer the top-left corner ranks better; circles are where each version's "
                "threshold operates.",
            )
        )
    prevalence = _prevalence(columns)
    pr_figure = plots.pr_figure(pr, prevalence, title=f"Precision-recall: {group}") if pr else None
    if _draw(directory, FILES["pr"], pr_figure):
        pictures.append(
            Picture(
                FILES["pr"],
                "Precision-recall curves",
                "Precision against recall for class 1: a curve that stays high further to the "
                "right finds more of class 1 for fewer false alarms.",
            )
        )

    header, rows = table(columns)
    notes = [
        f"v{c.number} has no curves to draw: {c.entry.origin}"
        for c in columns
        if not c.entry.evaluation.has_curves
    ]
    notes += [f"v{c.number}: {problem}" for c in columns for problem in c.entry.evaluation.problems]
    if len(columns) == 1:
        notes.append("There is no other version to compare with.")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = Page(
        title=f"Model report: {group}, v{columns[0].number} against "
        + (", ".join(f"v{c.number}" for c in columns[1:]) or "nothing"),
        facts=[
            ("model package group", f"{group} ({provider} provider)"),
            *((c.heading, f"evaluation: {c.entry.origin}") for c in columns),
            ("made", now),
        ],
        header=header,
        rows=rows,
        pictures=pictures,
        notes=notes,
    )
    return page.write(directory)
