"""The model report: the PNGs `modeldeploy train` writes are checked for what they draw (the
curves' points, where their pixels are, the counts and bars), and `modeldeploy report` compares
versions registered in a real local registry (and, over the emulator, in SageMaker's)."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import xgboost
from emulator import REGION, ROLE_ARN
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.image import imread
from providers import deploy_request
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

from modeldeploy import naming
from modeldeploy.cli import main
from modeldeploy.providers.local import LocalProvider
from modeldeploy.providers.sagemaker import SageMakerProvider
from modeldeploy.registration import register_local_files
from modeldeploy.remote import APPROVED, ModelVersion
from modeldeploy.report import plots
from modeldeploy.report.compare import compare_group, select
from modeldeploy.report.evaluation import Evaluation, evaluation_from_json, operating_points
from modeldeploy.spec import parse_spec
from modeldeploy.training.train import THRESHOLD, TrainResult, train

PNGS = ("roc.png", "pr.png", "confusion.png", "calibration.png", "importance.png")
HEIGHT, WIDTH = 480, 640
WHITE = np.ones(3)
GROUP = "breast-cancer"
ROOT = Path(__file__).resolve().parents[1]


# -- helpers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[TrainResult]:
    """Three real models, as `modeldeploy train` writes them (seeds 0, 1, 2: different splits,
    different scores)."""
    root = tmp_path_factory.mktemp("models")
    return [train(root / f"m{seed}", seed=seed, progress=False) for seed in range(3)]


def held_out(result: TrainResult) -> tuple[np.ndarray, np.ndarray]:
    """Labels and the registered artifact's scores on the held-out rows."""
    assert result.heldout is not None
    data = np.loadtxt(result.heldout, delimiter=",", ndmin=2)
    booster = xgboost.Booster()
    with tarfile.open(result.model_tar) as tar:
        member = tar.extractfile("xgboost-model")
        assert member is not None
        booster.load_model(bytearray(member.read()))
    return data[:, 0].astype(int), booster.predict(xgboost.DMatrix(data[:, 1:]))


def evaluation(result: TrainResult) -> Evaluation:
    return evaluation_from_json(result.evaluation.read_bytes())


def png(path: Path) -> np.ndarray:
    """RGB in [0, 1], as matplotlib reads a PNG back."""
    image = imread(path)
    assert image.shape == (HEIGHT, WIDTH, 4), image.shape
    return image[:, :, :3]


def shows(image: np.ndarray, pixel: tuple[int, int], color: str, radius: int = 2) -> bool:
    """Whether a pixel within `radius` of `pixel` has `color` (antialiasing blends edges)."""
    row, col = pixel
    patch = image[max(0, row - radius) : row + radius + 1, max(0, col - radius) : col + radius + 1]
    return bool((np.abs(patch - np.asarray(to_rgb(color))).max(axis=2) < 0.1).any())


def drawn_points(fig: Figure) -> list[tuple[np.ndarray, str]]:
    """(points, colour) of each curve line of a report figure (not the chance line)."""
    ax = fig.axes[0]
    return [
        (line.get_xydata(), line.get_color())
        for line in ax.lines
        if line.get_color() in plots.PALETTE and line.get_linestyle() == "-"
    ]


def check_pixels(fig: Figure, image: np.ndarray, min_share: float = 1.0) -> None:
    """Every curve's points are drawn in its colour where the figure's axes put them (at least
    `min_share` of them, when later curves may cover earlier ones); the open circle of an
    operating point is white inside, so points under one are not looked at."""
    ax = fig.axes[0]
    markers = [
        plots.pixel_of(fig, ax, *line.get_xydata()[0])
        for line in ax.lines
        if line.get_marker() == "o" and line.get_linestyle() == "None"
    ]
    curves = drawn_points(fig)
    assert curves
    for points, color in curves:
        looked = hits = 0
        for x, y in points:
            pixel = plots.pixel_of(fig, ax, x, y)
            if any(abs(pixel[0] - r) + abs(pixel[1] - c) < 10 for r, c in markers):
                continue
            looked += 1
            hits += shows(image, pixel, color)
        assert looked >= 2
        assert hits >= min_share * looked, f"{color}: {hits} of {looked} points drawn"


# -- the report `modeldeploy train` writes --------------------------------------------------------


