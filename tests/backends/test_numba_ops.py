"""NumbaOps (numba kernels) against NumpyOps, and the plain NumPy path when numba is off or missing.

The kernel tests need numba (the ``fast`` extra) and skip cleanly without it; the plain-path tests
run everywhere, each in a fresh interpreter (the backend reads GPUMLP_JIT once per process).
Tolerances: bitwise where the operations are NumpyOps' own in the same order; a few ULPs where
tanh, exp or log are involved (NumPy's SIMD float32 versions round differently from libm).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import gpumlp as gm
from gpumlp.backends import Backend, NumpyOps, numba_ops
from gpumlp.backends.inplace_ops import activate_in_place
from gpumlp.backends.ops import Ops

DTYPES = ["float32", "float64"]
TOL = {"float32": {"rtol": 2e-6, "atol": 2e-7}, "float64": {"rtol": 1e-14, "atol": 1e-15}}
ACTS = ["identity", "relu", "sigmoid", "tanh", "softmax"]
LOSSES = ["mse", "binary_cross_entropy", "cross_entropy"]
REF = NumpyOps(np)


@pytest.fixture(scope="module")
def ops():
    pytest.importorskip("numba")
    if numba_ops.load_kernels() is None:
        pytest.skip(f"numba kernels unavailable: {numba_ops.jit_info()}")
    yield numba_ops.NumbaOps(np)
    numba_ops._kernels.clear()  # later modules see the process as it starts: numba's kernels not loaded


def close(a, b, dtype, scale=1.0):
    t = TOL[dtype]
    np.testing.assert_allclose(a, b, rtol=t["rtol"] * scale, atol=t["atol"] * scale)


def activated(rng, shape, dtype, act):
    A = rng.standard_normal(shape).astype(dtype)
    activate_in_place(np, act, A)
    return A


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 10), (128, 256)])  # the second takes the bias-in-GEMM path
@pytest.mark.parametrize("act", ACTS)
def test_affine_activate(ops, dtype, shape, act):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((shape[0], 20)).astype(dtype)
    W = rng.standard_normal((20, shape[1])).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    got = ops.affine_activate(X, W, b, act, out=np.empty(shape, dtype))
    ref = REF.affine_activate(X, W, b, act, out=np.empty(shape, dtype))
    assert got.dtype == np.dtype(dtype)
    close(got, ref, dtype, scale=8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_backprop_activation(ops, dtype, act):
    rng = np.random.default_rng(2)
    Z = activated(rng, (9, 13), dtype, act)
    D = rng.standard_normal((9, 13)).astype(dtype)
    Zc = Z.copy()
    got = ops.backprop_activation(act, Zc, D.copy())
    ref = REF.backprop_activation(act, Z.copy(), D.copy())
    np.testing.assert_array_equal(Zc, Z)  # Z is left as it is
    if act == "softmax":
        close(got, ref, dtype, scale=8)
    else:
        np.testing.assert_array_equal(got, ref)  # the same operations in the same order: bitwise


def test_relu_backward_keeps_nan(ops):
    D = np.array([[np.nan, 1.0, 2.0]], np.float32)
    Z = np.array([[0.0, 0.0, 3.0]], np.float32)
    got = ops.backprop_activation("relu", Z, D.copy())
    assert np.isnan(got[0, 0]) and got[0, 1] == 0.0 and got[0, 2] == 2.0


def targets(rng, loss, shape, dtype):
    if loss == "cross_entropy":
        T = np.zeros(shape, dtype)
        T[np.arange(shape[0]), rng.integers(0, shape[1], shape[0])] = 1.0
        return T
    if loss == "binary_cross_entropy":
        return rng.uniform(0, 1, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ACTS)
def test_output_delta_and_loss_sum(ops, dtype, act, loss):
    rng = np.random.default_rng(3)
    Y = activated(rng, (16, 5), dtype, act)
    if act not in ("sigmoid", "softmax") and loss != "mse":
        Y = np.clip(np.abs(Y), 0.01, 0.99).astype(dtype)  # a probability for the logs
    T = targets(rng, loss, Y.shape, dtype)
    got = ops.output_delta(act, loss, Y, T, 1 / 16, out=np.empty_like(Y))
    close(got, REF.output_delta(act, loss, Y, T, 1 / 16, out=np.empty_like(Y)), dtype, scale=16)
    # the sum against float64 math on the same inputs (ours accumulates in float64)
    exact = float(Ops(np).loss_sum(loss, Y.astype(np.float64), T.astype(np.float64)))
    total = ops.loss_sum(loss, Y, T)
    assert isinstance(total, np.float64)
    assert total == pytest.approx(exact, rel=(1e-6 if dtype == "float32" else 1e-13))


@pytest.mark.parametrize("dtype", DTYPES)
def test_take_rows_and_sum_rows(ops, dtype):
    rng = np.random.default_rng(4)
    A = rng.standard_normal((30, 6)).astype(dtype)
    idx = rng.permutation(30)[:11]
    got = ops.take_rows(A, idx, out=np.empty((11, 6), dtype))
    np.testing.assert_array_equal(got, A[idx])
    D = rng.standard_normal((33, 17)).astype(dtype)
    np.testing.assert_array_equal(ops.sum_rows(D, out=np.empty(17, dtype)), D.sum(axis=0))  # row after row


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["sgd", "momentum", "nesterov", "adam"])
def test_updates_are_bitwise_numpyops(ops, dtype, mode):
    rng = np.random.default_rng(5)
    p, g, s1, s2 = (rng.standard_normal((6, 7)).astype(dtype) for _ in range(4))
    s2 = np.abs(s2)
    ref, got = [a.copy() for a in (p, g, s1, s2)], [a.copy() for a in (p, g, s1, s2)]
    if mode == "adam":
        REF.adam_update(*ref, 0.0123, 0.9, 0.999, 1e-8)
        ops.adam_update(*got, 0.0123, 0.9, 0.999, 1e-8)
        checked = (0, 2, 3)
    else:
        v = None if mode == "sgd" else 2
        REF.sgd_update(ref[0], ref[1], None if v is None else ref[v], 0.05, 0.9, mode == "nesterov")
        ops.sgd_update(got[0], got[1], None if v is None else got[v], 0.05, 0.9, mode == "nesterov")
        checked = (0,) if v is None else (0, 2)
    for i in checked:
        np.testing.assert_array_equal(got[i], ref[i])


def test_arrays_the_kernels_do_not_take_go_to_numpyops(ops):
    rng = np.random.default_rng(6)
    D = rng.standard_normal((8, 10))[:, ::2]  # not C-contiguous
    Z = np.abs(rng.standard_normal((8, 5)))
    np.testing.assert_array_equal(ops.backprop_activation("relu", Z, D.copy()), D * (Z > 0))
    Y32, T64 = np.full((2, 3), 0.5, np.float32), np.full((2, 3), 0.25)  # mixed dtypes
    assert float(ops.loss_sum("mse", Y32, T64)) == pytest.approx(6 * 0.5 * 0.0625)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "opt", [{"optimizer": "sgd", "lr": 0.1}, {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}, {"optimizer": "adam"}]
)
@pytest.mark.parametrize("clip", [None, 1.0])
def test_fit_with_numbaops_equals_fit_with_numpyops(ops, dtype, opt, clip):
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((300, 5)), rng.integers(0, 4, 300)
    models = []
    for backend in (Backend(np, NumpyOps(np)), Backend(np, ops)):
        m = gm.MLP([5, 300, 120, 4], "relu", "softmax", dtype=dtype, backend=backend, seed=2)
        m.fit(X, Y, epochs=2, batch_size=64, seed=5, l2=1e-3, clip_norm=clip, compiled=False, **opt)
        models.append(m)
    tol = {"rtol": 2e-4, "atol": 2e-5} if dtype == "float32" else {"rtol": 1e-10, "atol": 1e-12}
    for (Wa, ba), (Wb, bb) in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_allclose(Wb, Wa, **tol)
        np.testing.assert_allclose(bb, ba, **tol)
    np.testing.assert_allclose(models[1].history["loss"], models[0].history["loss"], **tol)


# ----- the plain NumPy path: GPUMLP_JIT=0, or numba not importable (fresh interpreters) ------------
_PROBE = """
import json, sys
{block}
import numpy as np
import gpumlp as gm
rng = np.random.default_rng(0)
X, Y = rng.standard_normal((40, 2)), rng.integers(0, 2, 40)
m = gm.MLP([2, 4, 2], "tanh", "softmax", dtype="float64", backend="numpy", seed=1)
loops = []
h = m.fit(X, Y, epochs=400, batch_size=8, lr=0.3, seed=3, callbacks=[lambda m, e, l: loops.append(l["loop"])])
try:
    m.fit(X, Y, epochs=1, compiled=True)
    forced = "ran"
