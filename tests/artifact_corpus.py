"""A corpus of hostile and broken model.tar.gz files, each with its expected verdict.

`build(directory)` writes every case and returns them: tar tricks (links, devices, traversal,
many members, huge declared sizes, gzip bombs, truncated and corrupt gzip/deflate streams) and
model tricks (pickle, JSON/UBJ padding, typed arrays of nulls, absurd num_feature, deep, cyclic
and oversized trees, unknown objective or booster, version skew), plus real models that must
be accepted. Nothing here is extracted or unpickled by the test itself.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import pickle
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost

from modeldeploy.artifacts.compat import rewrite_for_image

MB = 1 << 20


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    refused: str | None  # a fragment of the refusal's message; None: accepted
    framework_version: str | None = "3.2-0"


# --- writing tars --------------------------------------------------------------------------


def _member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


def tar_bytes(members: Iterable[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """An uncompressed tar of `members` (data None: a header only)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def model_tar(model: bytes, name: str = "xgboost-model") -> bytes:
    return gzip.compress(tar_bytes([(_member(name), model)]), compresslevel=1, mtime=0)


def _header_only(info: tarfile.TarInfo) -> bytes:
    """A tar holding a header that declares `info.size` bytes, and none of them."""
    return gzip.compress(info.tobuf(tarfile.PAX_FORMAT) + b"\0" * 1024, mtime=0)


def _streamed_member(size: int, head: bytes, fill: bytes, tail: bytes) -> bytes:
    """A gzip tar whose one member is head + fill * n + tail (`size` bytes), compressed in
    chunks so that a bomb is built without holding it."""
    body_fill = size - len(head) - len(tail)
    info = _member("xgboost-model", size=size)
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)
    parts = [comp.compress(info.tobuf(tarfile.PAX_FORMAT) + head)]
    chunk = fill * (MB // len(fill))
    left = body_fill
    while left > 0:
        parts.append(comp.compress(chunk[: min(left, len(chunk))]))
        left -= len(chunk)
    pad = -size % 512
    parts.append(comp.compress(tail + b"\0" * (pad + 1024)))
    parts.append(comp.flush())
    return b"".join(parts)


# --- models --------------------------------------------------------------------------------


def _booster(params: dict[str, Any], rounds: int = 5, features: int = 6) -> xgboost.Booster:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, features))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0.2).astype(float)
    if params.get("num_class"):
        y = rng.integers(0, params["num_class"], len(y))
    base = {"max_depth": 3, "nthread": 1, "objective": "binary:logistic"}
    return xgboost.train({**base, **params}, xgboost.DMatrix(X, label=y), rounds)


def ubj_encode(value: Any) -> bytes:
    """UBJSON as xgboost writes it: int64 lengths, typed arrays for numeric lists."""

    def length(n: int) -> bytes:
        return b"L" + struct.pack(">q", n)

    if isinstance(value, dict):
        body = b"".join(
            length(len(k.encode())) + k.encode() + ubj_encode(v) for k, v in value.items()
        )
        return b"{" + body + b"}"
    if isinstance(value, str):
        return b"S" + length(len(value.encode())) + value.encode()
    if isinstance(value, bool):
        return b"T" if value else b"F"
    if isinstance(value, int):
        return b"L" + struct.pack(">q", value)
    if isinstance(value, float):
        return b"D" + struct.pack(">d", value)
    if value is None:
        return b"Z"
    if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return b"[$l#" + length(len(value)) + struct.pack(f">{len(value)}i", *value)
    if value and all(isinstance(v, float | int) for v in value):
        return b"[$d#" + length(len(value)) + struct.pack(f">{len(value)}f", *value)
    return b"[" + b"".join(ubj_encode(v) for v in value) + b"]"


def _trees(doc: dict) -> list[dict]:
    return doc["learner"]["gradient_booster"]["model"]["trees"]


