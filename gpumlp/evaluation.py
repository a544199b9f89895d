"""Evaluating many samples in chunks of rows, so the temporaries stay bounded whatever the number of samples.

:meth:`~gpumlp.network.MLP.forward`, :meth:`~gpumlp.network.MLP.predict` and
:meth:`~gpumlp.network.MLP.loss` run the forward pass over at most :data:`EVAL_CHUNK_ROWS` rows at a
time, and fewer where the widest layer's output of that many rows would exceed
:data:`EVAL_CHUNK_BYTES`; each chunk is moved to the model's backend on its own, so a float64 or
host input is never converted whole. The model's checks come first (the callers make them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .backends import backend_of, is_sparse
from .workspace import Workspace

if TYPE_CHECKING:
    from .network import MLP

EVAL_CHUNK_ROWS = 8192  # rows evaluated at a time, at most
EVAL_CHUNK_BYTES = 32 << 20  # and fewer where one layer's output of that many rows would exceed this


def row_chunks(model: MLP, n: int) -> list[tuple[int, int]]:
    """(start, stop) row ranges covering ``n`` samples in chunks sized for ``model``'s widest layer."""
    per_row = max(model.sizes) * np.dtype(model.dtype).itemsize
    rows = max(1, min(EVAL_CHUNK_ROWS, EVAL_CHUNK_BYTES // per_row))
    return [(start, min(start + rows, n)) for start in range(0, n, rows)]


def _row_sliceable(X: Any) -> Any:
    """X itself, or a sparse X in CSR form (COO cannot be sliced by rows; CSC can, but slowly)."""
    return X.tocsr() if is_sparse(X) and X.format != "csr" else X


def _forward_rows(model: MLP, X: Any, start: int, stop: int) -> Any:
    """Ŷ of rows start … stop - 1 of X (any array kind), on the model's backend."""
    return model.forward_into(Workspace.unbuffered(model, model.to_device(X[start:stop, ...])))


def forward(model: MLP, X: Any) -> Any:
    """Ŷ (n, n_outputs) of checked inputs X (n, n_features), on the model's backend."""
    X = _row_sliceable(X)
    chunks = row_chunks(model, X.shape[0])
    if len(chunks) == 1:
        return _forward_rows(model, X, 0, X.shape[0])
    out = model.ops.alloc((X.shape[0], model.n_outputs), model.xp_dtype)
    for start, stop in chunks:
        out[start:stop, ...] = _forward_rows(model, X, start, stop)
    return out


def predict(model: MLP, X: Any) -> Any:
    """Ŷ of checked inputs X as the same kind of array as X; a NumPy result is filled on the host
    chunk by chunk, so no device array of the full output is made for it."""
    owner, X = backend_of(X), _row_sliceable(X)
    if owner is not None and owner.name == model.backend.name and owner.name != "numpy":
        return forward(model, X)
    out = np.empty((X.shape[0], model.n_outputs), dtype=model.dtype)
    for start, stop in row_chunks(model, X.shape[0]):
        out[start:stop] = model.backend.to_numpy(_forward_rows(model, X, start, stop))
    return out if owner is None or owner.name == "numpy" else owner.asarray(out)


def loss_sum(model: MLP, X: Any, T: np.ndarray, loss: str) -> float:
    """Σ_n ℓ(Ŷ_n, T_n) over checked inputs X and host targets T (n, n_outputs), summed in float64."""
    total, X = 0.0, _row_sliceable(X)
    for start, stop in row_chunks(model, X.shape[0]):
        Yhat = _forward_rows(model, X, start, stop)
        total += float(model.ops.loss_sum(loss, Yhat, model.to_device(T[start:stop])))
    return total
