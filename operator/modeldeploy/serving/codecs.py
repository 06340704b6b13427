"""Request bodies to feature matrices, predictions to response bodies: the SageMaker XGBoost
container's wire formats, without per-row Python loops.

CSV is parsed by simdjson after turning the rows into one JSON array: numbers in CSV and in JSON
share their syntax, so this is exact (correctly rounded), and simdjson writes the doubles straight
into a buffer, over 10x faster than numpy's text readers (see bench/README.md). What the fast
path does not take (empty fields, `nan`, `.5`) goes through numpy's string-to-float cast, slower
but still vectorized; whatever that rejects is an unparseable payload (415).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson
import scipy.sparse
import simdjson

from modeldeploy.serving.limits import echo

CSV = "text/csv"
LIBSVM = "text/libsvm"
JSON = "application/json"
JSONLINES = "application/jsonlines"

# Request types the container takes; `text/x-libsvm` is the older spelling of libsvm.
REQUEST_TYPES = {CSV: CSV, LIBSVM: LIBSVM, "text/x-libsvm": LIBSVM}
RESPONSE_TYPES = (CSV, JSON, JSONLINES)
# Accept wildcards and the type each resolves to.
_WILDCARDS = {"*/*": CSV, "text/*": CSV, "application/*": JSON}

_NUMPY_OPT = orjson.OPT_SERIALIZE_NUMPY
# numpy's string arrays are as wide as their longest item: bound it, so that one huge field
# cannot make the parser allocate rows x field-length bytes.
MAX_FIELD_BYTES = 128


@dataclass
class RequestError(Exception):
    """A request the server answers with an HTTP error status and a plain-text message."""

    status: int
    message: str

    def __str__(self) -> str:
        return self.message


def request_type(header: bytes | None) -> str:
    """The canonical request media type; no Content-Type means CSV, as in the container."""
    if not header:
        return CSV
    media = header.split(b";", 1)[0].strip().lower().decode("latin-1")
    try:
        return REQUEST_TYPES[media]
    except KeyError:
        raise RequestError(
            415,
            f"Content-Type {echo(media)} is not supported; use text/csv or text/libsvm",
        ) from None


def response_type(header: bytes | None) -> str:
    """Pick the response type from Accept (RFC 9110 q-values); no Accept means CSV."""
    if not header:
        return CSV
    offers: list[tuple[float, int, str]] = []
    for index, item in enumerate(header.decode("latin-1").split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        media = media.lower()
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media and quality > 0:
            offers.append((-quality, index, media))
    for _, _, media in sorted(offers):
        if media in RESPONSE_TYPES:
            return media
        if media in _WILDCARDS:
            return _WILDCARDS[media]
    raise RequestError(
        406,
        f"Accept {echo(header)} is not supported; use one of {', '.join(RESPONSE_TYPES)}",
    )


def _csv_shape(text: bytes) -> tuple[int, int]:
    """(rows, columns) of a stripped CSV payload; 415 if rows differ in length."""
    if b"\n" not in text:
        return 1, text.count(b",") + 1
    raw = np.frombuffer(text, dtype=np.uint8)
    commas = raw == ord(",")
    line_ends = np.flatnonzero(raw == ord("\n"))
    rows = line_ends.size + 1
    # Commas per line, counted in C; every line must have as many as the first.
    starts = np.concatenate(([0], line_ends + 1))
    per_line = np.add.reduceat(commas, starts, dtype=np.int32)
    columns = int(per_line[0]) + 1
    if not bool((per_line == per_line[0]).all()):
        raise RequestError(
            415,
            f"unparseable CSV: rows have different numbers of fields (the first row has "
            f"{columns}); send one row per line, no header",
        )
    return rows, columns


def _refuse_nul(text: bytes, kind: str) -> None:
    """numpy drops trailing NUL bytes from bytes items (`1\\0` would read as 1): refuse them."""
    if b"\0" in text:
        raise RequestError(415, f"unparseable {kind}: a NUL byte in the payload")


def _token_array(tokens: list[bytes], kind: str) -> np.ndarray:
    """The tokens as one bytes array, at least 3 wide so that b"nan" fits in any item."""
    width = max(map(len, tokens), default=0)
    if width > MAX_FIELD_BYTES:
        raise RequestError(415, f"unparseable {kind}: a field is over {MAX_FIELD_BYTES} bytes")
    return np.array(tokens, dtype=f"S{max(width, 3)}")


class _NumberArrays:
    """simdjson reading a JSON array of numbers straight into doubles (no Python floats)."""

    def __init__(self) -> None:
        self.parser = simdjson.Parser()

    def read(self, flat: bytes, count: int) -> np.ndarray | None:
        """The comma-separated numbers in `flat`, or None if they are not all JSON numbers."""
        # Brackets would nest arrays, which simdjson flattens: never let them through.
        if b"[" in flat or b"{" in flat:
            return None
        try:
            array = self.parser.parse(b"[" + flat + b"]")
            values = np.frombuffer(array.as_buffer(of_type="d"), dtype=np.float64)
        except (ValueError, TypeError):  # not JSON, or not all numbers (true, null, "1")
            return None
        except RuntimeError:  # a big integer, or a parser that is still referenced: renew it
            self.parser = simdjson.Parser()
            return None
        return values if values.size == count else None


_NUMBERS = _NumberArrays()


def _csv_values(text: bytes, count: int) -> np.ndarray:
    """All fields of the payload, row-major, as float64 (empty field = missing = NaN)."""
    flat = text.replace(b"\n", b",")
    values = _NUMBERS.read(flat, count)
    if values is not None:
        return values
    # Valid floats that JSON spells differently (`.5`, `5.`, `+1`, `nan`, empty fields).
    _refuse_nul(flat, "CSV")
    tokens = _token_array(flat.split(b","), "CSV")
    tokens[np.char.strip(tokens) == b""] = b"nan"
    try:
        return tokens.astype(np.float64)
    except ValueError as exc:
        raise RequestError(415, f"unparseable CSV: {exc}") from None


def parse_csv(body: bytes, num_feature: int) -> np.ndarray:
    """A CSV payload (no header, one row per line) as a C-contiguous (rows, features) array."""
    text = body.strip()
    if b"\r" in text:
        text = text.replace(b"\r", b"")
    rows, columns = _csv_shape(text)
    # Parse before checking the count: text that is not numbers is unparseable (415) whatever
    # its width; numbers in the wrong number of columns are a bad request (400).
    values = _csv_values(text, rows * columns)
    if columns != num_feature:
        raise RequestError(
            400,
            f"feature count mismatch: the CSV rows have {columns} features, "
            f"the model expects {num_feature}",
        )
    return values.reshape(rows, columns)


def parse_libsvm(body: bytes, num_feature: int) -> scipy.sparse.csr_matrix:
    """A libsvm payload (`[label] index:value ...`, one row per line) as a CSR matrix.

    Indices are 0-based column numbers, as xgboost's own libsvm reader takes them; an absent
    index is a missing value.
    """
    text = body.strip().replace(b"\r", b"")
    _refuse_nul(text, "libsvm")
    # A line end becomes its own token (\x01 is not whitespace), so rows survive `split()`.
    tokens = _token_array(text.replace(b"\n", b" \x01 ").split(), "libsvm")
    line_end = tokens == b"\x01"
    rows = int(line_end.sum()) + 1
    row_of = np.cumsum(line_end)[~line_end]
    tokens = tokens[~line_end]
    is_feature = np.strings.find(tokens, b":") >= 0
    labels = np.flatnonzero(~is_feature)
    # A token without a colon is a label, allowed only first on its line.
    previous = row_of[np.maximum(labels - 1, 0)]
    if np.any((labels > 0) & (previous == row_of[labels])):
        raise RequestError(415, "unparseable libsvm: a value without an index inside a row")
    try:
        tokens[labels].astype(np.float64)
    except ValueError as exc:
        raise RequestError(415, f"unparseable libsvm: a label is not a number: {exc}") from None
    if not is_feature.any():
        raise RequestError(
            415,
            "unparseable libsvm: no index:value pair in the payload "
            "(for comma-separated rows send Content-Type: text/csv)",
        )
    columns, values = _libsvm_pairs(tokens[is_feature], num_feature)
    matrix = scipy.sparse.csr_matrix(
        (values, (row_of[is_feature], columns)), shape=(rows, num_feature)
    )
    if matrix.nnz != values.size:
        raise RequestError(415, "unparseable libsvm: a feature index repeats within a row")
    return matrix


def _libsvm_pairs(pairs: np.ndarray, num_feature: int) -> tuple[np.ndarray, np.ndarray]:
    """The column indices and values of `index:value` tokens, checked against the model."""
    head, _, tail = np.strings.partition(pairs, b":")
    try:
        values = tail.astype(np.float64)
        columns = head.astype(np.int64)
    except OverflowError:  # more digits than an int64 holds: an index far out of range
        columns = None
    except ValueError as exc:
        raise RequestError(415, f"unparseable libsvm: {exc}") from None
    if columns is not None and columns.min() < 0:
        raise RequestError(415, "unparseable libsvm: negative feature index")
    if columns is None or columns.max() >= num_feature:
        index = "over 2**63" if columns is None else str(int(columns.max()))
        raise RequestError(
            400,
            f"feature count mismatch: the libsvm rows use feature index {index}, "
            f"the model expects {num_feature} features (indices 0 to {num_feature - 1})",
        )
    return columns, values


def _csv_numbers(predictions: np.ndarray) -> bytes:
    """CSV for predictions holding NaN or infinity, which orjson would write as null."""
    rows = predictions.reshape(predictions.shape[0], -1)
    return b"".join(b",".join(repr(float(v)).encode() for v in row) + b"\n" for row in rows)


def encode(predictions: np.ndarray, media: str) -> bytes:
    """Predictions as a response body: CSV one row per line, JSON or JSON Lines `score`s.

    orjson writes float32 in its shortest exact form; string replacement then turns its array
    into each format, so no Python code runs per prediction. (JSON has no NaN: orjson writes
    null, which stays as is in JSON, while CSV spells it out.)
    """
    if predictions.ndim == 1 or predictions.shape[1] == 1:
        inner = orjson.dumps(predictions.ravel(), option=_NUMPY_OPT)[1:-1]
        sep, score, end = b",", b'{"score":', b"}"
    else:  # several outputs per row (multi-class probabilities): one list per row
        inner = orjson.dumps(predictions, option=_NUMPY_OPT)[2:-2]
        sep, score, end = b"],[", b'{"score":[', b"]}"
    if media == CSV:
        if b"null" in inner:
            return _csv_numbers(predictions)
        return inner.replace(sep, b"\n") + b"\n"
    if media == JSON:
        return b'{"predictions":[' + score + inner.replace(sep, end + b"," + score) + end + b"]}"
    return score + inner.replace(sep, end + b"\n" + score) + end + b"\n"
