"""Optimizers: explicit capabilities, state that follows the model, step counts (regressions found in review)."""

from __future__ import annotations

import numpy as np

import gpumlp as gm
from gpumlp.optimizers import SGD, Adam, Optimizer

from agreement import max_rel_diff

REF = gm.get_backend("numpy", fast=False)


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
    assert max_rel_diff(*models) < 1e-12
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
    assert max_rel_diff(reused, fresh) == 0.0


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
    sd = {
        "name": "adam",
        "t": 7,
        "state": {"m": [np.ones(p.shape) for p in model.params], "v": [np.ones(p.shape) for p in model.params]},
    }
    opt = Adam()
    opt.load_state_dict(sd, model.params, model.backend)
    assert opt.t == 7 and float(opt.state["m"][0].sum()) == model.params[0].size


def test_capabilities_are_declared_and_a_subclass_with_its_own_step_or_update_drops_them():
    assert SGD.fusable and SGD.prescalable and Adam.fusable and not Adam.prescalable
    assert SGD(lr=0.1, momentum=0.9).prescale is None  # momentum: the update is not p + c·∇E

    class OwnStep(SGD):
        def step(self, params, grads):
            super().step(params, grads)

    class Declared(SGD):
        fusable = True

        def step(self, params, grads):
            super().step(params, grads)

    assert not OwnStep.fusable and OwnStep.prescalable
    assert Declared.fusable
    assert not _ClippedSGD.prescalable and _ClippedSGD.fusable
    assert issubclass(SGD, Optimizer)
