"""Load an untrusted model artifact for serving, and predict with xgboost's in-place path.

The artifact is read without touching the disk: tars go through the same checks as
registration (`artifacts.package`), and only xgboost's native JSON/UBJ formats reach xgboost
(`artifacts.inspect` refuses pickles and anything else before `Booster.load_model` sees it).
`load_model` first inspects the file in a subprocess under the artifact memory and time limits
(`artifacts.guard`), so an implausible model is refused before this process parses it.
"""

from __future__ import annotations

import ctypes
import logging
import math
from pathlib import Path

import numpy as np
import scipy.sparse
import xgboost

from modeldeploy.artifacts import guard
from modeldeploy.artifacts.inspect import ModelInfo, inspect_model_bytes
from modeldeploy.artifacts.package import (
    MAX_MODEL_BYTES,
    MODEL_MEMBER,
    UnsafeArtifactError,
    read_model_member,
)

log = logging.getLogger(__name__)

TAR_NAME = "model.tar.gz"
GZIP_MAGIC = b"\x1f\x8b"
# Cells in the probe that checks the direct prediction path (16 rows of a narrow model).
PROBE_CELLS = 1 << 16


class ModelLoadError(Exception):
    """The model cannot be served; the message says why."""


class PredictionError(Exception):
    """xgboost refused to score the rows (answered as 400, as the container does)."""


def _model_file(path: Path) -> Path:
    """The file to read: the path itself, or `xgboost-model` / `model.tar.gz` in a directory."""
    if path.is_dir():
        for name in (MODEL_MEMBER, TAR_NAME):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise ModelLoadError(f"{path} holds neither {MODEL_MEMBER} nor {TAR_NAME}")
    if not path.exists():
        raise ModelLoadError(f"{path} does not exist")
    if not path.is_file():
        raise ModelLoadError(f"{path} is not a regular file")
    return path


def read_model_bytes(path: Path) -> bytes:
    """The native model bytes behind `path` (a model.tar.gz, an xgboost-model, or a directory)."""
    path = _model_file(Path(path))
    try:
        with open(path, "rb") as f:
            if f.read(2) == GZIP_MAGIC:
                return read_model_member(path)
            f.seek(0)
            data = f.read(MAX_MODEL_BYTES + 1)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if len(data) > MAX_MODEL_BYTES:
        raise ModelLoadError(f"{path} is over the {MAX_MODEL_BYTES}-byte model limit")
    return data


class _DensePredict:
    """`XGBoosterPredictFromDense`, the C entry point that `Booster.inplace_predict` calls for a
    numpy array, called directly: the Python wrapper spends ~100 us per call on type dispatch and
    JSON building, twice the C call itself on a one-row request. Checked against
    `inplace_predict` when loaded (see `Model.__init__`).
    """

    # inplace_predict's own arguments for a plain value prediction, NaN as the missing value.
    CONFIG = (
        b'{"type":0,"training":false,"iteration_begin":0,"iteration_end":0,'
        b'"missing":NaN,"strict_shape":false,"cache_id":0}'
    )

    def __init__(self, booster: xgboost.Booster) -> None:
        from xgboost.core import _LIB, c_bst_ulong

        self._booster = booster  # keeps the handle alive
        self._lib = _LIB
        # Indexing the library gives a function object of our own, not xgboost's cached one.
        self._fn = _LIB["XGBoosterPredictFromDense"]
        self._preds = ctypes.POINTER(ctypes.c_float)()
        self._shape = ctypes.POINTER(c_bst_ulong)()
        self._dims = c_bst_ulong()
        self._handle = booster.handle
        self._args = (
            ctypes.byref(self._shape),
            ctypes.byref(self._dims),
            ctypes.byref(self._preds),
        )

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        n_rows, n_columns = rows.shape
        iface = b'{"data":[%d,true],"shape":[%d,%d],"strides":null,"typestr":"%s","version":3}' % (
            rows.ctypes.data,
            n_rows,
            n_columns,
            rows.dtype.str.encode(),
        )
        if self._fn(self._handle, iface, self.CONFIG, None, *self._args) != 0:
            raise PredictionError(self._lib.XGBGetLastError().decode("utf-8", "replace"))
        shape = self._shape
        if self._dims.value == 1:
            out_shape: tuple[int, ...] = (shape[0],)
        else:
            out_shape = tuple(shape[i] for i in range(self._dims.value))
        # The result lives in a buffer the booster reuses: copy it out before the next call.
        data = ctypes.string_at(self._preds, 4 * math.prod(out_shape))
        return np.frombuffer(data, dtype=np.float32).reshape(out_shape)


class Model:
    """A loaded booster and what the server needs to know about it."""

    def __init__(self, data: bytes, source: str = "model", nthread: int = 1) -> None:
        try:
            self.info: ModelInfo = inspect_model_bytes(data)
        except UnsafeArtifactError as exc:
            raise ModelLoadError(f"{source}: {exc}") from exc
        # One thread per worker process: requests are small, and OpenMP threads spinning on a
        # busy machine cost far more than they save (measured in bench/README.md).
        booster = xgboost.Booster(params={"nthread": nthread})
        try:
            booster.load_model(bytearray(data))
        except xgboost.core.XGBoostError as exc:
            raise ModelLoadError(f"{source}: xgboost cannot load the model: {exc}") from exc
        self.booster = booster
        self.num_feature = int(booster.num_features())
        if self.num_feature != self.info.num_feature:
            raise ModelLoadError(
                f"{source}: the model says {self.info.num_feature} features, "
                f"xgboost reads {self.num_feature}"
            )
        self._dense = self._checked_fast_path()

    def _checked_fast_path(self) -> _DensePredict | None:
        """The direct C path if it scores exactly like `inplace_predict`, else None."""
        rng = np.random.default_rng(0)
        rows = max(1, min(16, PROBE_CELLS // max(1, self.num_feature)))
        probe = rng.normal(size=(rows, self.num_feature)) * 100
        probe[rng.random(probe.shape) < 0.2] = np.nan
        try:
            fast = _DensePredict(self.booster)
            if np.array_equal(fast(probe), self.booster.inplace_predict(probe), equal_nan=True):
                return fast
            log.warning("direct prediction differs from inplace_predict; using inplace_predict")
        except (AttributeError, OSError, PredictionError, ImportError) as exc:
            log.warning("direct prediction unavailable (%s); using inplace_predict", exc)
        return None

    def predict(self, rows: np.ndarray | scipy.sparse.csr_matrix) -> np.ndarray:
        """Scores for a dense (C-contiguous float) or CSR matrix of rows."""
        if self._dense is not None and isinstance(rows, np.ndarray):
            if not rows.flags.c_contiguous or rows.dtype not in (np.float32, np.float64):
                rows = np.ascontiguousarray(rows, dtype=np.float64)  # the C call reads raw rows
            return self._dense(rows)
        try:
            return np.asarray(self.booster.inplace_predict(rows, validate_features=False))
        except xgboost.core.XGBoostError as exc:
            raise PredictionError(str(exc)) from exc


def load_model(path: Path, nthread: int = 1) -> Model:
    """Read, check and load the model behind `path`; ModelLoadError says what is wrong."""
    path = Path(path)
    try:
        model_file = _model_file(path)
        with open(model_file, "rb") as f:
            is_tar = f.read(2) == GZIP_MAGIC
        guard.inspect_file(model_file, tar=is_tar, check=False)
        data = read_model_bytes(model_file)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    except UnsafeArtifactError as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc
    return Model(data, source=str(path), nthread=nthread)
