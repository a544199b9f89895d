"""NumbaOps: NumpyOps with fused numba kernels where they measured faster; numba loaded only when a fit pays for it.

The optional ``fast`` extra (``pip install -e ".[fast]"`` in a checkout, or ``pip install numba``)
installs numba. The NumPy backend then runs :class:`NumbaOps`; ``GPUMLP_JIT=0`` keeps plain
:class:`~gpumlp.backends.numpy_ops.NumpyOps`.
Importing gpumlp never imports numba: that costs 1–2 s per process (the import, then LLVM's start
and the on-disk cache), which a short fit such as the quick start would not win back. Until the
kernels are loaded (:func:`load_kernels`, which ``fit`` calls when the fit is long enough, or at
once with ``GPUMLP_JIT=1``) every NumbaOps method is NumpyOps' own.

Kernels (gpumlp.backends._numba_kernels), each one pass instead of several NumPy calls: bias +
relu/identity/softmax after the GEMM, every activation backward, the output delta, the loss sum (in
float64), the batch gather, small column sums, and the SGD / momentum / Nesterov / Adam updates.
Left to NumPy because its versions are as fast or faster: the GEMMs, tanh and sigmoid forward
(NumPy's float32 tanh is SIMD, numba calls scalar libm), the finite check (memory-bound), and column
sums over 2^17 elements (a BLAS GEMM on every core). Each method falls back to NumpyOps for arrays
the kernels do not take (not C-contiguous, mixed or non-float dtypes, unknown activation or loss).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
from types import ModuleType
from typing import Any

import numpy as np

from ..install_hint import install_hint
from . import _blas
from .numpy_ops import NumpyOps

ENV_JIT = "GPUMLP_JIT"
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_kernels: list[ModuleType] = []  # the loaded kernels module (one entry), shared by every NumbaOps
_failure: list[str] = []  # why loading failed, once it has


def jit_setting() -> str:
    """``GPUMLP_JIT`` read as "0" (off), "1" (load numba at the first fit) or "auto" (the default).

    Raises
    ------
    ValueError
        For any other value of the environment variable.
    """
    raw = os.environ.get(ENV_JIT, "").strip().lower()
    for mode, spellings in (
        ("auto", ("", "auto")),
        ("0", ("0", "off", "false", "no")),
        ("1", ("1", "on", "true", "yes")),
    ):
        if raw in spellings:
            return mode
    raise ValueError(f"environment variable {ENV_JIT}={raw!r} must be 0, 1 or auto")


@functools.cache
def numba_version() -> str | None:
    """The installed numba's version without importing it, or None when it is not installed."""
    try:
        if importlib.util.find_spec("numba") is None:
            return None
        return importlib.metadata.version("numba")
    except (ImportError, ValueError, importlib.metadata.PackageNotFoundError):
        return None


def jit_enabled() -> bool:
    """True when numba is installed and ``GPUMLP_JIT`` is not 0 (nothing is imported)."""
    return jit_setting() != "0" and numba_version() is not None and not _failure


def load_kernels() -> ModuleType | None:
    """Import numba and the kernels once (compiled kernels come from numba's on-disk cache).

    Returns
    -------
    module or None
        gpumlp.backends._numba_kernels, or None when the JIT is off, not installed, or failed to
        load (then :func:`jit_info` says why, and everything runs on NumpyOps' paths).
    """
    if _kernels:
        return _kernels[0]
    if not jit_enabled():
        return None
    try:
        from . import _numba_kernels
    except Exception as exc:  # a broken numba/llvmlite, or no writable cache directory
        _failure.append(f"{type(exc).__name__}: {exc}")
        return None
    _kernels.append(_numba_kernels)
    return _numba_kernels


def kernels_loaded() -> bool:
    """True once :func:`load_kernels` has succeeded in this process."""
    return bool(_kernels)


def jit_info() -> str:
    """One line for :func:`gpumlp.backend_info`: whether the numba kernels run, and why (not)."""
    version = numba_version()
    if jit_setting() == "0":
        return f"off: {ENV_JIT}=0" + ("" if version is None else f" (numba {version} installed)")
    if version is None:
        return f"off: numba is not installed ({install_hint('numba', 'fast')})"
    if _failure:
        return f"off: numba {version} failed to load ({_failure[0]})"
    if _kernels:
        return f"numba {version}, loaded"
    return f"numba {version}, loaded by the first fit long enough to pay back its start-up ({ENV_JIT}=1: any fit)"


def _fits(*arrays: Any) -> bool:
    d = arrays[0].dtype
    return d in _FLOATS and all(isinstance(a, np.ndarray) and a.dtype == d and a.flags.c_contiguous for a in arrays)