def test_train_writes_five_pngs_of_the_same_size_and_a_page_that_shows_them(
    models: list[TrainResult],
) -> None:
    result = models[0]
    out = result.model_tar.parent
    assert result.report == out / "report.html"
    for name in PNGS:
        png(out / name)  # decodes, 640 x 480
    page = result.report.read_text()
    referenced = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(referenced) == sorted(PNGS)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(PNGS)
    for name, value in result.metrics.items():
        assert f"<td>{name}</td><td>{value:.4f}</td>" in page
    assert f"xgboost {xgboost.__version__}" in page


def test_roc_png_draws_the_evaluation_files_points_where_they_belong(
    models: list[TrainResult],
) -> None:
    result = models[0]
    ev = evaluation(result)
    assert ev.roc is not None
    y, scores = held_out(result)
    point, _ = operating_points(ev.confusion)
    fig = plots.roc_figure([plots.Line("model", ev.roc, plots.PALETTE[0], point)])
    ((points, _),) = drawn_points(fig)
    # The plotted points are the file's, and the area under them is the AUC on the rows.
    np.testing.assert_array_equal(points, np.column_stack([ev.roc.x, ev.roc.y]))
    auc = float(np.trapezoid(points[:, 1], points[:, 0]))
    assert auc == pytest.approx(result.metrics["auc"], abs=1e-12)
    assert auc == pytest.approx(roc_auc_score(y, scores), abs=1e-9)

    image = png(result.model_tar.parent / "roc.png")
    check_pixels(fig, image)
    # Away from the curve, the diagonal and the grid: background.
    row, col = plots.pixel_of(fig, fig.axes[0], 0.7, 0.3)
    np.testing.assert_allclose(image[row, col], WHITE)
    # The operating point sits at the threshold's rates: its ring is the curve's colour.
    (tn, fp), (fn, tp) = ev.confusion or ((0, 0), (0, 0))
    assert point == (fp / (fp + tn), tp / (tp + fn))
    ring = plots.pixel_of(fig, fig.axes[0], *point)
    assert shows(image, ring, plots.PALETTE[0], radius=6)


def test_pr_png_draws_the_steps_average_precision_sums(models: list[TrainResult]) -> None:
    result = models[0]
    ev = evaluation(result)
    assert ev.pr is not None
    y, scores = held_out(result)
    _, point = operating_points(ev.confusion)
    fig = plots.pr_figure([plots.Line("model", ev.pr, plots.PALETTE[0], point)], float(y.mean()))
    ((points, _),) = drawn_points(fig)
    recall, precision = points[:, 0], points[:, 1]
    assert np.all(np.diff(recall) >= 0)
    ap = float(np.sum(np.diff(recall) * precision[1:]))
    assert ap == pytest.approx(average_precision_score(y, scores), abs=1e-9)
    check_pixels(fig, png(result.model_tar.parent / "pr.png"))


def test_confusion_png_shows_the_counts_at_the_threshold(models: list[TrainResult]) -> None:
    result = models[0]
    y, scores = held_out(result)
    counts = confusion_matrix(y, (scores >= THRESHOLD).astype(int), labels=[0, 1])
    ev = evaluation(result)
    assert ev.confusion == tuple(tuple(int(c) for c in row) for row in counts)
    fig = plots.confusion_figure(ev.confusion, ("malignant", "benign"), THRESHOLD)
    texts = [t.get_text().split("\n")[0] for t in fig.axes[0].texts]
    assert texts == [str(c) for c in counts.ravel()]
    # Cells are shaded by count: the largest is the darkest.
    image = png(result.model_tar.parent / "confusion.png")
    ax = fig.axes[0]
    shade = {
        (i, j): image[plots.pixel_of(fig, ax, j + 0.3, i + 0.3)].sum()
        for i in range(2)
        for j in range(2)
    }
    largest = np.unravel_index(np.argmax(counts), counts.shape)
    smallest = np.unravel_index(np.argmin(counts), counts.shape)
    assert shade[largest] < shade[smallest]


