"""Model reports: the pictures a reviewer looks at before approving a version.

- `evaluation`  the curve data of SageMaker's model-quality layout: computed at training time,
                read back from any registered version's evaluation.json
- `plots`       the figures (matplotlib, Agg canvas), one function per picture
- `html`        report.html around them
- `sources`, `local_source`, `sagemaker_source`
                a group's versions, their evaluation files and what production serves, read
                through a provider built read-only
- `compare`     `modeldeploy report --group G`: versions side by side

Only `plots` (and what imports it) needs matplotlib, the optional `report` extra: the operator
image does not install it, and nothing the operator runs imports it.
"""

from __future__ import annotations

import importlib.util

MISSING_EXTRA = "matplotlib is not installed: pip install 'modeldeploy[report]' to draw reports"


def available() -> bool:
    """Whether the pictures can be drawn (the `report` extra is installed)."""
    return importlib.util.find_spec("matplotlib") is not None
