"""What the fit loop shows its user: every callback sees every epoch, a finished run stays finished
on resume, the epoch loss is summed in float64, and running out of epochs while improving warns."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpumlp as gm


def _data(n=120, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)


def _weights(model):
    return [a for pair in model.get_weights() for a in pair]


def test_every_callback_sees_every_epoch_even_after_one_asks_to_stop():
    X, y = _data()
    seen: list[int] = []

    def stop_at_2(model, epoch, logs):
        return epoch == 2

    def record(model, epoch, logs):
        seen.append(epoch)

    gm.MLP([6, 8, 3], backend="numpy", seed=0).fit(X, y, epochs=5, callbacks=[stop_at_2, record], seed=0)
    assert seen == [1, 2]  # before: [1] (any() stopped at the first True, so `record` missed epoch 2)


def test_progress_bar_counts_the_epoch_a_callback_stopped_at(monkeypatch):
    from gpumlp import progress

    bars = []
    real = progress.ProgressBar

    class Spy(real):
        def __init__(self, *a, **k):
            super().__init__(*a, **{**k, "disable": True})
            self.calls = 0
            bars.append(self)

        def __call__(self, *a):
            self.calls += 1
            return super().__call__(*a)

    monkeypatch.setattr(progress, "ProgressBar", Spy)
    X, y = _data()
    gm.MLP([6, 8, 3], backend="numpy", seed=0).fit(
        X, y, epochs=5, callbacks=[lambda m, e, logs: e == 3], progress=True, seed=0
    )
    assert bars and bars[0].calls == 3  # before: 2 (the callback's True hid epoch 3 from the bar)


@pytest.mark.parametrize("how", ["early-stopping", "callback", "epochs"])
def test_resuming_a_finished_run_trains_no_further(how, tmp_path):
    X, y = _data()
    kw = dict(optimizer="adam", lr=0.05, batch_size=16, seed=3, validation_data=(X[:30], y[:30]))
    if how == "early-stopping":
        kw.update(early_stopping=True, patience=2, epochs=200)
    elif how == "callback":
        kw.update(epochs=20, callbacks=[lambda m, e, logs: e == 4])
    else:
        kw.update(epochs=4)
    path = tmp_path / "ck.npz"
    first = gm.MLP([6, 16, 3], backend="numpy", seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gm.ConvergenceWarning)
        h_first = {k: list(v) for k, v in first.fit(X, y, checkpoint=path, **kw).items()}
    assert len(h_first["loss"]) < 200
    again = gm.MLP([6, 16, 3], backend="numpy", seed=5)
    h_again = again.fit(X, y, resume=path, **kw)  # the same call, resumed from the finished run's checkpoint
    assert h_again == h_first  # before: 1 more epoch in the history (and other weights after a callback's stop)
    for a, b in zip(_weights(again), _weights(first)):
        np.testing.assert_array_equal(a, b)


def test_epoch_loss_is_summed_in_float64():
    """200k float32 samples in batches of 8, weights frozen (lr 1e-30 moves nothing): the reported epoch loss
    is the mean of the per-sample losses, which numpy computes here in float64 from the float32 outputs."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200_000, 4)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32) + 1.0).astype(np.float32)
    model = gm.MLP([4, 1], output_activation="identity", backend="numpy", seed=0)
    model.set_weights([(model.get_weights()[0][0], np.array([0.5], dtype=np.float32))])  # not 0: lr 1e-30 moves 0
    before = _weights(model)
    h = model.fit(X, y, loss="mse", optimizer="sgd", lr=1e-30, epochs=1, batch_size=8, shuffle=False)
    for a, b in zip(_weights(model), before):
        np.testing.assert_array_equal(a, b)
    out = np.asarray(model.predict(X), dtype=np.float64)[:, 0]
    reference = float(np.mean(0.5 * (out - y.astype(np.float64)) ** 2))
    assert abs(h["loss"][0] - reference) <= 1e-6 * reference  # float32 summing is off by ~1e-4 here


def test_running_out_of_epochs_while_improving_warns():
    X, y = _data()
    assert issubclass(gm.ConvergenceWarning, UserWarning)
    model = gm.MLP([6, 16, 3], backend="numpy", seed=0)
    with pytest.warns(gm.ConvergenceWarning, match="still improving"):
        model.fit(X, y, optimizer="adam", lr=1e-3, epochs=3, early_stopping=True, patience=5, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", gm.ConvergenceWarning)  # stopped by patience: converged, no warning
        model.fit(X, y, optimizer="adam", lr=0.05, epochs=500, early_stopping=True, patience=2, seed=0)
