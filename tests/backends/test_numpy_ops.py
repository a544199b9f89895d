"""The NumPy fast path (NumpyOps + the fused backward/update step) against the Array-API reference.

Same seed, same data, same batches: the reference Ops (``get_backend("numpy", fast=False)``,
backward_into + optimizer.step) and NumpyOps (gpumlp.training.fused: updates fused into the
backward pass, dW in row blocks or, for plain SGD with η folded into the deltas, W updated
inside one BLAS GEMM; bias and bias gradient as BLAS calls) must end at the same weights.
No speed is asserted here; benchmarks/bench_train.py measures that. tests/training/test_fused.py
checks when fit takes the fused path and the cases this file leaves out.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpumlp as gm
from gpumlp.backends import Backend, _blas
from gpumlp.backends.numpy_ops import NumpyOps
from gpumlp.backends.ops import Ops
from gpumlp.optimizers import SGD, Adam


def _data(n=200, d=7, k=3, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = rng.integers(0, k, n)
    return X, y


class _NoBlasOps(NumpyOps):
    """NumpyOps without the one-call GEMM update: plain SGD goes through the gradient blocks."""

    def gemm_update(self, p, a, b, alpha, beta=1.0, trans_a=False):
        return False


class _OneCallOps(NumpyOps):
    """NumpyOps that takes its BLAS calls (update in the GEMM, bias in the GEMM, column sums
    as a GEMM) for arrays of any size."""

    gemm_update_min_size = 0


def _blocked_numpy(block_bytes: int, ops_class: type = NumpyOps) -> Backend:
    """NumPy with the fast Ops, weight gradients made in row blocks of at most block_bytes."""
    ops = ops_class(np)
    ops.update_block_bytes = block_bytes
    return Backend(np, ops)


def _assert_weights_close(a: gm.MLP, b: gm.MLP, rel: float = 1e-5) -> None:
    for (Wa, ba), (Wb, bb) in zip(a.get_weights(), b.get_weights()):
        for x, ref in ((Wa, Wb), (ba, bb)):
            scale = max(float(np.max(np.abs(ref))), 1e-12)
            assert float(np.max(np.abs(x - ref))) <= rel * scale


FAST_BACKENDS = {
    "numpy": lambda: "numpy",
    "numpy-blocked": lambda: _blocked_numpy(64),  # several row blocks per weight matrix
    "numpy-one-call": lambda: _blocked_numpy(64, _OneCallOps),  # plain SGD: W updated inside the GEMM
    "numpy-blocked-no-blas": lambda: _blocked_numpy(64, _NoBlasOps),
}

CASES = [
    # (sizes, hidden, output, loss, optimizer factory, l2)
    ([7, 9, 3], "relu", "softmax", "cross_entropy", lambda: SGD(lr=0.1), 0.0),
    ([7, 9, 3], "relu", "softmax", "cross_entropy", lambda: Adam(lr=0.01), 0.0),
    ([7, 6, 5, 3], "tanh", "softmax", "cross_entropy", lambda: SGD(lr=0.1, momentum=0.9, nesterov=True), 0.01),
    ([7, 8, 3], "sigmoid", "sigmoid", "binary_cross_entropy", lambda: SGD(lr=0.2), 0.001),
    ([7, 8, 8, 3], "relu", "identity", "mse", lambda: Adam(lr=0.005), 0.01),
    ([7, 5, 3], "identity", "softmax", "mse", lambda: SGD(lr=0.05, momentum=0.5), 0.0),
]


@pytest.mark.parametrize("fast", sorted(FAST_BACKENDS))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_fast_path_matches_reference_after_50_steps(case, fast):
    sizes, hidden, output, loss, make_opt, l2 = CASES[case]
    X, y = _data()
    Y = y if loss == "cross_entropy" else np.eye(3)[y]
    kw = dict(loss=loss, l2=l2, epochs=5, batch_size=20, seed=3)  # 10 steps/epoch: 50 steps
    ref = gm.MLP(sizes, hidden, output, dtype="float64", backend=gm.get_backend("numpy", fast=False), seed=0)
    fast_model = gm.MLP(sizes, hidden, output, dtype="float64", backend=FAST_BACKENDS[fast](), seed=0)
    assert type(ref.ops) is Ops and isinstance(fast_model.ops, NumpyOps)
    opt_ref, opt_fast = make_opt(), make_opt()
    h_ref = ref.fit(X, Y, optimizer=opt_ref, **kw)
    h_fast = fast_model.fit(X, Y, optimizer=opt_fast, **kw)
    assert opt_ref.t == opt_fast.t == 50
    _assert_weights_close(fast_model, ref)
    np.testing.assert_allclose(h_fast["loss"], h_ref["loss"], rtol=1e-6)
    for k, arrays in opt_ref.state.items():
        for a, b in zip(opt_fast.state[k], arrays):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12)


def test_weight_blocks_cover_every_row_once():
    ops = NumpyOps(np)
    ops.update_block_bytes = 3 * 8 * 10  # 3 rows of 10 float64
    blocks = ops.weight_blocks(11, 10, 8)
    rows = [r for s in blocks for r in range(s.start, s.stop)]
    assert rows == list(range(11)) and len(blocks) == 4
    assert ops.weight_blocks(3, 10, 8) == [None]  # fits in one block: the whole matrix
    assert Ops(np).weight_blocks(1000, 1000, 8) == [None]


class _Float64Guard:
    """A NumPy namespace that fails on any float64 array it returns or writes (for float32 runs)."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattr__(self, name):
        f = getattr(np, name)
        if not callable(f) or isinstance(f, type):
            return f

        def checked(*args, **kwargs):
            out = f(*args, **kwargs)
            self.calls += 1
            for a in (out, kwargs.get("out")):  # 0-d float64: the reported loss sum, float64 by design
                if getattr(a, "dtype", None) == np.float64 and getattr(a, "ndim", 1) > 0:
                    raise AssertionError(f"numpy.{name} made float64 in a float32 run")
            return out

        return checked


