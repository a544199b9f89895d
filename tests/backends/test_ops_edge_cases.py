"""Ops edge cases found in review: NaN through the reference relu, BLAS GEMM refusing unsafe arrays."""

from __future__ import annotations

import numpy as np
import pytest

from gpumlp.backends import _blas
from gpumlp.backends.numpy_ops import NumpyOps
from gpumlp.backends.ops import Ops


def test_reference_relu_keeps_nan_like_the_fast_paths():
    # Bug: the reference relu (where(A > 0, A, 0)) turned NaN into 0, numpy.maximum and the
    # CUDA kernel keep it: the reference/array_api_strict path could hide a diverging layer.
    X = np.array([[np.nan, 1.0], [-1.0, 2.0]])
    W, b = np.eye(2), np.zeros(2)
    ref = Ops(np).affine_activate(X, W, b, "relu")
    fast = NumpyOps(np).affine_activate(X, W, b, "relu")
    np.testing.assert_array_equal(ref, fast)
    assert np.isnan(ref[0, 0]) and ref[1, 0] == 0.0


def test_blas_gemm_declines_overlapping_and_unaligned_arrays():
    # Bug: c overlapping a was accepted and gave a wrong product silently.
    if _blas.routine(np.float64) is None:
        pytest.skip("NumPy's BLAS is not reachable here")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((64, 64)), rng.standard_normal((64, 64))
    before = a.copy()
    assert not _blas.gemm_into(a, a, b, 1.0, 0.0)
    np.testing.assert_array_equal(a, before)
    buf = np.zeros(64 * 64 * 8 + 1, np.uint8)
    c = np.ndarray((64, 64), np.float64, buffer=buf, offset=1)
    assert c.flags.c_contiguous and not c.flags.aligned
    assert not _blas.gemm_into(c, a, b, 1.0, 0.0)
    assert _blas.gemm_into(np.zeros((64, 64)), a, b, 1.0, 0.0)
