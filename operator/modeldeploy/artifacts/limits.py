"""What a model artifact may cost: structural limits, checked before xgboost parses it, and
the memory/time limits of the process that inspects it.

The decompressed-size cap (package.MAX_MODEL_BYTES) bounds bytes, not what parsing them
costs: a few hundred kilobytes of gzip can declare ten million features, or hold an array of
nulls that becomes a Python object each. These limits are far above any real model (a
1,000-round depth-8 model has ~0.5 M nodes) and far below what would exhaust a host.
"""

from __future__ import annotations

import os

# Trees in a model (rounds x classes x parallel trees).
MAX_TREES = 200_000
# Nodes in one tree, and in all trees together (xgboost holds ~60 bytes per node when serving).
MAX_TREE_NODES = 1 << 20
MAX_TOTAL_NODES = 1 << 23
# Depth of one tree (prediction walks root to leaf; lossguide trees may be deep, not this deep).
MAX_TREE_DEPTH = 1024
# Declared input width: the server sizes its buffers by it.
MAX_NUM_FEATURE = 1 << 22
# Declared features beyond the highest one any split uses: wide sparse data leaves some unused,
# not millions.
MAX_UNUSED_FEATURES = 1 << 16
# Values (array elements and object members) in a JSON/UBJ document: ~12 per node plus change.
MAX_DOCUMENT_VALUES = 16 * MAX_TOTAL_NODES + (1 << 20)
# UBJ no-op markers (xgboost writes none; each costs a Python loop iteration to skip).
MAX_UBJ_NOOPS = 64

# The inspecting subprocess: address space and CPU/wall seconds. Environment overrides, for a
# platform team that serves larger JSON models (JSON costs ~10x its size to parse; UBJ little).
MEMORY_ENV = "MODELDEPLOY_ARTIFACT_MEMORY_MB"
SECONDS_ENV = "MODELDEPLOY_ARTIFACT_SECONDS"
DEFAULT_MEMORY_MB = 1024
DEFAULT_SECONDS = 60


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


def memory_mb() -> int:
    return _env_int(MEMORY_ENV, DEFAULT_MEMORY_MB)


def seconds() -> int:
    return _env_int(SECONDS_ENV, DEFAULT_SECONDS)
