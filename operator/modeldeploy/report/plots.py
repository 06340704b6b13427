"""The report's pictures: one function per figure, each returning a matplotlib Figure.

Figures are drawn on an Agg canvas made for each one (`FigureCanvasAgg`), never through pyplot:
no global figure registry, no backend selection that depends on the environment (a CI machine
without a display, a thread of another program), and a figure is freed when it goes out of scope.
Every figure has the same size and fixed axes positions, so the pixel where a data point is drawn
is the same each time it is drawn (what tests/test_report.py checks in the written PNGs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from modeldeploy.report.evaluation import Curve

WIDTH_IN, HEIGHT_IN, DPI = 6.4, 4.8, 100  # 640 x 480 pixels
# Left, bottom, width, height of the data axes, as fractions of the figure.
AXES_RECT = (0.11, 0.11, 0.85, 0.79)
# The candidate first, then what it is compared with (matplotlib's first colours, which read
# apart for the common colour-vision deficiencies better than red against green).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
CHANCE = "#999999"
# Curves reach the corners (0, 0) and (1, 1): a margin keeps them off the axes' frame.
LIMITS = (-0.02, 1.02)


@dataclass(frozen=True)
class Line:
    """One curve on a plot: its label, its points, its colour, and the point the chosen
    threshold puts it at (drawn as a marker), if known."""

    label: str
    curve: Curve
    color: str
    point: tuple[float, float] | None = None
    point_label: str = ""


def new_figure(title: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes(AXES_RECT)
    fig.suptitle(title, fontsize=12)
    return fig, ax


def save(fig: Figure, path: Path) -> Path:
    """Write a PNG. No `Software` tag, so the same figure gives the same bytes."""
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def _curves(
    ax: Axes, lines: Sequence[Line], drawstyle: str, xlabel: str, ylabel: str, legend: str
) -> None:
    """Draw `lines` (after any chance line, whose legend entry then comes first), then the
    limits, grid, axis labels and the legend at `legend`."""
    for line in lines:
        ax.plot(
            line.curve.x,
            line.curve.y,
            color=line.color,
            linewidth=2,
            drawstyle=drawstyle,
            label=line.label,
            zorder=3,
        )
        if line.point is not None:
            ax.plot(
                *line.point,
                marker="o",
                markersize=8,
                markerfacecolor="white",
                markeredgecolor=line.color,
                markeredgewidth=2,
                linestyle="none",
                label=line.point_label or None,
                zorder=4,
            )
    ax.set_xlim(*LIMITS)
    ax.set_ylim(*LIMITS)
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc=legend, fontsize=9)


def roc_figure(lines: Sequence[Line], title: str = "ROC curve (held-out rows)") -> Figure:
    """True against false positive rate; the diagonal is a model that guesses."""
    fig, ax = new_figure(title)
    ax.plot((0, 1), (0, 1), linestyle="--", color=CHANCE, linewidth=1, label="chance", zorder=2)
    _curves(ax, lines, "default", "false positive rate", "true positive rate", "lower right")
    return fig


def pr_figure(
    lines: Sequence[Line],
    prevalence: float | None = None,
    title: str = "Precision-recall curve (held-out rows)",
) -> Figure:
    """Precision against recall, drawn as the steps average precision sums; the horizontal
    line is the precision of a model that calls everything positive."""
    fig, ax = new_figure(title)
    if prevalence is not None:
        ax.axhline(prevalence, linestyle="--", color=CHANCE, linewidth=1, label="chance")
    # "steps-pre": between two recalls the curve holds the precision of the right-hand point,
    # the rectangle average precision adds up.
    _curves(ax, lines, "steps-pre", "recall", "precision", "lower left")
    return fig


def confusion_figure(
    counts: tuple[tuple[int, int], tuple[int, int]], class_names: Sequence[str], threshold: float
) -> Figure:
    """Counts by actual (rows) and predicted (columns) class at the threshold."""
    fig, ax = new_figure(f"Confusion matrix at threshold {threshold:g}")
    matrix = np.asarray(counts)
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(1, int(matrix.max())))
    total = int(matrix.sum()) or 1
    for (i, j), count in np.ndenumerate(matrix):
        dark = count > matrix.max() / 2
        ax.text(
            j,
            i,
            f"{count}\n{count / total:.1%}",
            ha="center",
            va="center",
            fontsize=14,
            color="white" if dark else "black",
        )
    ticks = [f"{k}: {name}" for k, name in enumerate(class_names)]
    ax.set_xticks([0, 1], ticks)
    ax.set_yticks([0, 1], ticks)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    return fig


def calibration_figure(
    mean_predicted: Sequence[float],
    fraction_positive: Sequence[float],
    counts: Sequence[int],
    edges: Sequence[float],
) -> Figure:
    """Reliability diagram over a histogram of the scores: a calibrated model's points lie on
    the diagonal; the bars show how many held-out rows each bin holds."""
    fig, ax = new_figure("Calibration (held-out rows)")
    ax.set_position((AXES_RECT[0], 0.36, AXES_RECT[2], 0.54))
    ax.plot((0, 1), (0, 1), linestyle="--", color=CHANCE, linewidth=1, label="calibrated")
    ax.plot(
        mean_predicted,
        fraction_positive,
        marker="o",
        color=PALETTE[0],
        linewidth=2,
        label="model (n = rows in the bin)",
        zorder=3,
    )
    # A point from 2 rows says little: its count beside it says how little.
    for x, y, n in zip(mean_predicted, fraction_positive, [c for c in counts if c], strict=True):
        offset = (-8, -14) if y > 0.9 else (4, 6)  # inside the frame
        ax.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=offset, fontsize=8)
    ax.set_xlim(*LIMITS)
    ax.set_ylim(*LIMITS)
    ax.set_ylabel("fraction positive")
    ax.tick_params(labelbottom=False)
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    ax.legend(loc="upper left", fontsize=9)
    hist = fig.add_axes((AXES_RECT[0], AXES_RECT[1], AXES_RECT[2], 0.2), sharex=ax)
    widths = np.diff(edges)
    hist.bar(edges[:-1], counts, width=widths, align="edge", color=PALETTE[0], alpha=0.6)
    hist.set_xlabel("predicted probability of class 1")
    hist.set_ylabel("rows")
    return fig


def importance_figure(names: Sequence[str], values: Sequence[float], kind: str) -> Figure:
    """Horizontal bars, the largest on top."""
    fig, ax = new_figure(f"Feature importance ({kind})")
    # Long feature names need the room on the left.
    ax.set_position((0.32, AXES_RECT[1], 0.63, AXES_RECT[3]))
    rows = np.arange(len(names))
    ax.barh(rows, values, color=PALETTE[0])
    ax.set_yticks(rows, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(kind)
    ax.grid(True, axis="x", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    return fig


def pixel_of(fig: Figure, ax: Axes, x: float, y: float) -> tuple[int, int]:
    """(row, column) of the PNG pixel where data point (x, y) of `ax` is drawn."""
    fig.canvas.draw()
    px, py = ax.transData.transform((x, y))
    height = round(fig.get_figheight() * DPI)
    return height - 1 - int(np.floor(py)), int(np.floor(px))
