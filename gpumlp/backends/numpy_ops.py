"""NumpyOps: the CPU fast path, GEMMs that accumulate through NumPy's own BLAS (:mod:`._blas`).

On top of :class:`~gpumlp.backends.inplace_ops.InplaceOps`, a GEMM with β makes the bias ride
in the forward GEMM, the bias gradient a (1, B)·(B, n) GEMM, and a plain SGD step happen inside
the GEMM that makes its gradient (:meth:`NumpyOps.gemm_update`). Where the update cannot be in
the GEMM (momentum, Adam), :meth:`NumpyOps.weight_blocks` cuts a weight gradient into row
blocks that are made and applied while still in cache. Both serve fit's fused backward/update
step (``fused_update``), which only this Ops offers.
"""

from __future__ import annotations

from typing import Any

from . import _blas
from .inplace_ops import InplaceOps, activate_in_place


class NumpyOps(InplaceOps):
    """InplaceOps plus BLAS calls with β on NumPy arrays, and the row-block fused update."""

    fused_update = True  # fit fuses each optimizer step into the backward pass (gpumlp.training.fused)
    # Where the update is not inside the GEMM (momentum, Adam), a weight gradient is made in
    # row blocks of at most this many bytes, in one reused buffer, each applied while it is
    # still in cache: the scratch stays small however wide the layer.
    update_block_bytes = 4 << 20
    # Below this many elements a ctypes BLAS call (gemm_update, the bias in the GEMM, the
    # column sums) costs more than the NumPy calls it replaces.
    gemm_update_min_size = 1 << 14

    def __init__(self, xp: Any) -> None:
        super().__init__(xp)
        self._ones: dict[tuple[int, Any], Any] = {}  # a row of ones per (length, dtype): Σ_rows as a GEMM

    def affine_activate(self, X: Any, W: Any, b: Any, activation: str, out: Any = None) -> Any:
        if out is None or out.size < self.gemm_update_min_size or not _blas.accepts(out, X, W):
            return super().affine_activate(X, W, b, activation, out)
        self.xp.copyto(out, b)  # the bias rides in the GEMM: out ← out + X W (β = 1)
        _blas.gemm_into(out, X, W, 1.0, 1.0)
        activate_in_place(self.xp, activation, out)
        return out

    def sum_rows(self, D: Any, out: Any = None) -> Any:
        if (
            out is not None
            and D.size >= self.gemm_update_min_size
            and out.flags.c_contiguous
            and _blas.accepts(out.reshape(1, -1), D, D)
        ):
            key = (D.shape[0], D.dtype)
            ones = self._ones.get(key)
            if ones is None:
                ones = self._ones[key] = self.xp.ones((1, D.shape[0]), dtype=D.dtype)
            _blas.gemm_into(out.reshape(1, -1), ones, D, 1.0, 0.0)  # 1ᵀD, a (1, B)·(B, n) GEMM: both cores read D
            return out
        return super().sum_rows(D, out)

    def take_rows(self, A: Any, idx: Any, out: Any = None) -> Any:
        # mode="clip" (idx is always in range): the default mode copies through a temporary
        return self.xp.take(A, idx, axis=0, out=out, mode="clip")

    def gemm_update(self, p: Any, a: Any, b: Any, alpha: float, beta: float = 1.0, trans_a: bool = False) -> bool:
        if p.size < self.gemm_update_min_size:
            return False
        return _blas.gemm_into(p, a, b, alpha, beta, trans_a)  # NumPy's own BLAS ?gemm, with β

    def weight_blocks(self, n_in: int, n_out: int, itemsize: int) -> list[Any]:
        rows = max(1, self.update_block_bytes // (itemsize * n_out))
        if rows >= n_in:
            return [None]
        return [slice(r, min(r + rows, n_in)) for r in range(0, n_in, rows)]