def test_calibration_png_plots_sklearns_calibration_curve(models: list[TrainResult]) -> None:
    from modeldeploy.training.report import HeldOut, calibration

    result = models[0]
    y, scores = held_out(result)
    mean, fraction, counts, edges = calibration(HeldOut(y, scores, THRESHOLD, ("0", "1")))
    expected_fraction, expected_mean = calibration_curve(y, scores, n_bins=10)
    np.testing.assert_allclose(mean, expected_mean, atol=1e-7)
    np.testing.assert_allclose(fraction, expected_fraction, atol=1e-7)
    assert counts.sum() == len(y) and len(counts[counts > 0]) == len(mean)
    fig = plots.calibration_figure(mean, fraction, counts, edges)
    ((points, _),) = drawn_points(fig)
    np.testing.assert_allclose(points, np.column_stack([mean, fraction]))
    check_pixels(fig, png(result.model_tar.parent / "calibration.png"))


def test_importance_png_ranks_the_boosters_total_gain(models: list[TrainResult]) -> None:
    from sklearn.datasets import load_breast_cancer

    from modeldeploy.training.report import TOP_FEATURES, importance

    result = models[0]
    assert result.model is not None
    gains = result.model.get_booster().get_score(importance_type="total_gain")
    names = load_breast_cancer().feature_names
    ranked = importance(result.model.get_booster(), names)
    assert len(ranked) == min(TOP_FEATURES, len(gains))
    top_key = max(gains, key=gains.__getitem__)
    assert ranked[0] == (names[int(top_key[1:])], pytest.approx(gains[top_key]))
    assert [v for _, v in ranked] == sorted((v for _, v in ranked), reverse=True)

    fig = plots.importance_figure([n for n, _ in ranked], [v for _, v in ranked], "total gain")
    ax = fig.axes[0]
    widths = [bar.get_width() for bar in ax.patches]
    assert widths == [v for _, v in ranked]
    assert [t.get_text() for t in ax.get_yticklabels()] == [n for n, _ in ranked]
    # Inside the top bar, near its end: the bar's colour; past it: background.
    image = png(result.model_tar.parent / "importance.png")
    assert shows(image, plots.pixel_of(fig, ax, 0.97 * widths[0], 0), plots.PALETTE[0], 0)
    row, col = plots.pixel_of(fig, ax, 0.5 * widths[0], len(ranked) - 1)
    assert widths[-1] < 0.4 * widths[0]
    np.testing.assert_allclose(image[row, col], WHITE)


# -- which versions a comparison shows ------------------------------------------------------------


def test_the_candidate_is_compared_with_what_production_serves_or_the_version_before() -> None:
    prod = {1: ["ns-a-1234-prod"]}
    assert select([3, 2, 1], {}, None) == [(3, "candidate"), (2, "previous version")]
    assert select([3, 2, 1], prod, None) == [
        (3, "candidate"),
        (1, "in production (ns-a-1234-prod)"),
    ]
    assert select([3, 2, 1], prod, [2]) == [(2, "candidate"), (1, "in production (ns-a-1234-prod)")]
    assert select([3, 2, 1], {}, [1]) == [(1, "candidate")]
    assert select([3, 2, 1], prod, [1]) == [
        (1, "candidate, already in production (ns-a-1234-prod)")
    ]
    assert select([3, 2, 1], prod, [1, 3]) == [
        (3, "candidate"),
        (1, "in production (ns-a-1234-prod)"),
    ]
    assert select([3, 2, 1], {}, [2, 3, 1]) == [
        (3, "candidate"),
        (2, "asked for"),
        (1, "asked for"),
    ]
    with pytest.raises(LookupError, match=r"no version 7 \(the group has 1, 2, 3\)"):
        select([3, 2, 1], {}, [7])


# -- `modeldeploy report` on a local registry ------------------------------------------------------


@pytest.fixture
def local_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELDEPLOY_LOCAL_DIR", str(tmp_path / "local"))
    monkeypatch.delenv("MODELDEPLOY_LOCAL_HOSTING", raising=False)  # process hosting
    monkeypatch.delenv("MODELDEPLOY_DEFAULT_PROVIDER", raising=False)
    return tmp_path / "local"


@pytest.fixture
def registry(local_dir: Path):
    """A supervising local provider (what the operator runs) to register and deploy with."""
    provider = LocalProvider(local_dir)
    provider.registry.ensure_group(GROUP, None)
    yield provider
    for name in provider.hosting.names(""):
        provider.hosting.delete(name)