@pytest.mark.parametrize("ops_class", [NumpyOps, _NoBlasOps, _OneCallOps])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_float32_runs_stay_float32(optimizer, ops_class):
    X, y = _data(n=96)
    guard = _Float64Guard()
    model = gm.MLP([7, 9, 9, 3], dtype="float32", backend=Backend(np, ops_class(guard)), seed=0)
    opt = {"sgd": SGD(lr=0.1), "momentum": SGD(lr=0.1, momentum=0.9), "adam": Adam(lr=0.01)}[optimizer]
    model.fit(X.astype(np.float64), y, optimizer=opt, epochs=2, batch_size=32, l2=1e-3)
    assert guard.calls > 0
    arrays = [p for p in model.params]
    arrays += [a for v in opt.state.values() for a in v]
    for ws in model._workspaces.values():
        arrays += ws.Z + ws.D[1:] + [ws.T]
        arrays += ws.bias_grads
        for blocks in ws.update_plan or []:
            arrays += [buf for _, buf in blocks]
    assert arrays and all(a.dtype == np.float32 for a in arrays)
    assert all(isinstance(v, float) and np.isfinite(v) for v in model.history["loss"])


def test_gemm_update_is_one_blas_call_equal_to_matmul():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        if _blas.routine(dtype) is None:
            pytest.skip("NumPy's BLAS is not reachable here: the fast path uses matmul + add")
        Z, D, W = (rng.standard_normal(s).astype(dtype) for s in ((33, 17), (33, 9), (17, 9)))
        want = 0.99 * W - 0.1 * (Z.T @ D)
        assert _OneCallOps(np).gemm_update(W, Z, D, -0.1, 0.99, trans_a=True)
        np.testing.assert_allclose(W, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    before = W.copy()
    assert not _OneCallOps(np).gemm_update(W, Z[::2], D[::2], 1.0, 1.0, trans_a=True)  # strided: declined
    assert not _blas.gemm_into(W.astype(np.float32), Z, D, 1.0, 1.0, True)  # mixed dtypes: declined
    np.testing.assert_array_equal(W, before)
    assert not Ops(np).gemm_update(W, Z, D, 1.0)
