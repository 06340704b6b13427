"""Read what an xgboost model file says about itself, without loading it into xgboost.

xgboost's native formats are JSON and UBJSON (Universal Binary JSON, the default since 2.1).
Both record the writer's version (`version: [3, 2, 0]`) and the learner's parameters. We parse
them directly: a model artifact is untrusted, so it is never unpickled and never handed to
xgboost before it has been checked.
"""

from __future__ import annotations

import json
import struct
import sys
from array import array
from dataclasses import dataclass, field
from typing import Any, Literal

from modeldeploy.artifacts.limits import MAX_DOCUMENT_VALUES, MAX_UBJ_NOOPS
from modeldeploy.artifacts.package import UnsafeArtifactError

NOT_NATIVE = "not an xgboost native model (JSON/UBJ); pickled models are refused"

# Paths (from the document root) whose value spans the UBJ reader records, so that a caller can
# rewrite exactly those bytes and leave everything else identical.
BASE_SCORE_PATH = ("learner", "learner_model_param", "base_score")

_MAX_DEPTH = 64
# UBJ scalar markers -> struct format (big-endian, as the UBJSON spec says).
_NUMERIC = {
    b"i": ">b",
    b"U": ">B",
    b"I": ">h",
    b"l": ">i",
    b"L": ">q",
    b"d": ">f",
    b"D": ">d",
}
_INT_MARKERS = (b"i", b"U", b"I", b"l", b"L")
# Element types without a payload: a typed container of them costs nothing per element in the
# file and a Python object each when decoded (a "typed array of nulls" bomb). xgboost never
# writes them.
_EMPTY_MARKERS = (b"Z", b"T", b"F", b"N")
_ARRAY_CODES = {"i": "b", "U": "B", "I": "h", "l": "i", "L": "q", "d": "f", "D": "d"}


@dataclass(frozen=True)
class TypedArray:
    """A strongly typed UBJ array (`[$d#L...`), kept undecoded: tree tables can be huge and we
    only need the learner's parameters."""

    marker: str
    count: int
    raw: memoryview | None = field(default=None, compare=False, repr=False)

    def values(self) -> array:
        """The elements, decoded (big-endian on disk, as UBJSON says)."""
        out = array(_ARRAY_CODES[self.marker])
        if self.raw is not None:
            out.frombytes(self.raw)
            if sys.byteorder == "little" and out.itemsize > 1:
                out.byteswap()
        return out


@dataclass(frozen=True)
class ModelInfo:
    xgboost_version: tuple[int, int, int]
    format: Literal["ubj", "json"]
    base_score_is_vector: bool
    num_feature: int
    objective: str
    base_score: tuple[float, ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def version_str(self) -> str:
        return ".".join(str(p) for p in self.xgboost_version)

    def attribute(self, key: str) -> str | None:
        return dict(self.attributes).get(key)


class _UBJReader:
    def __init__(self, data: bytes, track: tuple[tuple[str, ...], ...] = ()) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.track = set(track)
        self.spans: dict[tuple[str, ...], tuple[int, int]] = {}
        self.values = 0
        self.noops = 0

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"truncated UBJ data at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def _marker(self) -> bytes:
        while True:
            m = bytes(self._take(1))
            if m != b"N":  # N is UBJ's no-op padding
                return m
            self.noops += 1
            if self.noops > MAX_UBJ_NOOPS:
                raise ValueError(f"UBJ no-op padding (over {MAX_UBJ_NOOPS} N markers)")

    def _number(self, marker: bytes) -> int | float:
        fmt = _NUMERIC[marker]
        return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]

    def _length(self, marker: bytes | None = None) -> int:
        marker = marker or self._marker()
        if marker not in _INT_MARKERS:
            raise ValueError(f"UBJ length with non-integer marker {marker!r} at byte {self.pos}")
        n = int(self._number(marker))
        if n < 0 or n > len(self.data) - self.pos:
            raise ValueError(f"UBJ length {n} at byte {self.pos} exceeds the data")
        return n

    def _string(self) -> str:
        return bytes(self._take(self._length())).decode("utf-8")

    def value(self, path: tuple[str, ...] = (), marker: bytes | None = None) -> Any:
        if len(path) > _MAX_DEPTH:
            raise ValueError("UBJ data nested too deeply")
        self.values += 1
        if self.values > MAX_DOCUMENT_VALUES:
            raise ValueError(f"UBJ document has over {MAX_DOCUMENT_VALUES} values (padding)")
        start = self.pos
        marker = marker or self._marker()
        result = self._value(path, marker)
        if path in self.track:
            self.spans[path] = (start, self.pos)
        return result

    def _value(self, path: tuple[str, ...], marker: bytes) -> Any:
        if marker in _NUMERIC:
            return self._number(marker)
        if marker == b"S" or marker == b"H":
            return self._string()
        if marker == b"C":
            return bytes(self._take(1)).decode("latin-1")
        if marker == b"T":
            return True
        if marker == b"F":
            return False
        if marker == b"Z":
            return None
        if marker == b"[":
            return self._array(path)
        if marker == b"{":
            return self._object(path)
        raise ValueError(f"unknown UBJ marker {marker!r} at byte {self.pos - 1}")

    def _container_header(self) -> tuple[bytes | None, int | None]:
        elem_type = count = None
        if bytes(self.data[self.pos : self.pos + 1]) == b"$":
            self.pos += 1
            elem_type = bytes(self._take(1))
            if elem_type in _EMPTY_MARKERS:
                raise ValueError(
                    f"UBJ typed container of {elem_type.decode()!r} elements (no payload, "
                    f"e.g. an array of nulls) at byte {self.pos}; xgboost never writes one"
                )
            if bytes(self._take(1)) != b"#":
                raise ValueError("UBJ typed container without a count")
        if elem_type is not None or bytes(self.data[self.pos : self.pos + 1]) == b"#":
            if elem_type is None:
                self.pos += 1
            count = self._length()
        return elem_type, count

    def _array(self, path: tuple[str, ...]) -> Any:
        elem_type, count = self._container_header()
        if elem_type in _NUMERIC and count is not None:
            size = struct.calcsize(_NUMERIC[elem_type]) * count
            raw = self._take(size)  # bounds-checked skip, kept undecoded
            return TypedArray(elem_type.decode(), count, raw)
        items: list[Any] = []
        if count is not None:
            for _ in range(count):
                items.append(self.value((*path, "[]"), elem_type))
            return items
        while True:
            marker = self._marker()
            if marker == b"]":
                return items
            items.append(self.value((*path, "[]"), marker))

    def _object(self, path: tuple[str, ...]) -> dict[str, Any]:
        elem_type, count = self._container_header()
        out: dict[str, Any] = {}
        remaining = count
        while True:
            if remaining is not None:
                if remaining == 0:
                    return out
                remaining -= 1
                key = self._string()
            else:
                marker = self._marker()
                if marker == b"}":
                    return out
                key = bytes(self._take(self._length(marker))).decode("utf-8")
            out[key] = self.value((*path, key), elem_type)


