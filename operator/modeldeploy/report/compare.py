"""`modeldeploy report --group G`: which versions to compare, read from the registry, drawn.

The candidate is the newest version (or the one asked for); it is compared with what production
serves, which is what approving it would replace, or, when production serves nothing else, with
the version before it. `--versions A,B,...` compares exactly those, the newest as the candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modeldeploy.report import MISSING_EXTRA, available
from modeldeploy.report.sources import VersionEvaluation, open_reader

CANDIDATE = "candidate"
PREVIOUS = "previous version"
ASKED = "asked for"
SUMMARY_METRICS = ("auc", "accuracy", "precision", "recall", "f1")


@dataclass(frozen=True)
class Compared:
    """One column of the report: a version, why it is there, what its evaluation says."""

    entry: VersionEvaluation
    role: str

    @property
    def number(self) -> int:
        return self.entry.number

    @property
    def heading(self) -> str:
        return f"v{self.number} {self.role}"


@dataclass(frozen=True)
class Comparison:
    report: Path  # report.html
    columns: list[Compared]
    provider: str


def parse_versions(text: str | None) -> list[int] | None:
    """ "3,5" -> [3, 5]; None or "" -> None (choose for me)."""
    if not text:
        return None
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--versions {text!r}: expected version numbers like 3,5") from None
    if not numbers or any(n < 1 for n in numbers):
        raise ValueError(f"--versions {text!r}: expected version numbers like 3,5")
    return numbers


def _production_role(endpoints: Sequence[str]) -> str:
    return "in production (" + ", ".join(endpoints) + ")"


def select(
    numbers: Sequence[int], production: dict[int, list[str]], asked: Sequence[int] | None
) -> list[tuple[int, str]]:
    """(version, role) pairs, the candidate first. `numbers` is the group's versions, newest
    first; `production` maps a version to the production endpoints that serve it."""
    if not numbers:
        raise LookupError("the group has no versions")
    unknown = sorted(set(asked or ()) - set(numbers))
    if unknown:
        listed = ", ".join(str(n) for n in sorted(numbers))
        raise LookupError(f"no version {', '.join(map(str, unknown))} (the group has {listed})")

    def role(number: int, otherwise: str) -> str:
        return _production_role(production[number]) if number in production else otherwise

    if asked and len(set(asked)) > 1:
        newest, *others = sorted(set(asked), reverse=True)
        return [(newest, CANDIDATE), *((n, role(n, ASKED)) for n in others)]
    candidate = asked[0] if asked else numbers[0]
    chosen = [(candidate, CANDIDATE)]
    if candidate in production:  # approving it changes nothing there: say so
        chosen = [(candidate, f"{CANDIDATE}, already {_production_role(production[candidate])}")]
    serving = sorted((n for n in production if n != candidate), reverse=True)
    if serving:
        return chosen + [(n, _production_role(production[n])) for n in serving]
    older = [n for n in numbers if n < candidate]
    return chosen + ([(max(older), PREVIOUS)] if older else [])


def compare_group(
    group: str,
    *,
    versions: str | None = None,
    output: Path | None = None,
    provider: str | None = None,
    region: str | None = None,
) -> Comparison:
    """Read the versions to compare through a read-only provider and write the report."""
    if not available():  # before any remote call
        raise RuntimeError(MISSING_EXTRA)
    from modeldeploy.report.compare_page import write_comparison

    asked = parse_versions(versions)
    name, reader = open_reader(group, provider, region)
    listed = reader.versions(group)
    chosen = select([v.version for v in listed], reader.production(listed), asked)
    by_number = {v.version: v for v in listed}
    columns = [Compared(reader.evaluation(by_number[n]), role) for n, role in chosen]
    directory = output or Path("reports") / group
    directory.mkdir(parents=True, exist_ok=True)
    path = write_comparison(directory, group, name, columns)
    return Comparison(path, columns, name)


def summary(comparison: Comparison) -> list[str]:
    """One line per version for the terminal: its role and key metrics."""
    lines = []
    for column in comparison.columns:
        metrics = column.entry.evaluation.metrics
        shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in SUMMARY_METRICS if k in metrics)
        curves = "" if column.entry.evaluation.has_curves else " (no curves)"
        lines.append(f"v{column.number} {column.role}: {shown or 'no metrics'}{curves}")
    return lines
