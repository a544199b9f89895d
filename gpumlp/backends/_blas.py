"""C ← β·C + α·op(A)·B in one call to the BLAS that NumPy itself uses (its ``?gemm`` with β).

``numpy.matmul`` has no β, so an SGD step written with it costs a pass over the gradient and
another over W after the GEMM; with β the update happens inside the GEMM that makes the
gradient, and no gradient array exists. The BLAS is the shared library NumPy loaded (found
in this process's memory map, Linux), so it brings no dependency and shares matmul's thread
pool. :func:`gemm_into` answers False, having done nothing, where this is not possible
(another OS, an unknown BLAS, arrays the call cannot take); callers then use matmul. Each
dtype's routine is checked against ``numpy.matmul`` once before first use.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
# Symbol names, most specific first: NumPy's wheels bundle OpenBLAS built with 64-bit
# integers and prefixed/suffixed symbols; other builds export plain CBLAS names.
_NAMES = ("scipy_cblas_{t}gemm64_", "cblas_{t}gemm64_", "scipy_cblas_{t}gemm", "cblas_{t}gemm")
_PREFIX = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}
_routines: dict[np.dtype, Any] = {}


def _numpy_blas_paths() -> list[str]:
    """Loaded shared libraries whose name says BLAS, NumPy's own (its wheels' numpy.libs) first;
    the private copies other packages bundle (SciPy's, scikit-learn's) are left out, since
    another BLAS would bring a second thread pool."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split(None, 5)[5].strip() for line in f if line.count(" ") >= 5 and ".so" in line}
    except OSError:
        return []
    others = ("scipy", "sklearn", "torch")
    blas = [
        p
        for p in paths
        if ("blas" in os.path.basename(p).lower() or "mkl_rt" in p) and not any(o in os.path.dirname(p) for o in others)
    ]
    return sorted(blas, key=lambda p: ("numpy" not in os.path.dirname(p), p))


def _bind(dtype: np.dtype) -> Any:
    """The checked ?gemm routine for ``dtype``, or None."""
    t = _PREFIX[dtype]
    scalar = ctypes.c_float if t == "s" else ctypes.c_double
    for path in _numpy_blas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _NAMES:
            fn = getattr(lib, name.format(t=t), None)
            if fn is None:
                continue
            i = ctypes.c_int64 if "64_" in name else ctypes.c_int
            fn.argtypes = [
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_int,
                i,
                i,
                i,
                scalar,
                ctypes.c_void_p,
                i,
                ctypes.c_void_p,
                i,
                scalar,
                ctypes.c_void_p,
                i,
            ]
            fn.restype = None
            if _agrees_with_matmul(fn, dtype):
                return fn
    return None


def _call(fn: Any, a: np.ndarray, b: np.ndarray, c: np.ndarray, alpha: float, beta: float, trans_a: bool) -> None:
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    fn(
        _ROW_MAJOR,
        _TRANS if trans_a else _NO_TRANS,
        _NO_TRANS,
        m,
        n,
        k,
        alpha,
        a.ctypes.data,
        a.shape[1],
        b.ctypes.data,
        b.shape[1],
        beta,
        c.ctypes.data,
        n,
    )


def _agrees_with_matmul(fn: Any, dtype: np.dtype) -> bool:
    """One call with aᵀ and one without, against numpy.matmul (small, odd shapes)."""
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(s).astype(dtype) for s in ((5, 3), (5, 4), (3, 4)))
    tol = 1e-4 if dtype == np.float32 else 1e-12
    got = c.copy()
    _call(fn, a, b, got, -2.0, 0.5, True)
    if not np.allclose(got, 0.5 * c - 2.0 * (a.T @ b), rtol=tol, atol=tol):
        return False
    a2 = np.ascontiguousarray(a.T)  # (3, 5) @ (5, 4)
    got = c.copy()
    _call(fn, a2, b, got, 1.0, 1.5, False)
    return bool(np.allclose(got, 1.5 * c + a2 @ b, rtol=tol, atol=tol))


def routine(dtype: Any) -> Any:
    """The checked ?gemm for ``dtype`` (float32 / float64), or None; looked up once."""
    dtype = np.dtype(dtype)
    if dtype not in _PREFIX:
        return None
    if dtype not in _routines:
        _routines[dtype] = _bind(dtype)
    return _routines[dtype]


def accepts(c: Any, a: Any, b: Any) -> bool:
    """True when :func:`gemm_into` can take these arrays: C-contiguous, aligned 2-D NumPy arrays
    of one float dtype whose BLAS routine was found, c not overlapping a or b (as NumPy asks
    before it calls BLAS; an overlapping c would be read while it is written)."""
    if not (type(c) is np.ndarray and type(a) is np.ndarray and type(b) is np.ndarray):
        return False
    fa, fb, fc = a.flags, b.flags, c.flags
    if not (
        c.dtype == a.dtype == b.dtype
        and c.ndim == a.ndim == b.ndim == 2
        and fc.writeable
        and fa.c_contiguous
        and fb.c_contiguous
        and fc.c_contiguous
        and fa.aligned
        and fb.aligned
        and fc.aligned
    ):
        return False
    if np.may_share_memory(c, a) or np.may_share_memory(c, b):
        return False
    return routine(c.dtype) is not None


def gemm_into(c: np.ndarray, a: np.ndarray, b: np.ndarray, alpha: float, beta: float, trans_a: bool = False) -> bool:
    """In place c ← β·c + α·op(a)·b, op(a) = aᵀ if ``trans_a``, in one BLAS call; False where
    that cannot be done (see :func:`accepts`; then nothing is changed). β = 0 ignores c's
    old contents, NaN included."""
    if not accepts(c, a, b):
        return False
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    if c.shape != (m, b.shape[1]) or k != b.shape[0]:
        raise ValueError(f"gemm_into: shapes {a.shape}{'ᵀ' if trans_a else ''} @ {b.shape} -> {c.shape} do not fit")
    if c.size and k:
        _call(routine(c.dtype), a, b, c, alpha, beta, trans_a)
    elif beta == 0.0:
        c[...] = 0
    elif beta != 1.0:
        c *= beta
    return True
