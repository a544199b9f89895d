"""The compiled epoch (fit(compiled=True)) against the step-by-step loop on plain NumpyOps.

Same model seed and fit seed (the same host-RNG permutations), 3 epochs of batch 8 with a 2-row
remainder: weights, per-epoch losses and the RNG state must agree to rounding. The reference runs
on a NumpyOps backend of its own, so it never touches numba. Every net, regulariser, optimizer and
dtype is covered; nets and regularisers are paired rather than crossed to keep the grid small.
float32 tolerances: gpumlp's own float32 run is ~6e-5 away from its float64 run on these cases.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpumlp as gm
from gpumlp.backends import Backend, NumpyOps, numba_ops
from gpumlp.optimizers import SGD, Adam
from gpumlp.training import compiled_epoch

NETS = {  # name: (sizes, hidden, output, loss, target kind)
    "relu1-softmax-ce-labels": ([3, 8, 3], "relu", "softmax", "cross_entropy", "labels"),
    "tanh2-identity-mse": ([4, 6, 5, 2], "tanh", "identity", "mse", "real"),
    "sigmoid3-sigmoid-bce": ([2, 5, 4, 3, 1], "sigmoid", "sigmoid", "binary_cross_entropy", "binary"),
    "relu2-softmax-ce-probs": ([3, 7, 4, 3], "relu", "softmax", "cross_entropy", "probs"),
    "tanh1-sigmoid-mse": ([2, 4, 1], "tanh", "sigmoid", "mse", "binary"),  # general output delta
    "sigmoid1-softmax-mse": ([3, 5, 3], "sigmoid", "softmax", "mse", "probs"),  # softmax Jacobian
    "relu1-sigmoid-ce": ([3, 6, 2], "relu", "sigmoid", "cross_entropy", "labels"),  # general output delta
}
REGS = {"plain": {}, "l2": {"l2": 0.01}, "clip": {"clip_norm": 0.3}, "l2+clip": {"l2": 0.01, "clip_norm": 0.3}}
PAIRS = list(zip(NETS, ["plain", "l2", "clip", "l2+clip", "plain", "l2+clip", "clip"]))
OPTS = {
    "sgd": {"optimizer": "sgd", "lr": 0.2},
    "momentum": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9},
    "nesterov": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
    "adam": {"optimizer": "adam", "lr": 0.02},
}
TOL = {"float32": {"rtol": 1e-4, "atol": 1e-5}, "float64": {"rtol": 1e-10, "atol": 1e-12}}
PLAIN = Backend(np, NumpyOps(np))


@pytest.fixture(scope="module", autouse=True)
def kernels():
    pytest.importorskip("numba")
    if numba_ops.load_kernels() is None:
        pytest.skip(f"numba kernels unavailable: {numba_ops.jit_info()}")
    yield
    numba_ops._kernels.clear()  # later modules see the process as it starts: numba's kernels not loaded


def data(sizes, kind, n=50):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, sizes[0]))
    k = sizes[-1]
    if kind == "labels":
        return X, rng.integers(0, k, n)
    if kind == "probs":
        return X, rng.dirichlet(np.ones(k), n)
    if kind == "binary":
        return X, rng.integers(0, 2, (n, k)).astype(float)
    return X, rng.standard_normal((n, k))


def both(net, dtype, fit_kw, epochs=3, batch_size=8, shuffle=True):
    sizes, hidden, out, loss, kind = NETS[net]
    X, Y = data(sizes, kind)
    kw = {"loss": loss, "epochs": epochs, "batch_size": batch_size, "seed": 7, "shuffle": shuffle, **fit_kw}
    ref = gm.MLP(sizes, hidden, out, dtype=dtype, backend=PLAIN, seed=3)
    got = gm.MLP(sizes, hidden, out, dtype=dtype, backend="numpy", seed=3)
    loops = []
    ref.fit(X, Y, divergence_threshold=None, compiled=False, **kw)
    got.fit(
        X, Y, divergence_threshold=None, compiled=True, callbacks=[lambda m, e, logs: loops.append(logs["loop"])], **kw
    )
    assert loops == ["compiled"] * epochs
    return ref, got


def check(ref, got, dtype):
    for (Wa, ba), (Wb, bb) in zip(ref.get_weights(), got.get_weights()):
        assert Wb.dtype == np.dtype(dtype)
        np.testing.assert_allclose(Wb, Wa, **TOL[dtype])
        np.testing.assert_allclose(bb, ba, **TOL[dtype])
    np.testing.assert_allclose(got.history["loss"], ref.history["loss"], **TOL[dtype])
    assert ref.rng.bit_generator.state == got.rng.bit_generator.state  # the same permutations were drawn


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opt", list(OPTS))
@pytest.mark.parametrize("net, reg", PAIRS)
def test_compiled_epoch_equals_the_step_path(net, reg, opt, dtype):
    ref, got = both(net, dtype, {**OPTS[opt], **REGS[reg]})
    check(ref, got, dtype)
    start = gm.MLP(*NETS[net][:3], dtype=dtype, backend="numpy", seed=3).get_weights()
    assert any(not np.allclose(W0, W) for (W0, _), (W, _) in zip(start, got.get_weights()))  # it trained


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_full_batch_without_shuffle(dtype, opt):
    ref, got = both("tanh1-sigmoid-mse", dtype, {**OPTS[opt], "l2": 0.01}, epochs=5, batch_size=None, shuffle=False)
    check(ref, got, dtype)


def test_xor_2_2_1_matches_the_step_path():
    """The seeds' XOR net: sigmoid 2-2-1, MSE, full batch, lr 2 (float64)."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
    Y = np.array([[0], [1], [1], [0]], float)
    models = []
    for backend, compiled in ((PLAIN, False), ("numpy", True)):
        m = gm.MLP([2, 2, 1], "sigmoid", "sigmoid", dtype="float64", backend=backend, seed=0)
        m.fit(X, Y, loss="mse", lr=2.0, epochs=2000, batch_size=None, shuffle=False, compiled=compiled)
        models.append(m)
    check(*models, "float64")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adam_state_and_step_count_carry_over_two_fits(dtype):
    sizes, hidden, out, loss, kind = NETS["relu1-softmax-ce-labels"]
    X, Y = data(sizes, kind)
    oa, ob = Adam(lr=0.02), Adam(lr=0.02)
    ref = gm.MLP(sizes, hidden, out, dtype=dtype, backend=PLAIN, seed=3)
    got = gm.MLP(sizes, hidden, out, dtype=dtype, backend="numpy", seed=3)
    for _ in range(2):
        ref.fit(X, Y, optimizer=oa, epochs=2, batch_size=8, compiled=False)
        got.fit(X, Y, optimizer=ob, epochs=2, batch_size=8, compiled=True)
    assert oa.t == ob.t == 28
    check(ref, got, dtype)
    for k in ("m", "v"):
        for sa, sb in zip(oa.state[k], ob.state[k]):
            np.testing.assert_allclose(sb, sa, **TOL[dtype])


