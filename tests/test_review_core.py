"""Core review: regression tests for bugs found in the math, optimizer, workspace, BLAS and
file code, and the fast-path cases tests/test_fastpath.py did not reach (remainder batches,
depth 1 and 4, layers past the BLAS threshold, the non-canonical output/loss pairs)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import gpumlp as gm
from gpumlp import _blas
from gpumlp.network import MAX_WORKSPACES
from gpumlp.ops import NumpyOps, Ops
from gpumlp.optimizers import SGD, Adam

REF = gm.get_backend("numpy", fast=False)


def _targets(rng, n, k, loss, output):
    if loss == "cross_entropy":
        return rng.integers(0, k, n)
    if loss == "binary_cross_entropy":
        return (rng.random((n, k)) > 0.5).astype(float)
    return rng.random((n, k)) if output in ("softmax", "sigmoid") else rng.standard_normal((n, k))


def _max_rel_diff(a: gm.MLP, b: gm.MLP) -> float:
    worst = 0.0
    for pa, pb in zip(a.get_weights(), b.get_weights()):
        for x, ref in zip(pa, pb):
            worst = max(worst, float(np.max(np.abs(x - ref))) / max(float(np.max(np.abs(ref))), 1e-12))
    return worst


OPTIMIZERS = {
    "sgd": lambda: SGD(lr=0.05),
    "momentum": lambda: SGD(lr=0.05, momentum=0.9),
    "nesterov": lambda: SGD(lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda: Adam(lr=0.003),
}
GAP_CASES = [
    # (sizes, hidden, output, loss, l2): 53 samples in batches of 16 leave a remainder batch of 5
    ([5, 3], "relu", "softmax", "cross_entropy", 0.01),  # depth 1
    ([5, 7, 6, 7, 3], "sigmoid", "sigmoid", "cross_entropy", 0.0),  # depth 4, non-canonical pair
    ([5, 7, 3], "tanh", "softmax", "binary_cross_entropy", 0.01),
    ([5, 7, 3], "identity", "softmax", "mse", 0.01),
    ([5, 200, 200, 3], "relu", "identity", "mse", 0.01),  # 200x200: W updated inside one BLAS GEMM
    ([5, 200, 200, 3], "tanh", "sigmoid", "mse", 0.0),
]


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("case", range(len(GAP_CASES)))
def test_fast_path_matches_reference_in_float64_on_the_cases_test_fastpath_leaves_out(case, opt):
    sizes, hidden, output, loss, l2 = GAP_CASES[case]
    rng = np.random.default_rng(case)
    X = rng.standard_normal((53, sizes[0]))
    Y = _targets(rng, 53, sizes[-1], loss, output)
    kw = dict(loss=loss, l2=l2, epochs=3, batch_size=16, seed=2)
    ref = gm.MLP(sizes, hidden, output, dtype="float64", backend=REF, seed=1)
    fast = gm.MLP(sizes, hidden, output, dtype="float64", backend="numpy", seed=1)
    o_ref, o_fast = OPTIMIZERS[opt](), OPTIMIZERS[opt]()
    h_ref, h_fast = ref.fit(X, Y, optimizer=o_ref, **kw), fast.fit(X, Y, optimizer=o_fast, **kw)
    assert o_ref.t == o_fast.t == 12
    assert _max_rel_diff(fast, ref) < 1e-10
    np.testing.assert_allclose(h_fast["loss"], h_ref["loss"], rtol=1e-12)
    for k, arrays in o_ref.state.items():
        for a, b in zip(o_fast.state[k], arrays):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-15)


# ----- optimizers -------------------------------------------------------------------------------
class _ClippedSGD(SGD):
    """Plain SGD whose own update clips the gradient: the fast path must call it."""

    def update(self, i, p, g, rows=None):
        super().update(i, p, np.clip(g, -0.01, 0.01), rows)


def test_an_sgd_subclass_with_its_own_update_is_not_bypassed_on_the_fast_path():
    # Bug: SGD.prescale (−η) was inherited, so the fused path applied −η∇E itself and never
    # called the subclass's update: NumPy and the reference trained different models.
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 5)), rng.integers(0, 3, 40)
    models = [gm.MLP([5, 8, 3], dtype="float64", backend=be, seed=0) for be in ("numpy", REF)]
    for m in models:
        m.fit(X, y, optimizer=_ClippedSGD(lr=1.0), epochs=1, batch_size=40, shuffle=False)
    assert _max_rel_diff(*models) < 1e-12
    assert SGD(lr=0.1).prescale == -0.1 and _ClippedSGD(lr=0.1).prescale is None


def test_an_adam_reused_on_another_model_starts_its_step_count_again():
    # Bug: bind() gave the new parameters zero moments but kept t, so Adam's bias correction
    # was off and the first hundreds of steps were several times too large.
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 5)), rng.integers(0, 3, 64)
    opt = Adam(lr=0.01)
    gm.MLP([5, 8, 3], seed=0, backend="numpy").fit(X, y, optimizer=opt, epochs=5, batch_size=8)
    reused, fresh = (gm.MLP([5, 16, 3], seed=1, backend="numpy") for _ in range(2))
    reused.fit(X, y, optimizer=opt, epochs=1, batch_size=8, shuffle=False)
    fresh.fit(X, y, optimizer=Adam(lr=0.01), epochs=1, batch_size=8, shuffle=False)
    assert opt.t == 8
    assert _max_rel_diff(reused, fresh) == 0.0


def test_optimizer_state_follows_the_model_dtype_and_backend():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((32, 5)), rng.integers(0, 3, 32)
    opt = SGD(lr=0.1, momentum=0.9)
    gm.MLP([5, 8, 3], dtype="float64", seed=0, backend="numpy").fit(X, y, optimizer=opt, epochs=1)
    gm.MLP([5, 8, 3], dtype="float32", seed=0, backend="numpy").fit(X, y, optimizer=opt, epochs=1)
    assert all(v.dtype == np.float32 for v in opt.state["velocity"])  # was float64 from the first model
    adam, model = Adam(lr=0.01), gm.MLP([5, 8, 3], seed=0, backend="numpy")
    model.fit(X, y, optimizer=adam, epochs=2, batch_size=8)
    model.to("array_api_strict").fit(X, y, optimizer=adam, epochs=1, batch_size=8)
    assert adam.t == 4  # new (zero) moments on the new backend: a new count


def test_load_state_dict_keeps_the_step_count_it_loads():
    model = gm.MLP([5, 8, 3], seed=0, backend="numpy")
    sd = {"name": "adam", "t": 7, "state": {"m": [np.ones(p.shape) for p in model.params],
                                            "v": [np.ones(p.shape) for p in model.params]}}
    opt = Adam()
    opt.load_state_dict(sd, model.params, model.backend)
    assert opt.t == 7 and float(opt.state["m"][0].sum()) == model.params[0].size


# ----- activations, workspaces, user data ---------------------------------------------------------
def test_reference_relu_keeps_nan_like_the_fast_paths():
    # Bug: the reference relu (where(A > 0, A, 0)) turned NaN into 0, numpy.maximum and the
    # CUDA kernel keep it: the reference/array_api_strict path could hide a diverging layer.
    X = np.array([[np.nan, 1.0], [-1.0, 2.0]])
    W, b = np.eye(2), np.zeros(2)
    ref = Ops(np).affine_activate(X, W, b, "relu")
    fast = NumpyOps(np).affine_activate(X, W, b, "relu")
    np.testing.assert_array_equal(ref, fast)
    assert np.isnan(ref[0, 0]) and ref[1, 0] == 0.0


def test_fits_on_ever_new_batch_sizes_keep_a_bounded_number_of_workspaces():
    # Bug: one full set of buffers was kept per batch size ever seen (fit(batch_size=None) on
    # chunks of varying size kept every chunk's activations alive: 650 MiB after 20 chunks).
    rng = np.random.default_rng(0)
    model = gm.MLP([4, 6, 3], seed=0, backend="numpy")
    for n in range(10, 22):
        model.fit(rng.standard_normal((n, 4)), rng.integers(0, 3, n), epochs=1, batch_size=None)
        assert n in model._workspaces
    assert len(model._workspaces) == MAX_WORKSPACES


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fit_never_writes_to_the_users_arrays(shuffle, optimizer):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6)).astype(np.float32)  # float32, C-contiguous: used without a copy
    Y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 40)]
    X0, Y0 = X.copy(), Y.copy()
    model = gm.MLP([6, 150, 120, 3], "relu", dtype="float32", seed=0, backend="numpy")
    for bs in (None, 16):
        model.fit(X, Y, epochs=2, batch_size=bs, shuffle=shuffle, optimizer=optimizer, validation_data=(X, Y))
    model.gradients(X, Y), model.loss(X, Y), model.predict(X)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(Y, Y0)
    for ws in model._workspaces.values():
        assert not any(np.shares_memory(a, X) or np.shares_memory(a, Y) for a in ws.Z + [ws.T])


# ----- BLAS and files ---------------------------------------------------------------------------
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


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_saved_models_get_the_usual_file_mode(tmp_path):
    # Bug: the atomic write's mkstemp left every model and checkpoint file 0o600.
    old = os.umask(0o022)
    try:
        gm.MLP([2, 3, 2], backend="numpy").save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "m.npz").st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