def _chain_tree(depth: int, features: int) -> dict:
    """A tree that is one path `depth` splits long (2 * depth + 1 nodes)."""
    n = 2 * depth + 1
    left = [-1] * n
    right = [-1] * n
    parents = [-1] * n
    for level in range(depth):
        node = 2 * level
        left[node], right[node] = node + 1, node + 2
        parents[node + 1] = parents[node + 2] = node
    zeros = [0.0] * n
    return {
        "base_weights": zeros,
        "categories": [],
        "categories_nodes": [],
        "categories_segments": [],
        "categories_sizes": [],
        "default_left": [0] * n,
        "id": 0,
        "left_children": left,
        "loss_changes": zeros,
        "parents": parents,
        "right_children": right,
        "split_conditions": zeros,
        "split_indices": [0] * n,
        "split_type": [0] * n,
        "sum_hessian": zeros,
        "tree_param": {
            "num_deleted": "0",
            "num_feature": str(features),
            "num_nodes": str(n),
            "size_leaf_vector": "1",
        },
    }


Mutation = Callable[[dict], None]


def _set(path: tuple[Any, ...], value: Any) -> Mutation:
    def mutate(doc: dict) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _tree0(key: str, fn: Callable[[list], list]) -> Mutation:
    def mutate(doc: dict) -> None:
        tree = _trees(doc)[0]
        tree[key] = fn(tree[key])

    return mutate


def _deep_tree(doc: dict) -> None:
    _trees(doc)[0] = _chain_tree(2000, int(doc["learner"]["learner_model_param"]["num_feature"]))


def _two_parents(doc: dict) -> None:
    tree = _trees(doc)[0]
    tree["right_children"][0] = tree["left_children"][0]


def _cycle(doc: dict) -> None:
    tree = _trees(doc)[0]
    tree["left_children"][tree["left_children"][0]] = 0  # a child links back to the root


def _many_nodes(doc: dict) -> None:
    _trees(doc)[0]["tree_param"]["num_nodes"] = str(1 << 21)


# (name, mutation, format, expected fragment, frameworkVersion)
MODEL_TRICKS: list[tuple[str, Mutation, str, str, str | None]] = [
    ("json pad key", _set(("pad",), [0] * 2_000_000), "json", "padding", "3.2-0"),
    ("ubj pad key", _set(("pad",), [[] for _ in range(300_000)]), "ubj", "padding", "3.2-0"),
    (
        "feature_names pad",
        _set(("learner", "feature_names"), ["f"] * 500_000),
        "json",
        "padding",
        "3.2-0",
    ),
    (
        "num_feature 10^7",
        _set(("learner", "learner_model_param", "num_feature"), "10000000"),
        "ubj",
        "num_feature 10000000",
        "3.2-0",
    ),
    (
        "num_feature 10^6 unused",
        _set(("learner", "learner_model_param", "num_feature"), "1000000"),
        "ubj",
        "far beyond",
        "3.2-0",
    ),
    (
        "num_feature 0",
        _set(("learner", "learner_model_param", "num_feature"), "0"),
        "json",
        "num_feature 0",
        "3.2-0",
    ),
    (
        "split beyond num_feature",
        _tree0("split_indices", lambda s: [99] * len(s)),
        "json",
        "splits on feature 99",
        "3.2-0",
    ),
    ("deep tree", _deep_tree, "ubj", "deeper than 1024", "3.2-0"),
    ("node two parents", _two_parents, "json", "two parents", "3.2-0"),
    ("cycle to root", _cycle, "ubj", "outside", "3.2-0"),
    (
        "child out of range",
        _tree0("left_children", lambda c: [10**6, *c[1:]]),
        "json",
        "outside",
        "3.2-0",
    ),
    ("huge declared nodes", _many_nodes, "ubj", "nodes (limit", "3.2-0"),
    (
        "array longer than tree",
        _tree0("split_conditions", lambda c: c * 50),
        "json",
        "entries for",
        "3.2-0",
    ),
    (
        "num_trees mismatch",
        _set(("learner", "gradient_booster", "model", "gbtree_model_param", "num_trees"), "9999"),
        "json",
        "num_trees says",
        "3.2-0",
    ),
    (
        "unknown objective",
        _set(("learner", "objective", "name"), "reg:bogus"),
        "json",
        "unknown objective",
        "3.2-0",
    ),
    (
        "unknown booster",
        _set(("learner", "gradient_booster", "name"), "gbfoo"),
        "ubj",
        "unknown gradient booster",
        "3.2-0",
    ),
    ("no version", lambda d: d.pop("version"), "json", "lacks xgboost's model fields", "3.2-0"),
    ("future xgboost 9.0", _set(("version",), [9, 0, 0]), "json", "no first-party", None),
    ("skew: vector base_score on 1.7-1", lambda d: None, "ubj", "shifts every score", "1.7-1"),
    ("skew: ubj on 1.5-1", lambda d: None, "ubj", "reads UBJ only from", "1.5-1"),
    (
        "unknown frameworkVersion",
        lambda d: None,
        "ubj",
        "unknown SageMaker XGBoost frameworkVersion",
        "9.9-9",
    ),
]