except ValueError as exc:
    forced = str(exc)
info = gm.backend_info("numpy")
numba = sys.modules.get("numba") is not None
print(json.dumps({{"ops": info["ops"], "jit": info["jit"], "numba": numba, "loops": sorted(set(loops)),
                  "loss": h["loss"][-1], "W": m.get_weights()[0][0].tolist(), "forced": forced}}))
"""


def _probe(env_jit: str | None, block: str = "") -> dict:
    env = dict(os.environ)
    env.pop("GPUMLP_JIT", None)
    if env_jit is not None:
        env["GPUMLP_JIT"] = env_jit
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(block=block)], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def _reference() -> tuple[float, list[float]]:
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((40, 2)), rng.integers(0, 2, 40)
    m = gm.MLP([2, 4, 2], "tanh", "softmax", dtype="float64", backend=Backend(np, Ops(np)), seed=1)
    h = m.fit(X, Y, epochs=400, batch_size=8, lr=0.3, seed=3, compiled=False)
    return h["loss"][-1], m.get_weights()[0][0].tolist()


@pytest.mark.parametrize(
    "env_jit, block, why",
    [("0", "", "GPUMLP_JIT=0"), (None, "sys.modules['numba'] = None  # numba not importable", "not installed")],
)
def test_plain_numpy_path_without_the_jit(env_jit, block, why):
    got = _probe(env_jit, block)
    assert got["ops"] == "NumpyOps" and why in got["jit"] and got["jit"].startswith("off")
    assert got["numba"] is False and got["loops"] == ["eager"]
    assert "compiled=True" in got["forced"]
    loss, W = _reference()  # the reference Array-API Ops: an independent implementation
    assert got["loss"] == pytest.approx(loss, rel=1e-9)
    np.testing.assert_allclose(got["W"], W, rtol=1e-9)


def test_import_gpumlp_does_not_import_numba():
    code = "import sys, gpumlp; gpumlp.backend_info('numpy'); print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_bad_jit_setting_is_refused(monkeypatch):
    monkeypatch.setenv("GPUMLP_JIT", "maybe")
    with pytest.raises(ValueError, match="GPUMLP_JIT='maybe' must be 0, 1 or auto"):
        numba_ops.jit_setting()