class NumbaOps(NumpyOps):
    """NumpyOps with numba kernels (serial, fused, in NumpyOps' order of operations) once loaded."""

    forward_acts = ("relu", "identity", "softmax")  # tanh and sigmoid forward stay NumPy's (SIMD)
    sum_rows_max = 1 << 17  # above this, NumpyOps' 1ᵀD GEMM on every core

    def affine_activate(self, X: Any, W: Any, b: Any, activation: str, out: Any = None) -> Any:
        k = _kernels[0] if _kernels else None
        if k is None or out is None or activation not in self.forward_acts or not _fits(out, b):
            return super().affine_activate(X, W, b, activation, out)
        act = k.ACT[activation]
        if out.size >= self.gemm_update_min_size and _blas.accepts(out, X, W):
            self.xp.copyto(out, b)  # the bias rides in the GEMM (β = 1), as in NumpyOps; then g alone
            _blas.gemm_into(out, X, W, 1.0, 1.0)
            k.bias_act(out, out[0], False, act)
        else:
            self.xp.matmul(X, W, out=out)
            k.bias_act(out, b, True, act)
        return out

    def backprop_activation(self, activation: str, Z: Any, D: Any, consume_z: bool = False) -> Any:
        k = _kernels[0] if _kernels else None
        if k is None or activation not in k.ACT or D.ndim != 2 or not _fits(D, Z):
            return super().backprop_activation(activation, Z, D, consume_z)
        if activation != "identity":
            k.backprop(D, Z, k.ACT[activation])
        return D

    def output_delta(self, activation: str, loss: str, Y: Any, T: Any, scale: float, out: Any = None) -> Any:
        k = _kernels[0] if _kernels else None
        if (
            k is None
            or activation not in k.ACT
            or loss not in k.LOSS
            or Y.ndim != 2
            or T.shape != Y.shape
            or not _fits(Y, T, *(() if out is None else (out,)))
        ):
            return super().output_delta(activation, loss, Y, T, scale, out)
        if out is None:
            out = np.empty_like(Y)
        k.delta_loss(out, Y, T, Y.dtype.type(scale), k.ACT[activation], k.LOSS[loss], True)
        return out

    def loss_sum(self, loss: str, Y: Any, T: Any) -> Any:
        k = _kernels[0] if _kernels else None
        if k is None or loss not in k.LOSS or Y.ndim != 2 or T.shape != Y.shape or not _fits(Y, T):
            return super().loss_sum(loss, Y, T)
        return np.float64(k.delta_loss(Y, Y, T, Y.dtype.type(1.0), 0, k.LOSS[loss], False))  # Y: never written

    def sum_rows(self, D: Any, out: Any = None) -> Any:
        k = _kernels[0] if _kernels else None
        if k is None or out is None or D.ndim != 2 or D.size > self.sum_rows_max or not _fits(D, out):
            return super().sum_rows(D, out)
        k.sum_rows(D, out)
        return out

    def take_rows(self, A: Any, idx: Any, out: Any = None) -> Any:
        k = _kernels[0] if _kernels else None
        if (
            k is None
            or A.ndim != 2
            or out is None
            or not _fits(A, out)
            or not isinstance(idx, np.ndarray)
            or idx.dtype != np.int64
            or idx.ndim != 1
        ):
            return super().take_rows(A, idx, out)
        k.take_rows(A, idx, out)
        return out

    def sgd_update(self, p: Any, g: Any, v: Any, lr: float, momentum: float, nesterov: bool) -> None:
        k = _kernels[0] if _kernels else None
        if k is None or not _fits(p, g, *(() if v is None else (v,))):
            return super().sgd_update(p, g, v, lr, momentum, nesterov)
        T = p.dtype.type
        pf = p.reshape(-1)
        mode = 0 if v is None else (2 if nesterov else 1)
        k.sgd(pf, g.reshape(-1), pf if v is None else v.reshape(-1), T(-lr), T(momentum), mode)

    def adam_update(self, p: Any, g: Any, m: Any, v: Any, lr_t: float, beta1: float, beta2: float, eps: float) -> None:
        k = _kernels[0] if _kernels else None
        if k is None or not _fits(p, g, m, v):
            return super().adam_update(p, g, m, v, lr_t, beta1, beta2, eps)
        T = p.dtype.type
        flat = (p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1))
        k.adam(*flat, T(-lr_t), T(beta1), T(1.0 - beta1), T(beta2), T(1.0 - beta2), T(eps))