def test_divergence_on_the_compiled_path_rolls_back_like_the_step_path():
    X, Y = data([3, 8, 3], "labels")
    models = []
    for backend, compiled in ((PLAIN, False), ("numpy", True)):
        m = gm.MLP([3, 8, 3], "relu", "identity", dtype="float64", backend=backend, seed=3)
        with pytest.raises(gm.DivergenceError) as err:
            m.fit(X, Y.reshape(-1, 1) * 1.0 @ np.ones((1, 3)), loss="mse", lr=5.0, epochs=50, compiled=compiled)
        models.append((m, err.value))
    (a, ea), (b, eb) = models
    assert ea.epoch == eb.epoch and ea.last_good_epoch == eb.last_good_epoch
    check(a, b, "float64")


class _MySGD(SGD):
    def step(self, params, grads):
        super().step(params, grads)


@pytest.mark.parametrize(
    "setup, message",
    [
        ({"optimizer": _MySGD(lr=0.1)}, "built-in optimizers"),
        ({"backend": "array_api_strict"}, "needs backend='numpy'"),
    ],
)
def test_compiled_true_refuses_what_it_cannot_run(setup, message):
    if setup.get("backend") == "array_api_strict":
        pytest.importorskip("array_api_strict")
    m = gm.MLP([3, 4, 2], "relu", "softmax", backend=setup.get("backend", "numpy"), seed=0)
    X, Y = data([3, 4, 2], "labels")
    with pytest.raises(ValueError, match=f"compiled=True .*{message}"):
        m.fit(X, Y, epochs=1, compiled=True, optimizer=setup.get("optimizer", "sgd"))
    with pytest.raises(ValueError, match="compiled must be True, False or 'auto'"):
        m.fit(X, Y, epochs=1, compiled="yes")
    logs = []
    m.fit(
        X,
        Y,
        epochs=1,
        compiled="auto",
        optimizer=setup.get("optimizer", "sgd"),
        callbacks=[lambda *a: logs.append(a[2])],
    )
    assert logs[0]["loop"] == "eager"


def _auto_loop(sizes, batch_size, n, epochs, loaded, monkeypatch):
    monkeypatch.delenv("GPUMLP_JIT", raising=False)
    monkeypatch.setattr(numba_ops, "kernels_loaded", lambda: loaded)
    m = gm.MLP(sizes, "relu", "softmax", backend="numpy", seed=0)
    trainer = gm.training.Trainer(m, "cross_entropy", SGD(0.1), 0.0, batch_size, True, m.rng)
    return compiled_epoch.compiled_loop(trainer, "auto", n, epochs)


