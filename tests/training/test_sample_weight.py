"""Core ``fit(sample_weight=..., l2_per_sample=...)`` on every backend, against independent references:
integer weights equal repeated rows (full batch), the weighted objective's finite-difference gradient,
and a hand-written loop of the per-batch penalty."""

from __future__ import annotations

import numpy as np
import pytest

import gpumlp as gm


def _data(n: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)
    w = rng.integers(0, 4, n).astype(float)
    w[0] = 2.0
    return X, y, w


def _model(backend: str) -> gm.MLP:
    return gm.MLP([4, 5, 3], hidden_activation="tanh", dtype="float64", backend=backend, seed=1)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("l2_per_sample", [False, True])
def test_integer_weights_equal_repeated_rows(backend, optimizer, l2_per_sample):
    """Full batch: weights w_n train exactly as each row repeated w_n times (rows of weight 0 removed)."""
    X, y, w = _data()
    weighted, repeated = _model(backend), _model(backend)
    kw = dict(optimizer=optimizer, lr=0.05, l2=0.2, l2_per_sample=l2_per_sample, epochs=5, batch_size=None)
    hw = weighted.fit(X, y, sample_weight=w, **kw)
    hr = repeated.fit(X.repeat(w.astype(int), axis=0), y.repeat(w.astype(int)), **kw)
    np.testing.assert_allclose(hw["loss"], hr["loss"], rtol=1e-12)
    for (Wa, ba), (Wb, bb) in zip(weighted.get_weights(), repeated.get_weights()):
        np.testing.assert_allclose(Wa, Wb, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(ba, bb, rtol=1e-11, atol=1e-13)


def test_weighted_step_follows_the_finite_difference_gradient():
    """One plain SGD step on a weighted batch moves W by −η ∂E/∂W, E = Σ w ℓ / Σ w + λ/(2Σw) ‖W‖²,
    the derivative taken by central differences of E computed here from the weights alone."""
    X, y, w = _data(n=9)
    model = _model("numpy")
    W0 = model.get_weights()
    lam, lr = 0.3, 0.1

    def objective(weights):
        m = _model("numpy")
        m.set_weights(weights)
        P = m.predict(X)
        ce = -np.log(P[np.arange(len(y)), y])
        return (w @ ce + 0.5 * lam * sum((Wl**2).sum() for Wl, _ in weights)) / w.sum()

    grad = []
    for i, (Wl, _) in enumerate(W0):
        g = np.zeros_like(Wl)
        for idx in np.ndindex(Wl.shape):
            plus = [(a.copy(), b.copy()) for a, b in W0]
            minus = [(a.copy(), b.copy()) for a, b in W0]
            plus[i][0][idx] += 1e-6
            minus[i][0][idx] -= 1e-6
            g[idx] = (objective(plus) - objective(minus)) / 2e-6
        grad.append(g)
    model.fit(X, y, sample_weight=w, lr=lr, l2=lam, l2_per_sample=True, epochs=1, batch_size=None, shuffle=False)
    for (W1, _), (Wl, _), g in zip(model.get_weights(), W0, grad):
        np.testing.assert_allclose(W1, Wl - lr * g, rtol=1e-7, atol=1e-9)
    assert model.history["loss"][0] == pytest.approx(objective(W0), rel=1e-12)


def test_per_sample_penalty_matches_a_hand_written_loop():
    """l2_per_sample with a partial last batch: λ/B_b per batch, each batch's penalty in the epoch loss
    at the weights it saw. The reference loop uses MLP.gradients/loss with λ_b = λ/B_b."""
    X, y, _ = _data(n=11)
    model, ref = _model("numpy"), _model("numpy")
    lam, lr, B = 0.5, 0.1, 4
    model.fit(X, y, lr=lr, l2=lam, l2_per_sample=True, epochs=1, batch_size=B, shuffle=False)
    total = 0.0
    for s in range(0, 11, B):
        Xb, yb = X[s : s + B], y[s : s + B]
        lam_b = lam / len(yb)
        total += len(yb) * ref.loss(Xb, yb, l2=lam_b)
        grads = ref.gradients(Xb, yb, l2=lam_b)
        ref.set_weights([(W - lr * gW, b - lr * gb) for (W, b), (gW, gb) in zip(ref.get_weights(), grads)])
    assert model.history["loss"][0] == pytest.approx(total / 11, rel=1e-12)
    for (Wa, ba), (Wb, bb) in zip(model.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(Wa, Wb, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ba, bb, rtol=1e-12, atol=1e-14)


def test_validation_data_with_weights_is_the_weighted_mean():
    X, y, w = _data()
    model = _model("numpy")
    h = model.fit(X, y, epochs=1, batch_size=None, validation_data=(X, y, w))
    P = model.predict(X)
    expected = w @ -np.log(P[np.arange(len(y)), y]) / w.sum()
    assert h["val_loss"][0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "sample_weight, error, match",
    [
        (np.ones(3), ValueError, r"sample_weight must have shape \(24,\)"),
        (np.ones((24, 1)), ValueError, r"shape \(24,\)"),
        (np.r_[np.ones(23), np.inf], ValueError, "NaN or infinite"),
        (np.r_[np.ones(23), -1.0], ValueError, "must be >= 0; got -1 at sample 23"),
        (np.zeros(24), ValueError, "all zero"),
        (["a"] * 24, TypeError, "sample_weight must hold numbers"),
    ],
)
def test_bad_sample_weight(sample_weight, error, match):
    X, y, _ = _data()
    model = _model("numpy")
    before = model.get_weights()
    with pytest.raises(error, match=match):
        model.fit(X, y, sample_weight=sample_weight)
    for (Wa, _), (Wb, _) in zip(before, model.get_weights()):
        np.testing.assert_array_equal(Wa, Wb)


def test_cuda_graph_refuses_sample_weight():
    X, y, w = _data()
    with pytest.raises(ValueError, match="does not support sample_weight"):
        _model("numpy").fit(X, y, sample_weight=w, batch_size=None, cuda_graph=True)


def test_ops_weighted_loss_and_row_scaling_agree_with_the_reference(rng):
    ref, fast = gm.get_backend("numpy", fast=False).ops, gm.get_backend("numpy").ops
    Y = rng.random((6, 3))
    T = np.eye(3)[rng.integers(0, 3, 6)]
    w = rng.random(6)
    for loss in ("mse", "cross_entropy", "binary_cross_entropy"):
        per_row = {
            "mse": 0.5 * ((Y - T) ** 2).sum(1),
            "cross_entropy": -(T * np.log(Y)).sum(1),
            "binary_cross_entropy": -(T * np.log(Y) + (1 - T) * np.log(1 - Y)).sum(1),
        }[loss]
        for ops in (ref, fast):
            assert float(ops.weighted_loss_sum(loss, Y, T, w)) == pytest.approx(w @ per_row, rel=1e-12)
    D = rng.random((6, 3))
    np.testing.assert_allclose(fast.scale_rows(D.copy(), w), D * w[:, None])
    np.testing.assert_allclose(ref.scale_rows(D.copy(), w), D * w[:, None])
