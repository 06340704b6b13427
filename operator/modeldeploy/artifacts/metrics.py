"""Model metrics: read an evaluation document, write one in SageMaker's model-quality form.

Accepted inputs: a flat map `{"auc": 0.97}`, or SageMaker's model-quality JSON (what
`ModelMetrics.ModelQuality.Statistics` points at), whose sections end in `_metrics`:
`{"binary_classification_metrics": {"auc": {"value": 0.97, "standard_deviation": "NaN"}}}`.
That layout also holds entries that are not one number (the confusion matrix, the ROC and
precision-recall curves: `CURVE_ENTRIES`); they are skipped here, where metrics are what approval
rules compare, and read by `modeldeploy.report.evaluation`.
"""

from __future__ import annotations

import json
import math
from typing import Any

SECTION = "binary_classification_metrics"
# The largest evaluation file a provider reads.
MAX_METRICS_FILE = 1 << 20
# The entries of SageMaker's binary classification layout that hold a structure, not a value
# (see SageMaker Model Monitor's "Model quality metrics" page).
CONFUSION_MATRIX = "confusion_matrix"
ROC_CURVE = "receiver_operating_characteristic_curve"
PR_CURVE = "precision_recall_curve"
CURVE_ENTRIES = frozenset({CONFUSION_MATRIX, ROC_CURVE, PR_CURVE})


def _number(name: str, value: Any) -> float:
    # bool is an int subclass; `true` is not a metric value.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"metric {name!r}: value {value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"metric {name!r}: value {value!r} is not finite")
    return number


def parse_metrics(doc: dict) -> dict[str, float]:
    """Metric name -> value from either accepted form. Raises ValueError on anything else."""
    if not isinstance(doc, dict) or not doc:
        raise ValueError("metrics document must be a non-empty JSON object")
    sections = {k: v for k, v in doc.items() if isinstance(k, str) and k.endswith("_metrics")}
    if not sections:
        return {str(name): _number(str(name), value) for name, value in doc.items()}
    out: dict[str, float] = {}
    for section, body in sections.items():
        if not isinstance(body, dict):
            raise ValueError(f"metrics section {section!r} must be an object")
        for name, entry in body.items():
            if name in CURVE_ENTRIES and isinstance(entry, dict) and "value" not in entry:
                continue  # curve data for reports, not a metric a rule can compare
            if not isinstance(entry, dict) or "value" not in entry:
                raise ValueError(f"metric {section}.{name} must be an object with a 'value'")
            if name in out:
                raise ValueError(f"metric {name!r} appears in more than one section")
            out[name] = _number(name, entry["value"])
    return out


def metrics_from_json(raw: bytes) -> dict[str, float]:
    """Metrics from the bytes of an evaluation file (either form `parse_metrics` reads)."""
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    return parse_metrics(doc)


def evaluation_document(metrics: dict[str, float]) -> dict:
    """SageMaker's model-quality form of `metrics` (what `modeldeploy train` writes)."""
    return {
        SECTION: {
            name: {"value": _number(name, value), "standard_deviation": "NaN"}
            for name, value in metrics.items()
        }
    }