def _raw_model_cases(ubj: bytes) -> dict[str, tuple[bytes, str]]:
    """Models given as bytes: hand-made UBJ/JSON tricks and non-native formats."""
    tail = ubj[:-1]  # the root object without its closing brace
    pad_key = b"L" + struct.pack(">q", 3) + b"pad"
    nulls = tail + pad_key + b"[$Z#L" + struct.pack(">q", 50 * MB) + b"}" + b"\0" * (50 * MB)
    trues = tail + pad_key + b"[$T#L" + struct.pack(">q", 1000) + b"}" + b"\0" * 1000
    noops = ubj[:1] + b"N" * (20 * MB) + ubj[1:]
    return {
        "pickle": (pickle.dumps({"a": "booster"}), "pickle"),
        "ubj typed array of nulls": (nulls, "array of nulls"),
        "ubj typed array of trues": (trues, "no payload"),
        "ubj no-op padding": (noops, "no-op padding"),
        "ubj truncated": (ubj[: len(ubj) // 2], "truncated"),
        "ubj length beyond data": (
            ubj[:1] + b"L" + struct.pack(">q", 1 << 40) + ubj[10:],
            "exceeds the data",
        ),
        "json deep nesting": (b"[" * 200_000 + b"]" * 200_000, "not an xgboost native model"),
        "json nested object": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "cannot parse"),
        "json huge integer": (b'{"version": [' + b"9" * 100_000 + b",0,0]}", "cannot parse"),
        "empty model": (b"", "not an xgboost native model"),
        "text": (b"hello, world", "not an xgboost native model"),
    }


def _tar_cases(ubj: bytes) -> dict[str, tuple[bytes, str]]:
    ok = tar_bytes([(_member("xgboost-model"), ubj)])
    good = gzip.compress(ok, mtime=0)
    corrupt = bytearray(good)
    mid = len(corrupt) // 2
    corrupt[mid : mid + 64] = bytes(64)
    bad_crc = bytearray(good)
    bad_crc[-8] ^= 0xFF
    many = [(_member(f"d{i}/", tarfile.DIRTYPE), None) for i in range(2000)]
    return {
        "symlink": (
            gzip.compress(
                tar_bytes([(_member("xgboost-model", tarfile.SYMTYPE, link="/etc/passwd"), None)])
            ),
            "link",
        ),
        "hardlink": (
            gzip.compress(
                tar_bytes([(_member("xgboost-model", tarfile.LNKTYPE, link="/etc/shadow"), None)])
            ),
            "link",
        ),
        "char device": (
            gzip.compress(tar_bytes([(_member("xgboost-model", tarfile.CHRTYPE), None)])),
            "not a regular file",
        ),
        "fifo": (
            gzip.compress(tar_bytes([(_member("xgboost-model", tarfile.FIFOTYPE), None)])),
            "not a regular file",
        ),
        "parent traversal": (model_tar(ubj, "../xgboost-model"), "escapes"),
        "absolute path": (model_tar(ubj, "/tmp/xgboost-model"), "absolute"),
        "windows drive": (model_tar(ubj, "C:xgboost-model"), "absolute"),
        "many members": (gzip.compress(tar_bytes(many)), "more than 16 entries"),
        "two model files": (
            gzip.compress(tar_bytes([(_member("xgboost-model"), ubj), (_member("other"), ubj)])),
            "more than one file",
        ),
        "wrong member name": (model_tar(ubj, "model.json"), "expects"),
        "no members": (gzip.compress(tar_bytes([])), "no model file"),
        "huge declared size": (
            _header_only(_member("xgboost-model", size=1 << 40)),
            "over the 536870912-byte limit",
        ),
        "json values bomb": (
            _streamed_member(290 * MB, b'{"pad":[', b"0,", b"0]}"),
            "values, over the",
        ),
        "gzip bomb over the size cap": (
            _streamed_member(600 * MB, b"", b"\0", b""),
            "bytes, over the 536870912-byte limit",
        ),
        "truncated gzip": (good[: len(good) // 2], "corrupt"),
        "corrupt deflate": (bytes(corrupt), "corrupt"),
        "bad gzip crc": (bytes(bad_crc), "corrupt"),
        "plain tar": (ok, "not a gzip"),
        "gzip not tar": (gzip.compress(b"just some text" * 100), "gzip tar"),
        "empty file": (b"", "not a gzip"),
    }


def _accepted(tiny: xgboost.Booster) -> dict[str, tuple[bytes, str | None]]:
    ubj = bytes(tiny.save_raw("ubj"))
    multi = _booster({"objective": "multi:softprob", "num_class": 3})
    dart = _booster({"booster": "dart"})
    linear = _booster({"booster": "gblinear"})
    return {
        "real ubj": (model_tar(ubj), "3.2-0"),
        "real json": (model_tar(bytes(tiny.save_raw("json"))), "3.2-0"),
        "./ member with dir entry": (
            gzip.compress(
                tar_bytes(
                    [(_member(".", tarfile.DIRTYPE), None), (_member("./xgboost-model"), ubj)]
                )
            ),
            "3.2-0",
        ),
        "multi-class": (model_tar(bytes(multi.save_raw("ubj"))), "3.2-0"),
        "dart": (model_tar(bytes(dart.save_raw("json"))), "3.2-0"),
        "gblinear": (model_tar(bytes(linear.save_raw("ubj"))), "3.2-0"),
        "rewritten for 1.7-1": (model_tar(rewrite_for_image(ubj, "1.7-1")), "1.7-1"),
        "wide sparse, few used": (model_tar(_wide(tiny)), "3.2-0"),
    }


def _wide(tiny: xgboost.Booster) -> bytes:
    """A real model declaring 60,000 features of which the trees use 6 (within the slack)."""
    doc = json.loads(bytes(tiny.save_raw("json")))
    doc["learner"]["learner_model_param"]["num_feature"] = "60000"
    for tree in _trees(doc):
        tree["tree_param"]["num_feature"] = "60000"
    return json.dumps(doc).encode()


def build(directory: Path) -> list[Case]:
    """Write every case under `directory`; return them with their expected verdicts."""
    tiny = _booster({})
    ubj = bytes(tiny.save_raw("ubj"))
    doc = json.loads(bytes(tiny.save_raw("json")))
    cases: list[Case] = []

    def add(name: str, body: bytes, refused: str | None, fv: str | None = "3.2-0") -> None:
        path = directory / (name.replace(" ", "_").replace("/", "_") + ".tar.gz")
        path.write_bytes(body)
        cases.append(Case(name, path, refused, fv))

    for name, (body, fragment) in _tar_cases(ubj).items():
        add(f"tar: {name}", body, fragment)
    for name, (model, fragment) in _raw_model_cases(ubj).items():
        add(f"model: {name}", model_tar(model), fragment)
    for name, mutate, fmt, fragment, fv in MODEL_TRICKS:
        changed = copy.deepcopy(doc)
        mutate(changed)
        model = ubj_encode(changed) if fmt == "ubj" else json.dumps(changed).encode()
        if name.startswith("skew") or name.startswith("unknown frameworkVersion"):
            model = ubj
        add(f"model: {name}", model_tar(model), fragment, fv)
    for name, (body, fv) in _accepted(tiny).items():
        add(f"ok: {name}", body, None, fv)
    return cases