def test_auto_picks_small_long_fits_and_leaves_the_quick_start_on_the_plain_path(monkeypatch):
    # iris-sized, many epochs: compiled; numba not yet loaded but the fit pays its start-up back
    assert _auto_loop([4, 16, 3], 16, 150, 3000, False, monkeypatch) is not None
    # the same net, a short fit, numba not loaded: not worth 1-2 s of start-up
    assert _auto_loop([4, 16, 3], 16, 150, 20, False, monkeypatch) is None
    # ... and the same once numba is loaded: a fit's path does not depend on what the process ran before
    assert _auto_loop([4, 16, 3], 16, 150, 20, True, monkeypatch) is None
    # the quick start (digits 64-128-10, batch 32): batch × params is over the limit
    assert _auto_loop([64, 128, 10], 32, 1437, 30, True, monkeypatch) is None


def test_a_callback_that_changes_the_learning_rate_takes_effect_next_epoch():
    X, Y = data([3, 8, 3], "labels")
    models = []
    for backend, compiled in ((PLAIN, False), ("numpy", True)):
        opt = SGD(lr=0.1, momentum=0.5)

        def slow_down(model, epoch, logs, opt=opt):
            opt.lr = 0.1 / (epoch + 1)

        m = gm.MLP([3, 8, 3], "relu", "softmax", dtype="float64", backend=backend, seed=3)
        m.fit(X, Y, optimizer=opt, epochs=4, batch_size=8, seed=1, compiled=compiled, callbacks=[slow_down])
        models.append(m)
    check(*models, "float64")


def test_gpumlp_jit_1_loads_numba_for_any_fit_and_gpumlp_jit_0_for_none(monkeypatch):
    monkeypatch.setenv("GPUMLP_JIT", "1")
    monkeypatch.setattr(numba_ops, "kernels_loaded", lambda: False)
    m = gm.MLP([4, 16, 3], "relu", "softmax", backend="numpy", seed=0)
    trainer = gm.training.Trainer(m, "cross_entropy", SGD(0.1), 0.0, 16, True, m.rng)
    assert compiled_epoch.compiled_loop(trainer, "auto", 150, 1) is not None
    monkeypatch.setenv("GPUMLP_JIT", "0")
    assert compiled_epoch.compiled_loop(trainer, "auto", 150, 3000) is None
    with pytest.raises(ValueError, match="compiled=True is turned off by GPUMLP_JIT=0"):
        compiled_epoch.compiled_loop(trainer, True, 150, 1)


def test_numbaops_kernels_load_only_for_fits_long_enough_to_pay_back(monkeypatch):
    monkeypatch.delenv("GPUMLP_JIT", raising=False)
    calls = []
    real = numba_ops.load_kernels
    monkeypatch.setattr(numba_ops, "load_kernels", lambda: calls.append(1) or real())
    m = gm.MLP([784, 256, 10], "relu", "softmax", backend=Backend(np, numba_ops.NumbaOps(np)), seed=0)
    trainer = gm.training.Trainer(m, "cross_entropy", SGD(0.1), 0.0, 128, True, m.rng)
    assert compiled_epoch.compiled_loop(trainer, "auto", 1000, 1) is None and not calls  # about 0.03 s of fit
    assert compiled_epoch.compiled_loop(trainer, "auto", 60000, 10) is None and calls  # about 50 s: load


def test_checkpoint_and_resume_on_the_compiled_path_equal_one_uninterrupted_run(tmp_path):
    X, Y = data([3, 8, 3], "labels")
    path = tmp_path / "ck.npz"
    kw = {"optimizer": "adam", "lr": 0.02, "batch_size": 8, "seed": 4, "compiled": True}
    straight = gm.MLP([3, 8, 3], "relu", "softmax", dtype="float64", backend="numpy", seed=3)
    straight.fit(X, Y, epochs=4, **kw)
    first = gm.MLP([3, 8, 3], "relu", "softmax", dtype="float64", backend="numpy", seed=3)
    first.fit(X, Y, epochs=2, checkpoint=path, **kw)
    resumed = gm.MLP([3, 8, 3], "relu", "softmax", dtype="float64", backend="numpy", seed=3)
    resumed.fit(X, Y, epochs=4, resume=path, **{k: v for k, v in kw.items() if k != "seed"})
    for (Wa, ba), (Wb, bb) in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(Wb, Wa)
        np.testing.assert_array_equal(bb, ba)
    assert resumed.history["loss"] == straight.history["loss"]