def register(provider: LocalProvider, result: TrainResult) -> ModelVersion:
    spec = parse_spec(
        {
            "provider": "local",
            "modelPackageGroup": {"name": GROUP},
            "model": {
                "artifact": f"file://{result.model_tar}",
                "metrics": f"file://{result.evaluation}",
            },
        }
    )
    return provider.registry.register_version(spec)


def test_report_compares_the_newest_version_with_what_production_serves(
    models: list[TrainResult], registry: LocalProvider, tmp_path: Path, capsys
) -> None:
    versions = [register(registry, m) for m in models]
    assert [v.version for v in versions] == [1, 2, 3]

    # Nothing in production: v3 against v2, both drawn from their evaluation.json.
    first = compare_group(GROUP, output=tmp_path / "first")
    assert [(c.number, c.role) for c in first.columns] == [
        (3, "candidate"),
        (2, "previous version"),
    ]
    assert [c.entry.origin for c in first.columns] == [
        f"file://{models[2].evaluation}",
        f"file://{models[1].evaluation}",
    ]

    # Version 1 serves production (a real `modeldeploy serve` process of the local hosting).
    endpoint = naming.endpoint_name("demo", "bc", "production")
    registry.registry.set_approval(versions[0].arn, APPROVED, "test")
    registry.hosting.deploy(deploy_request(versions[0], endpoint, stage="production"))
    before = registry.state.dump()
    code = main(["report", "--group", GROUP, "--output", str(tmp_path / "report")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert registry.state.dump() == before  # read only: the endpoint row is as deploy left it
    page_path = tmp_path / "report" / "report.html"
    assert out[-1] == str(page_path)
    assert out[0].startswith("v3 candidate: auc ")
    assert out[1].startswith(f"v1 in production ({endpoint}): auc ")

    page = page_path.read_text()
    assert "<th>v3 candidate</th>" in page and f"<th>v1 in production ({endpoint})</th>" in page
    for name in ("auc", "accuracy", "precision", "recall", "f1"):
        new, old = models[2].metrics[name], models[0].metrics[name]
        assert f"<td>{name}</td><td>{new:.4f}</td><td>{old:.4f}</td>" in page
        assert f"{new - old:+.4f}</td>" in page
    assert sorted(re.findall(r'<img src="([^"]+)"', page)) == ["pr.png", "roc.png"]

    # The overlaid curves are each version's evaluation.json, in its colour, at its pixels.
    candidate, baseline = evaluation(models[2]), evaluation(models[0])
    assert candidate.roc is not None and baseline.roc is not None
    fig = plots.roc_figure(
        [
            plots.Line(
                "v3", candidate.roc, plots.PALETTE[0], operating_points(candidate.confusion)[0]
            ),
            plots.Line(
                "v1", baseline.roc, plots.PALETTE[1], operating_points(baseline.confusion)[0]
            ),
        ]
    )
    drawn = drawn_points(fig)
    np.testing.assert_array_equal(drawn[0][0], np.column_stack([candidate.roc.x, candidate.roc.y]))
    np.testing.assert_array_equal(drawn[1][0], np.column_stack([baseline.roc.x, baseline.roc.y]))
    # Near-perfect curves overlap near the corner: half of each one's points are enough.
    check_pixels(fig, png(tmp_path / "report" / "roc.png"), min_share=0.5)
    png(tmp_path / "report" / "pr.png")


def test_a_version_whose_folder_was_trained_again_is_shown_without_curves(
    registry: LocalProvider, tmp_path: Path
) -> None:
    """The local registry keeps the artifact's source, not its metrics file: an evaluation.json
    beside it that holds other metrics belongs to another model and is not drawn."""
    first = train(tmp_path / "model", seed=0, progress=False)
    register(registry, first)
    train(tmp_path / "model", seed=5, progress=False)  # overwrites both files
    comparison = compare_group(GROUP, output=tmp_path / "report")
    (column,) = comparison.columns
    assert not column.entry.evaluation.has_curves
    assert column.entry.evaluation.metrics == first.metrics  # the registry's own numbers
    assert "not the ones registered with the version" in column.entry.origin
    page = comparison.report.read_text()
    assert "v1 has no curves to draw" in page and "There is no other version" in page
    assert re.findall(r"<img ", page) == []
    assert not (tmp_path / "report" / "roc.png").exists()


def test_report_says_what_is_missing(local_dir: Path, capsys) -> None:
    assert main(["report", "--group", GROUP]) == 1
    assert f"there is no local registry at {local_dir}" in capsys.readouterr().err
    LocalProvider(local_dir)  # an empty registry
    assert main(["report", "--group", GROUP]) == 1
    assert f"model package group '{GROUP}' is not in" in capsys.readouterr().err
    assert main(["report", "--group", GROUP, "--versions", "two"]) == 1
    assert "expected version numbers like 3,5" in capsys.readouterr().err


# -- over the emulator: the version's ModelMetrics file, production from the endpoint's model -----


@pytest.mark.emulator
def test_report_reads_sagemaker_versions_and_their_model_metrics_files(
    models: list[TrainResult], aws_env, bucket: str, tmp_path: Path
) -> None:
    arns = [
        register_local_files(
            group=GROUP,
            artifact=m.model_tar,
            metrics=m.evaluation,
            bucket=bucket,
            region=REGION,
        )
        for m in models[:2]
    ]
    provider = SageMakerProvider(REGION, ROLE_ARN)
    provider.registry.set_approval(arns[0], APPROVED, "test")
    v1 = provider.registry.describe_version(arns[0])
    assert v1 is not None
    endpoint = naming.endpoint_name("ml", "churn", "production")
    provider.hosting.deploy(deploy_request(v1, endpoint, stage="production"))

    comparison = compare_group(
        GROUP, provider="sagemaker", region=REGION, output=tmp_path / "report"
    )
    assert comparison.provider == "sagemaker"
    assert [(c.number, c.role) for c in comparison.columns] == [
        (2, "candidate"),
        (1, f"in production ({endpoint})"),
    ]
    for column, model in zip(comparison.columns, (models[1], models[0]), strict=True):
        assert column.entry.origin.startswith(f"s3://{bucket}/{GROUP}/")
        assert column.entry.evaluation.metrics == model.metrics
        assert column.entry.evaluation.roc == evaluation(model).roc
    page = comparison.report.read_text()
    assert f"{models[1].metrics['auc']:.4f}</td><td>{models[0].metrics['auc']:.4f}" in page
    png(tmp_path / "report" / "roc.png")


# -- the picture in README.md ---------------------------------------------------------------------


def test_the_readme_picture_is_what_train_draws_for_the_seed_model(
    models: list[TrainResult],
) -> None:
    """docs/model-report-roc.png is the seed model's roc.png (seed 0, as `modeldeploy train`
    trains by default). When the model or the drawing changes, draw it again:
    .venv/bin/modeldeploy train --output out/seed && cp out/seed/roc.png docs/model-report-roc.png
    """
    committed = ROOT / "docs" / "model-report-roc.png"
    assert "](docs/model-report-roc.png)" in (ROOT / "README.md").read_text()
    assert committed.stat().st_size < 60_000
    fresh = png(models[0].model_tar.parent / "roc.png")
    # Another matplotlib may render text a little differently; the curve must not move.
    differing = float((np.abs(png(committed) - fresh).max(axis=2) > 0.1).mean())
    assert differing < 0.005, f"{differing:.1%} of the pixels differ: draw it again (see above)"


def test_a_malformed_curve_entry_is_named_and_the_metrics_still_read() -> None:
    section = {
        "auc": {"value": 0.9, "standard_deviation": "NaN"},
        "receiver_operating_characteristic_curve": {
            "false_positive_rates": [0.0, 0.5, 0.2],
            "true_positive_rates": [0.0, 0.8, 1.0],
        },
        "precision_recall_curve": {"precisions": [1.0, 2.0], "recalls": [0.0, 1.0]},
        "confusion_matrix": {"0": {"0": 3, "1": 1}},
    }
    ev = evaluation_from_json(json.dumps({"binary_classification_metrics": section}).encode())
    assert ev.metrics == {"auc": 0.9}
    assert (ev.roc, ev.pr, ev.confusion) == (None, None, None)
    assert ev.problems == (
        "receiver_operating_characteristic_curve: false_positive_rates must not decrease",
        "precision_recall_curve: 2.0 is not a rate in [0, 1]",
        "confusion_matrix must map the labels 0 and 1",
    )
