"""Diverging training stops with DivergenceError and the last good epoch's state; gradient clipping."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

import gpumlp as gm
from gpumlp.backends import get_backend
from gpumlp.optimizers import SGD


def _regression(n=64, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, np.sin(X @ rng.normal(size=d))


def _classification(n=64, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, k, n)


class Recorder:
    """Callback keeping a copy of the weights, optimizer state and step count after every epoch."""

    def __init__(self, optimizer=None):
        self.optimizer = optimizer
        self.weights, self.state, self.t = {}, {}, {}

    def __call__(self, model, epoch, logs):
        self.weights[epoch] = model.get_weights()
        if self.optimizer is not None:
            self.state[epoch] = {k: [np.array(a) for a in v] for k, v in self.optimizer.state.items()}
            self.t[epoch] = self.optimizer.t


def _assert_weights_equal(a, b):
    for (Wa, ba), (Wb, bb) in zip(a, b):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)


@pytest.mark.parametrize("case", ["mse growth past the bound", "cross-entropy NaN", "minibatch NaN"])
def test_lr_1e6_raises_and_keeps_the_last_good_epochs_finite_weights(case):
    if case == "mse growth past the bound":
        (X, y), sizes, kw, bs = _regression(), [4, 8, 1], {"output_activation": "identity"}, None
    elif case == "cross-entropy NaN":
        (X, y), sizes, kw, bs = _classification(), [4, 8, 3], {}, None
    else:
        (X, y), sizes, kw, bs = _classification(), [4, 8, 3], {"dtype": "float64"}, 16
    model = gm.MLP(sizes, backend="numpy", seed=0, **kw)
    opt = SGD(lr=1e6, momentum=0.5)
    rec = Recorder(opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from NumPy on the way: the error says it all
        with pytest.raises(gm.DivergenceError) as info:
            model.fit(X, y, optimizer=opt, epochs=60, batch_size=bs, seed=0, callbacks=[rec])
    e = info.value
    assert isinstance(e, FloatingPointError)
    assert e.epoch >= 2 and e.last_good_epoch == e.epoch - 1  # a real last good epoch to go back to
    assert sorted(rec.weights) == list(range(1, e.epoch))  # the callback never saw the diverged epoch
    _assert_weights_equal(model.get_weights(), rec.weights[e.last_good_epoch])
    assert all(np.all(np.isfinite(W)) and np.all(np.isfinite(b)) for W, b in model.get_weights())
    assert opt.t == rec.t[e.last_good_epoch]  # optimizer state rolled back with the weights
    for got, want in zip(opt.state["velocity"], rec.state[e.last_good_epoch]["velocity"]):
        np.testing.assert_array_equal(got, want)
    assert len(model.history["loss"]) == e.last_good_epoch
    assert e.last_good_loss == model.history["loss"][-1]
    msg = str(e)
    assert f"diverged in epoch {e.epoch}" in msg and "optimizer step" in msg
    assert f"end of epoch {e.last_good_epoch} (loss {e.last_good_loss:.6g})" in msg
    assert "lower lr (this run: 1e+06)" in msg and "clip_norm" in msg


def test_divergence_in_the_first_epoch_keeps_the_initial_weights():
    X, y = _regression()
    model = gm.MLP([4, 8, 1], output_activation="identity", backend="numpy", seed=0)
    start = model.get_weights()
    with pytest.raises(gm.DivergenceError, match="diverged in epoch 1 .*start of training") as info:
        model.fit(X, y, lr=1e6, epochs=5, batch_size=16)
    assert info.value.last_good_epoch == 0 and info.value.last_good_loss is None
    _assert_weights_equal(model.get_weights(), start)
    assert model.history == {"loss": []}


class PoisonAt(SGD):
    """SGD that writes inf into a weight at step ``at``: the loss of that epoch is still finite."""

    def __init__(self, at, **kw):
        super().__init__(**kw)
        self.at = at

    def step(self, params, grads):
        super().step(params, grads)
        if self.t == self.at:
            params[0][0, 0] = np.inf


def test_a_non_finite_weight_after_a_finite_loss_counts_as_divergence():
    X, y = _classification()
    model = gm.MLP([4, 5, 3], hidden_activation="tanh", backend="numpy", seed=0)
    rec = Recorder()
    with pytest.raises(gm.DivergenceError, match="epoch 3 .*a weight became NaN or infinite") as info:
        model.fit(X, y, optimizer=PoisonAt(3, lr=0.1), epochs=10, batch_size=None, callbacks=[rec])
    assert np.isfinite(info.value.loss)  # the epoch's loss alone would not have told
    assert info.value.last_good_epoch == 2
    _assert_weights_equal(model.get_weights(), rec.weights[2])


def test_divergence_threshold_is_relative_to_the_first_epoch_and_can_be_turned_off():
    X, y = _regression()
    sizes = [4, 8, 1]
    losses = []
    for threshold in (1e4, None):
        model = gm.MLP(sizes, output_activation="identity", backend="numpy", seed=0)
        with pytest.raises(gm.DivergenceError) as info:
            model.fit(X, y, lr=1e6, epochs=60, batch_size=None, divergence_threshold=threshold)
        losses.append((info.value.epoch, info.value.loss, str(info.value)))
    (epoch_bound, loss_bound, msg), (epoch_off, loss_off, _) = losses
    first = float(msg.split("first epoch's loss ")[1].split(")")[0])
    assert np.isfinite(loss_bound) and loss_bound > 1e4 * max(1.0, first)  # finite: caught by the bound
    assert "over divergence_threshold=10000 times max(1, first epoch's loss" in msg
    assert epoch_off > epoch_bound and not np.isfinite(loss_off)  # without the bound: only at NaN/inf


def test_no_false_alarm_on_a_converging_run():
    X, y = _regression()
    model = gm.MLP([4, 8, 1], output_activation="identity", backend="numpy", seed=0)
    h = model.fit(X, y, lr=0.05, epochs=30, batch_size=16, divergence_threshold=1.5)
    assert h["loss"][-1] < h["loss"][0]


def test_divergence_is_checked_once_per_epoch(monkeypatch):
    loop = importlib.import_module("gpumlp.training.fit")  # the module: gpumlp.training.fit is the function

    calls = []
    real = loop.diverged
    monkeypatch.setattr(loop, "diverged", lambda *a: calls.append(1) or real(*a))
    X, y = _classification(n=96)
    gm.MLP([4, 3], backend="numpy").fit(X, y, epochs=4, batch_size=8)  # 12 steps per epoch
    assert len(calls) == 4


def test_divergence_with_a_checkpoint_saves_the_last_good_epoch_and_resumes_with_lower_lr(tmp_path):
    X, y = _regression()
    path = tmp_path / "ck.npz"
    model = gm.MLP([4, 8, 1], output_activation="identity", backend="numpy", seed=0)
    opt = SGD(lr=0.05)
    rec = Recorder()

    def blow_up_after_epoch_3(model, epoch, logs):
        rec(model, epoch, logs)
        if epoch == 3:
            opt.lr = 1e6

    with pytest.raises(gm.DivergenceError, match="end of epoch 3 .*checkpoint .* holds them") as info:
        model.fit(
            X,
            y,
            optimizer=opt,
            epochs=20,
            batch_size=16,
            checkpoint=path,
            checkpoint_every=100,
            callbacks=[blow_up_after_epoch_3],
        )
    assert info.value.epoch == 4
    ck = gm.load_checkpoint(path)
    assert ck.epoch == 3 and len(ck.history["loss"]) == 3
    _assert_weights_equal(ck.weights, rec.weights[3])
    fresh = gm.MLP([4, 8, 1], output_activation="identity", backend="numpy", seed=0)
    with pytest.warns(UserWarning, match=r"lr=0.05 \(checkpoint: 1000000.0\)"):
        h = fresh.fit(X, y, lr=0.05, epochs=10, batch_size=16, resume=path)
    assert h["loss"][:3] == ck.history["loss"] and len(h["loss"]) == 10 and h["loss"][-1] < h["loss"][2]


# ----- gradient clipping ------------------------------------------------------------------------
@pytest.mark.parametrize("fast", [True, False])
def test_clip_global_norm_by_hand(backend, fast):
    be = get_backend(backend, fast=fast)

    def g():
        W = np.array([[3.0, 0.0], [0.0, 0.0]], dtype=np.float32)
        return [be.asarray(W), be.asarray(np.array([4.0], dtype=np.float32))]

    clipped = [be.to_numpy(a) for a in be.ops.clip_global_norm(g(), 1.0)]  # ‖g‖ = 5 -> scale 1/5
    np.testing.assert_allclose(clipped[0], [[0.6, 0.0], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(clipped[1], [0.8], rtol=1e-6)
    assert clipped[0].dtype == np.float32
    kept = [be.to_numpy(a) for a in be.ops.clip_global_norm(g(), 10.0)]  # ‖g‖ < c: unchanged
    np.testing.assert_array_equal(kept[1], [4.0])


def test_clip_norm_step_equals_a_hand_clipped_gradient_step():
    X, y = _classification(n=32)
    model = gm.MLP([4, 6, 3], backend="numpy", dtype="float64", seed=2)
    grads = model.gradients(X, y)  # checked against finite differences in test_gradients
    norm = np.sqrt(sum(np.sum(dW**2) + np.sum(db**2) for dW, db in grads))
    c, lr = 0.1 * norm, 0.5
    s = lr * (c / norm)
    want = [(W - s * dW, b - s * db) for (W, b), (dW, db) in zip(model.get_weights(), grads)]
    model.fit(X, y, lr=lr, epochs=1, batch_size=None, shuffle=False, clip_norm=c)
    for (W, b), (Ww, bw) in zip(model.get_weights(), want):
        np.testing.assert_allclose(W, Ww, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(b, bw, rtol=1e-12, atol=1e-12)


def test_clip_norm_keeps_an_otherwise_diverging_run_finite():
    X, y = _regression()
    y = 50 * y  # large targets: big gradients early on
    with pytest.raises(gm.DivergenceError):
        unclipped = gm.MLP([4, 16, 1], output_activation="identity", backend="numpy", seed=0)
        unclipped.fit(X, y, lr=0.2, epochs=40, batch_size=8)
    model = gm.MLP([4, 16, 1], output_activation="identity", backend="numpy", seed=0)
    h = model.fit(X, y, lr=0.2, epochs=40, batch_size=8, clip_norm=1.0)
    assert np.all(np.isfinite(h["loss"])) and h["loss"][-1] < h["loss"][0]