def ubj_loads(
    data: bytes, track: tuple[tuple[str, ...], ...] = ()
) -> tuple[Any, dict[tuple[str, ...], tuple[int, int]]]:
    """Decode UBJSON; return (document, byte spans of the `track`ed paths)."""
    reader = _UBJReader(data, track)
    doc = reader.value()
    return doc, reader.spans


def ubj_string(value: str) -> bytes:
    """Encode a UBJ string value the way xgboost writes one (`S`, int64 length, UTF-8)."""
    raw = value.encode("utf-8")
    return b"SL" + struct.pack(">q", len(raw)) + raw


def detect_format(data: bytes) -> Literal["ubj", "json"]:
    if data[:1] == b"\x80":
        raise UnsafeArtifactError(f"{NOT_NATIVE} (found a Python pickle)")
    head = data.lstrip(b" \t\r\n")[:2]
    if head[:1] != b"{":
        raise UnsafeArtifactError(NOT_NATIVE)
    # JSON: `{"` or `{}`; UBJ: `{` then a key-length marker (xgboost writes `L`) or `}`.
    if head[1:2] in (b'"', b"}") or data[1:2] in (b" ", b"\n", b"\t", b"\r"):
        return "json"
    return "ubj"


def _json_prescan(data: bytes) -> None:
    """Refuse a JSON document with more values than any model within the limits has, counted
    at C speed before json.loads builds a Python object for each."""
    values = data.count(b",") + data.count(b"[") + data.count(b"{")
    if values > MAX_DOCUMENT_VALUES:
        raise UnsafeArtifactError(
            f"{NOT_NATIVE}: the JSON document has about {values} values, over the "
            f"{MAX_DOCUMENT_VALUES} that a model within the tree and node limits can have"
        )


def load_document(data: bytes) -> tuple[dict[str, Any], Literal["ubj", "json"]]:
    fmt = detect_format(data)
    if fmt == "json":
        _json_prescan(data)
    try:
        if fmt == "json":
            doc = json.loads(data)
        else:
            doc, _ = ubj_loads(data)
    except (ValueError, UnicodeDecodeError, struct.error, RecursionError) as exc:
        raise UnsafeArtifactError(f"{NOT_NATIVE}: cannot parse as {fmt.upper()}: {exc}") from exc
    if not isinstance(doc, dict):
        raise UnsafeArtifactError(NOT_NATIVE)
    return doc, fmt


def parse_base_score(raw: Any) -> tuple[tuple[float, ...], bool]:
    """xgboost < 3.1 writes "5E-1"; 3.1+ writes "[6.2676054E-1]" (one value per target)."""
    if isinstance(raw, int | float):
        return (float(raw),), False
    text = str(raw).strip()
    if text.startswith("["):
        body = text.strip("[]").strip()
        values = tuple(float(v) for v in body.split(",")) if body else ()
        return values, True
    return (float(text),), False


def inspect_document(doc: dict[str, Any], fmt: Literal["ubj", "json"]) -> ModelInfo:
    try:
        version = doc["version"]
        if isinstance(version, TypedArray):  # valid UBJ, though xgboost writes a plain array
            version = list(version.values())
        if not (isinstance(version, list) and len(version) == 3):
            raise ValueError(f"bad version {version!r}")
        major, minor, patch = (int(v) for v in version)
        learner = doc["learner"]
        param = learner["learner_model_param"]
        base_score, is_vector = parse_base_score(param.get("base_score", "5E-1"))
        num_feature = int(param["num_feature"])
        objective = str(learner["objective"]["name"])
        attrs = learner.get("attributes") or {}
        attributes = tuple(sorted((str(k), str(v)) for k, v in attrs.items()))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnsafeArtifactError(
            f"{NOT_NATIVE}: the document lacks xgboost's model fields ({exc})"
        ) from exc
    return ModelInfo(
        xgboost_version=(major, minor, patch),
        format=fmt,
        base_score_is_vector=is_vector,
        num_feature=num_feature,
        objective=objective,
        base_score=base_score,
        attributes=attributes,
    )


def inspect_model_bytes(data: bytes) -> ModelInfo:
    """Describe a native xgboost model (JSON or UBJ). Anything else raises UnsafeArtifactError."""
    from modeldeploy.artifacts.plausible import check_plausible

    doc, fmt = load_document(bytes(data))
    info = inspect_document(doc, fmt)
    check_plausible(doc, info)
    return info
