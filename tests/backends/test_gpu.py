"""CuPy on a real CUDA GPU against the NumPy backend: kernels, cuBLAS, CUDA graphs, TF32, I/O.

Run with ``python -m pytest -m gpu`` (scripts/gpu_check.sh). Skipped, with the reason, where
no GPU is usable. Relative errors are max |a − b| / max |b| over a whole array. Tolerances:
forward, loss and gradients 1e-10 (float64) / 1e-4 (float32); weights after 200 training
steps 1e-8 (float64) / 2e-3 (float32, where cuBLAS and OpenBLAS round sums differently and
200 steps amplify that); CUDA-graph replays against eager CuPy steps 1e-12 (float64).
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pytest

import gpumlp as gm
from gpumlp.optimizers import SGD, Adam
from gpumlp.training import Trainer
from gpumlp.training.cuda_graph import device_loop
from gpumlp.training.step import LossTotal, RowBatches, train_step
from gpumlp.workspace import Workspace

from agreement import HIDDEN, OUTPUT_LOSS, flat, rel, targets

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not gm.has_gpu(), reason="no CUDA GPU (CuPy with a visible device)")]

# Why these numbers (docs/gpu.md, "Rounding"): the GPU is not bit-equal to NumPy. cuBLAS sums a
# GEMM's K products in another order than OpenBLAS: at most about K·ε·Σ|aᵢbᵢ| apart (float32
# ε = 2⁻²³ ≈ 1.2e-7; K ≤ 300 here, so ≤ 3.6e-5 relative in the worst case, √K·ε ≈ 2e-6
# typically); CUDA's expf/tanhf are within 2 ulp and logf within 1 ulp (CUDA C++ Programming
# Guide, "Standard Functions"), NumPy's within a few ulp, so a few ulp per call; float32
# kernels flush subnormals to zero (CuPy's -ftz=true), < 1.2e-38 absolute. Up to three layers
# of backward pass compound these, hence 1e-4 relative to the largest entry in float32; in
# float64 the same reasoning with ε = 2⁻⁵² gives ~1e-13, and 1e-10 leaves room for ill-
# conditioned random cases. 200 training steps amplify differences through the dynamics, not
# by a bound: 2e-3 (float32) and 1e-8 (float64) are estimates for the first GPU run to confirm.
TOL = {"float64": 1e-10, "float32": 1e-4}
TRAIN_TOL = {"float64": 1e-8, "float32": 2e-3}


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("output,loss", OUTPUT_LOSS)
def test_forward_loss_gradients_equal_numpy(dtype, hidden, output, loss):
    rng = np.random.default_rng(zlib.crc32(f"{dtype} {hidden} {output} {loss}".encode()))  # stable across runs
    hidden_sizes = [int(rng.integers(1, 70)) for _ in range(rng.integers(0, 3))]
    sizes = [int(rng.integers(1, 40)), *hidden_sizes, int(rng.integers(2, 12))]
    n = int(rng.integers(1, 300))
    X, T = rng.normal(size=(n, sizes[0])), targets(rng, loss, n, sizes[-1])
    kw = dict(hidden_activation=hidden, output_activation=output, dtype=dtype, seed=7)
    tol = TOL[dtype]
    ref = gm.MLP(sizes, backend="numpy", **kw)
    for backend in (gm.get_backend("cupy"), gm.get_backend("cupy", fast=False)):  # fused kernels and reference Ops
        dev = gm.MLP(sizes, backend=backend, **kw)
        assert rel(dev.forward(X), ref.forward(X)) < tol
        lr = ref.loss(X, T, loss=loss, l2=0.1)
        assert abs(dev.loss(X, T, loss=loss, l2=0.1) - lr) <= tol * abs(lr)
        for (dW, db), (rW, rb) in zip(dev.gradients(X, T, loss=loss, l2=0.1), ref.gradients(X, T, loss=loss, l2=0.1)):
            assert gm.to_numpy(dW).dtype == np.dtype(dtype)
            assert rel(dW, rW) < tol and rel(db, rb) < tol


def _train(backend, dtype, optimizer, **kw):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(650, 12)), rng.integers(0, 4, 650)  # batch 32: 20 full steps + 1 of 10 per epoch
    model = gm.MLP([12, 32, 16, 4], hidden_activation="tanh", dtype=dtype, backend=backend, seed=3)
    opt = Adam(lr=0.005) if optimizer == "adam" else SGD(lr=0.05, momentum=0.9, nesterov=True)
    history = model.fit(X, y, optimizer=opt, epochs=10, batch_size=32, l2=1e-3, seed=11, **kw)  # 210 steps
    return model, history, opt


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_200_training_steps_agree_with_numpy(dtype, optimizer, cuda_graph):
    ref, h_ref, _ = _train("numpy", dtype, optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed capture warns
        dev, h_dev, opt = _train("cupy", dtype, optimizer, cuda_graph=cuda_graph)
    assert opt.t == 210
    assert rel(flat(dev), flat(ref)) < TRAIN_TOL[dtype]
    np.testing.assert_allclose(h_dev["loss"], h_ref["loss"], rtol=TRAIN_TOL[dtype])


def test_graph_replays_equal_eager_cupy_steps():
    eager, h_eager, _ = _train("cupy", "float64", "adam")
    graphed, h_graph, _ = _train("cupy", "float64", "adam", cuda_graph=True)
    assert rel(flat(graphed), flat(eager)) < 1e-12
    np.testing.assert_allclose(h_graph["loss"], h_eager["loss"], rtol=1e-12)


def test_graphs_are_captured_on_the_gpu_with_clipping_and_a_remainder_batch():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(100, 8)), rng.integers(0, 3, 100)
    model = gm.MLP([8, 16, 3], dtype="float32", backend="cupy", seed=0)
    Xd, Td, loss = model.check_data(X, y, "auto")
    trainer = Trainer(model, loss, SGD(lr=0.1, momentum=0.9), 0.0, 32, True, np.random.default_rng(0), clip_norm=0.5)
    loop = device_loop(trainer, cuda_graph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        losses = [loop.run_epoch(Xd, Td) for _ in range(3)]
    assert sorted({rows for rows, _ in loop.captured}) == [4, 32] and loop.graphs
    assert all(np.isfinite(losses))


def test_no_host_synchronisation_inside_a_step(cp):
    import cupyx

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 8)), rng.integers(0, 3, 64)
    model = gm.MLP([8, 16, 3], dtype="float32", backend="cupy", seed=0)
    Xd, Td, loss = model.check_data(X, y, "auto")
    trainer = Trainer(model, loss, Adam(lr=0.01), 1e-3, 16, True, np.random.default_rng(0), clip_norm=1.0)
    ws = model.workspace(16)
    rows = RowBatches(model.ops, Xd, Td, cp.arange(64))
    losses = LossTotal(model.ops, model.xp_dtype)

    def step():  # the eager loop's step: gather, forward, loss, backward, L2, clip, update
        train_step(model, ws, rows.select(0, 16), losses, trainer.optimizer, trainer.config, 16)

    step()  # compile the kernels first (compiling may synchronise)
    with cupyx.allow_synchronize(False):
        for _ in range(3):
            step()
    loop = device_loop(trainer, allow_tf32=True)  # the device loop's eager step
    loop.run_epoch(Xd, Td)  # leaves step[0] at 4, the end of the epoch: a further step must start a new one
    loop.rewind(4)
    with cupyx.allow_synchronize(False):
        loop._enqueue_step(16)


def test_allow_tf32_trains_close_and_restores_the_compute_type(cp):
    linalg = cp._core._routines_linalg
    before = linalg.get_compute_type(np.float32)
    ref, _, _ = _train("cupy", "float32", "sgd")
    fast, _, _ = _train("cupy", "float32", "sgd", allow_tf32=True)
    assert linalg.get_compute_type(np.float32) == before
    assert rel(flat(fast), flat(ref)) < 5e-2  # TF32 keeps ~10 mantissa bits in the products


def test_save_on_gpu_load_on_cpu_gives_identical_predictions(tmp_path):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(80, 6)), rng.integers(0, 3, 80)
    gpu = gm.MLP([6, 10, 3], dtype="float64", backend="cupy", seed=2)
    gpu.fit(X, y, epochs=3, batch_size=16, cuda_graph=True)
    gpu.save(tmp_path / "m.npz")
    cpu = gm.load(tmp_path / "m.npz", backend="numpy")
    for (W, b), (cW, cb) in zip(gpu.get_weights(), cpu.get_weights()):
        np.testing.assert_array_equal(W, cW)
        np.testing.assert_array_equal(b, cb)
    same = gm.MLP([6, 10, 3], dtype="float64", backend="numpy")
    same.set_weights(gpu.get_weights())
    np.testing.assert_array_equal(cpu.predict(X), same.predict(X))
    assert rel(gpu.predict(X), cpu.predict(X)) < 1e-12


def test_predict_returns_the_kind_of_array_it_was_given(cp):
    X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    model = gm.MLP([4, 3], backend="cupy")
    assert isinstance(model.predict(X), np.ndarray)
    assert isinstance(model.predict(cp.asarray(X)), cp.ndarray)


def test_backend_info_describes_the_gpu(cp):
    info = gm.backend_info("cupy")
    assert info["backend"] == "cupy" and info["ops"] == "CupyOps"
    assert info["device"] and info["memory_total_gib"] > 0
    assert info["cuda_runtime"] and info["cupy"] == cp.__version__


def test_kernels_on_large_shapes(cp):
    rng = np.random.default_rng(3)
    sizes = [300, 1500, 200]
    X, T = rng.normal(size=(3000, 300)), np.eye(200)[rng.integers(0, 200, 3000)]
    dev, ref = (gm.MLP(sizes, hidden_activation="relu", dtype="float64", backend=b, seed=1) for b in ("cupy", "numpy"))
    assert rel(dev.forward(X), ref.forward(X)) < 1e-10
    for (dW, db), (rW, rb) in zip(dev.gradients(X, T), ref.gradients(X, T)):
        assert rel(dW, rW) < 1e-10 and rel(db, rb) < 1e-10
    Y = dev.forward_into(Workspace.unbuffered(dev, dev.to_device(X)))
    Y[0, 0] = cp.nan
    assert np.isnan(float(dev.ops.loss_sum("cross_entropy", Y, dev.to_device(T))))
