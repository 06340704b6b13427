"""Is a parsed model document structurally plausible? Cheap checks, in Python, before xgboost
ever sees the bytes: tree and node counts within limits, every tree a real tree (children in
range, one parent each, bounded depth), arrays no longer than their tree, no values beyond
what the trees account for (padding), and a declared `num_feature` near what the splits use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modeldeploy.artifacts.inspect import NOT_NATIVE, ModelInfo, TypedArray
from modeldeploy.artifacts.limits import (
    MAX_NUM_FEATURE,
    MAX_TOTAL_NODES,
    MAX_TREE_DEPTH,
    MAX_TREE_NODES,
    MAX_TREES,
    MAX_UNUSED_FEATURES,
)
from modeldeploy.artifacts.package import UnsafeArtifactError

# Objectives xgboost (0.90 .. 3.2) knows; a model naming another cannot be scored as written.
KNOWN_OBJECTIVES = frozenset(
    {
        "reg:squarederror",
        "reg:squaredlogerror",
        "reg:logistic",
        "reg:pseudohubererror",
        "reg:absoluteerror",
        "reg:quantileerror",
        "reg:linear",
        "reg:gamma",
        "reg:tweedie",
        "reg:expectileerror",
        "binary:logistic",
        "binary:logitraw",
        "binary:hinge",
        "count:poisson",
        "survival:cox",
        "survival:aft",
        "multi:softmax",
        "multi:softprob",
        "rank:pairwise",
        "rank:ndcg",
        "rank:map",
    }
)
# Tree arrays that are not one entry per node.
_CATEGORY_FIELDS = ("categories",)


def _refuse(reason: str) -> UnsafeArtifactError:
    return UnsafeArtifactError(f"implausible model structure: {reason}; refused")


def _length(value: Any) -> int:
    if isinstance(value, TypedArray):
        return value.count
    if isinstance(value, list):
        return len(value)
    raise _refuse(f"expected an array, found {type(value).__name__}")


def _ints(value: Any) -> Sequence[int]:
    if isinstance(value, TypedArray):
        if value.marker in ("d", "D"):
            raise _refuse("integer tree array stored as floats")
        return value.values()
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return value
    raise _refuse("integer tree array holds non-integers")


def _int_param(params: Any, key: str, default: int | None = None) -> int:
    try:
        raw = params.get(key, default) if default is not None else params[key]
        return int(raw)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise _refuse(f"bad or missing {key!r} ({exc})") from exc


def _depth_within_limit(left: Sequence[int], right: Sequence[int]) -> bool:
    frontier = [0]
    for _ in range(MAX_TREE_DEPTH + 1):
        frontier = [c for n in frontier if left[n] != -1 for c in (left[n], right[n])]
        if not frontier:
            return True
    return False


def _check_children(index: int, left: Sequence[int], right: Sequence[int]) -> int:
    """Check one tree's links (in range, one parent each, bounded depth); return the number of
    internal nodes."""
    n = len(left)
    if len(right) != n or n == 0:
        raise _refuse(f"tree {index} has {n} left and {len(right)} right children")
    # A leaf has no left child (a multi-target leaf keeps its leaf-vector index on the right).
    internal = [i for i in range(n) if left[i] != -1]
    children = [c for i in internal for c in (left[i], right[i])]
    if any(c < 1 or c >= n for c in children):
        raise _refuse(f"tree {index} links a node outside its {n} nodes")
    if len(set(children)) != len(children):
        raise _refuse(f"tree {index} is not a tree (a node has two parents)")
    if len(internal) >= MAX_TREE_DEPTH and not _depth_within_limit(left, right):
        raise _refuse(f"tree {index} is deeper than {MAX_TREE_DEPTH} levels")
    return len(internal)


def _check_tree(index: int, tree: Any, num_feature: int) -> tuple[int, int]:
    """Check one tree; return (its node count, its highest split feature or -1)."""
    if not isinstance(tree, dict):
        raise _refuse(f"tree {index} is not an object")
    param = tree.get("tree_param")
    nodes = _int_param(param, "num_nodes")
    leaf_size = max(1, _int_param(param, "size_leaf_vector", 1))
    if not 0 < nodes <= MAX_TREE_NODES:
        raise _refuse(f"tree {index} has {nodes} nodes (limit {MAX_TREE_NODES})")
    if _int_param(param, "num_feature", num_feature) > num_feature:
        raise _refuse(f"tree {index} declares more features than the model")
    for key, value in tree.items():
        if key in _CATEGORY_FIELDS or not isinstance(value, list | TypedArray):
            continue
        if _length(value) > nodes * leaf_size:
            raise _refuse(f"tree {index} {key!r} has {_length(value)} entries for {nodes} nodes")
    try:
        left, right = _ints(tree["left_children"]), _ints(tree["right_children"])
        splits = _ints(tree["split_indices"])
    except KeyError as exc:
        raise _refuse(f"tree {index} lacks {exc}") from exc
    if len(left) != nodes or len(splits) != nodes:
        raise _refuse(f"tree {index} arrays do not match its {nodes} nodes")
    _check_children(index, left, right)
    used = max((splits[i] for i in range(nodes) if left[i] != -1), default=-1)
    if used >= num_feature or used < -1:
        raise _refuse(f"tree {index} splits on feature {used}, the model has {num_feature}")
    return nodes, used


def _gbtree_model(booster: Any) -> Any:
    name = booster.get("name") if isinstance(booster, dict) else None
    if name == "gbtree":
        return booster.get("model")
    if name == "dart":
        return (booster.get("gbtree") or {}).get("model")
    raise _refuse(f"unknown gradient booster {name!r}")


def _check_trees(learner: dict, num_feature: int) -> tuple[int, int, int]:
    """(total nodes, highest used feature, values the trees account for)."""
    model = _gbtree_model(learner.get("gradient_booster"))
    if not isinstance(model, dict) or not isinstance(model.get("trees"), list):
        raise _refuse("gradient_booster holds no tree list")
    trees = model["trees"]
    if len(trees) > MAX_TREES:
        raise _refuse(f"{len(trees)} trees (limit {MAX_TREES})")
    declared = _int_param(model.get("gbtree_model_param"), "num_trees", len(trees))
    if declared != len(trees):
        raise _refuse(f"num_trees says {declared}, the model holds {len(trees)}")
    total, used, budget = 0, -1, 0
    for index, tree in enumerate(trees):
        nodes, tree_used = _check_tree(index, tree, num_feature)
        total += nodes
        if total > MAX_TOTAL_NODES:
            raise _refuse(f"over {MAX_TOTAL_NODES} nodes in all trees (the node limit)")
        used = max(used, tree_used)
        leaf_size = max(1, _int_param(tree["tree_param"], "size_leaf_vector", 1))
        budget += 16 * nodes * leaf_size + 64 + _length(tree.get("categories", []))
    return total, used, budget


def _check_linear(learner: dict, num_feature: int) -> int:
    booster = learner.get("gradient_booster")
    weights = (booster.get("model") or {}).get("weights") if isinstance(booster, dict) else None
    param = learner["learner_model_param"]
    groups = max(1, _int_param(param, "num_class", 1), _int_param(param, "num_target", 1))
    count = _length(weights)
    if count > (num_feature + 1) * groups:
        raise _refuse(f"{count} linear weights for {num_feature} features")
    return count


def _count_values(doc: Any) -> int:
    """Array elements and object members in the document (a typed array counts its length)."""
    total, stack = 0, [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            total += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            total += len(item)
            stack.extend(v for v in item if isinstance(v, dict | list | TypedArray))
        elif isinstance(item, TypedArray):
            total += item.count
    return total


def check_plausible(doc: dict[str, Any], info: ModelInfo) -> None:
    """Raise UnsafeArtifactError (naming the cause) for a structure no real model has."""
    if info.objective not in KNOWN_OBJECTIVES:
        raise UnsafeArtifactError(f"{NOT_NATIVE}: unknown objective {info.objective[:64]!r}")
    num_feature = info.num_feature
    if not 0 < num_feature <= MAX_NUM_FEATURE:
        raise _refuse(f"num_feature {num_feature} (limit {MAX_NUM_FEATURE})")
    learner = doc["learner"]
    booster = learner.get("gradient_booster")
    if isinstance(booster, dict) and booster.get("name") == "gblinear":
        budget = _check_linear(learner, num_feature)
    else:
        _, used, budget = _check_trees(learner, num_feature)
        if num_feature > used + 1 + MAX_UNUSED_FEATURES:
            raise _refuse(
                f"num_feature {num_feature} is far beyond the features the trees use "
                f"(highest {used}; at most {MAX_UNUSED_FEATURES} unused are allowed)"
            )
    budget += 4 * num_feature + (1 << 16)
    values = _count_values(doc)
    if values > budget:
        raise _refuse(f"{values} values where the model accounts for {budget} (padding)")
