"""Gradients against independent references: central finite differences, a reverse-mode AD, the seeds by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import gpumlp as gm

from autograd_ref import mlp_loss_and_grads

PAIRS = [("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy"), ("identity", "mse"), ("sigmoid", "mse")]
HIDDEN = ["sigmoid", "tanh", "relu", "identity"]


def _problem(depth: int, output: str, loss: str, seed: int):
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(2, 5))] + [int(rng.integers(2, 6)) for _ in range(depth - 1)] + [3]
    X = rng.normal(size=(6, sizes[0]))
    if loss == "cross_entropy":
        Y = rng.integers(0, 3, 6)
    elif loss == "binary_cross_entropy":
        Y = rng.integers(0, 2, (6, 3)).astype(float)
    else:
        Y = rng.normal(size=(6, 3)) if output == "identity" else rng.uniform(size=(6, 3))
    return sizes, X, Y


@pytest.mark.parametrize("l2", [0.0, 0.05])
@pytest.mark.parametrize("depth,hidden", [(1, "sigmoid")] + list(itertools.product([2, 3, 4], HIDDEN)))
@pytest.mark.parametrize("output,loss", PAIRS)
def test_gradients_match_finite_differences(backend, depth, hidden, output, loss, l2):
    """Depths 1-4 (depth 1 has no hidden layer, so one case), every hidden activation, each output/loss pair."""
    sizes, X, Y = _problem(depth, output, loss, seed=depth * 7 + len(hidden))
    model = gm.MLP(sizes, hidden_activation=hidden, output_activation=output, dtype="float64", backend=backend, seed=3)
    if hidden == "relu":  # keep pre-activations away from the kink at 0, where the derivative jumps
        X = X + np.sign(X) * 0.1
    assert gm.gradcheck(model, X, Y, loss=loss, l2=l2) < 1e-6


@pytest.mark.parametrize("trial", range(12))
def test_gradients_match_reverse_mode_autodiff(trial):
    rng = np.random.default_rng(100 + trial)
    depth = int(rng.integers(1, 5))
    sizes = [int(rng.integers(1, 7)) for _ in range(depth)] + [int(rng.integers(2, 5))]
    output, loss = PAIRS[trial % len(PAIRS)]
    hidden = HIDDEN[trial % len(HIDDEN)]
    l2 = float(rng.choice([0.0, 0.1]))
    model = gm.MLP(
        sizes, hidden_activation=hidden, output_activation=output, dtype="float64", backend="numpy", seed=trial
    )
    B = int(rng.integers(1, 9))
    X = rng.normal(size=(B, sizes[0]))
    k = sizes[-1]
    if loss == "cross_entropy":
        Y, T = (labels := rng.integers(0, k, B)), np.eye(k)[labels]
    elif loss == "binary_cross_entropy":
        Y = T = rng.integers(0, 2, (B, k)).astype(float)
    else:
        Y = T = rng.uniform(size=(B, k))
    acts = model.activations
    ref_loss, ref_grads = mlp_loss_and_grads(model.get_weights(), acts, X, T, loss, l2)
    assert model.loss(X, Y, loss=loss, l2=l2) == pytest.approx(ref_loss, rel=1e-12)
    for (dW, db), (rW, rb) in zip(model.gradients(X, Y, loss=loss, l2=l2), ref_grads):
        np.testing.assert_allclose(dW, rW, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(db, rb.reshape(db.shape), rtol=1e-9, atol=1e-12)


def test_seed_xor_delta_rule_by_hand():
    """Seed 000/003: δ_R = (y_R − c) y_R (1 − y_R), δ_H = δ_R w_O ⊙ y_H (1 − y_H), per sample, summed."""
    X, c = gm.load_dataset("xor")
    model = gm.MLP(
        [2, 2, 1], hidden_activation="sigmoid", output_activation="sigmoid", dtype="float64", backend="numpy", seed=4
    )
    (WH, bH), (WO, bO) = model.get_weights()
    sig = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    gWH, gbH, gWO, gbO = np.zeros_like(WH), np.zeros_like(bH), np.zeros_like(WO), np.zeros_like(bO)
    for x, t in zip(X, c):
        yH = np.array([sig(bH[j] + sum(x[i] * WH[i, j] for i in range(2))) for j in range(2)])
        yR = sig(bO[0] + sum(yH[j] * WO[j, 0] for j in range(2)))
        dR = (yR - t) * yR * (1 - yR)
        dH = [dR * WO[j, 0] * yH[j] * (1 - yH[j]) for j in range(2)]
        for j in range(2):
            gWO[j, 0] += dR * yH[j]
            gbH[j] += dH[j]
            for i in range(2):
                gWH[i, j] += dH[j] * x[i]
        gbO[0] += dR
    grads = model.gradients(X, c, loss="mse")  # E = 1/(2N) Σ (c − y)², so the seeds' sums are divided by N = 4
    for got, want in zip([g for pair in grads for g in pair], [gWH, gbH, gWO, gbO]):
        np.testing.assert_allclose(got, want / 4, rtol=1e-12)


def test_seed_xor_hand_set_weights_compute_xor():
    """Seed 002: h1 = OR (−0.5 + x1 + x2), h2 = AND (x1 + x2 − 1.5), y = h1 AND NOT h2 (−0.5 + h1 − h2)."""
    X, c = gm.load_dataset("xor")
    model = gm.MLP(
        [2, 2, 1], hidden_activation="sigmoid", output_activation="sigmoid", dtype="float64", backend="numpy"
    )
    k = 20.0  # steep sigmoids approach the seed's threshold units
    model.set_weights(
        [
            (k * np.array([[1.0, 1.0], [1.0, 1.0]]), k * np.array([-0.5, -1.5])),
            (k * np.array([[1.0], [-1.0]]), k * np.array([-0.5])),
        ]
    )
    np.testing.assert_allclose(model.predict(X).ravel(), c, atol=1e-4)
