"""A second Ctrl-C (or a SIGTERM) right after the first must not cut the rollback in half (issue 12 item 14).

The first SIGINT is raised by the real signal machinery (``signal.raise_signal``) inside a train step;
the second arrives while the rollback restores the weights, or while it writes the final checkpoint.
The model must hold exactly the weights of the last complete epoch (from an uninterrupted run of
that many epochs), its history that many entries, and the checkpoint that epoch.
"""

from __future__ import annotations

import signal
import threading

import numpy as np
import pytest

import gpumlp as gm
import gpumlp.training.state as state_module
from gpumlp.optimizers import SGD

pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals reach only the main thread"
)


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 6)).astype(np.float32), rng.integers(0, 3, 64)


class SignalAtStep(SGD):
    """SGD whose step ``at`` updates the first parameter, then gets a real SIGINT (a torn step)."""

    def __init__(self, at: int, **kw) -> None:
        super().__init__(**kw)
        self.at = at

    def step(self, params, grads) -> None:
        if self.t + 1 == self.at:
            self._ops.sgd_update(params[0], grads[0], self.state["velocity"][0], self.lr, self.momentum, False)
            signal.raise_signal(signal.SIGINT)
        super().step(params, grads)


KW = dict(lr=0.05, batch_size=16, seed=5, compiled=False)  # 4 steps per epoch: step 14 is in epoch 4; step loop


def _reference() -> tuple[list, list]:
    model = gm.MLP([6, 5, 4, 3], backend="numpy", seed=0)
    history = model.fit(*_data(), epochs=3, optimizer=SGD(lr=0.05, momentum=0.8), **KW)
    return model.get_weights(), history["loss"]


def _assert_epoch_3(model: gm.MLP, weights: list, losses: list) -> None:
    for (W, b), (W3, b3) in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(W, W3)
        np.testing.assert_array_equal(b, b3)
    assert model.history["loss"] == losses


def test_second_sigint_during_the_weight_restore_waits_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    weights, losses = _reference()
    model = gm.MLP([6, 5, 4, 3], backend="numpy", seed=0)
    real_restore = model.restore
    copies = []

    def restore_with_a_second_sigint(snapshot: list) -> None:
        for i, (p, s) in enumerate(zip(model.params, snapshot)):
            model.ops.assign(p, s)
            copies.append(i)
            if i == 1:
                signal.raise_signal(signal.SIGINT)  # a second Ctrl-C, 2 of 6 arrays restored

    monkeypatch.setattr(model, "restore", restore_with_a_second_sigint)
    with pytest.raises(KeyboardInterrupt):
        model.fit(*_data(), epochs=6, optimizer=SignalAtStep(14, lr=0.05, momentum=0.8), **KW)
    assert copies == list(range(6))  # the restore ran to the end
    monkeypatch.setattr(model, "restore", real_restore)
    _assert_epoch_3(model, weights, losses)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # fit put the handler back


def test_second_sigint_during_the_final_checkpoint_waits_for_it(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    weights, losses = _reference()
    real_save = state_module.save_checkpoint

    def save_with_a_second_sigint(*args, **kwargs) -> None:
        if args[3] == 3 and not getattr(save_with_a_second_sigint, "sent", False):  # the rollback's save
            save_with_a_second_sigint.sent = True
            signal.raise_signal(signal.SIGINT)
        real_save(*args, **kwargs)

    monkeypatch.setattr(state_module, "save_checkpoint", save_with_a_second_sigint)
    model = gm.MLP([6, 5, 4, 3], backend="numpy", seed=0)
    path = tmp_path / "ck.npz"
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            *_data(),
            epochs=6,
            optimizer=SignalAtStep(14, lr=0.05, momentum=0.8),
            checkpoint=path,
            checkpoint_every=100,
            **KW,
        )
    _assert_epoch_3(model, weights, losses)
    ck = gm.load_checkpoint(path)
    assert ck.epoch == 3 and ck.history["loss"] == losses


def test_a_handler_that_returns_lets_training_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A program's own SIGINT handler that does not raise keeps working inside fit."""
    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        model = gm.MLP([6, 5, 4, 3], backend="numpy", seed=0)
        history = model.fit(*_data(), epochs=6, optimizer=SignalAtStep(14, lr=0.05, momentum=0.8), **KW)
        assert seen == [signal.SIGINT] and len(history["loss"]) == 6
        signal.raise_signal(signal.SIGINT)  # and it is the handler again after fit
        assert seen == [signal.SIGINT, signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)
