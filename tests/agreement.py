"""Helpers shared by the tests that compare a device path (CuPy, or its CPU emulation) with NumPy."""

from __future__ import annotations

import numpy as np

from gpumlp.backends import to_numpy

HIDDEN = ("relu", "tanh", "sigmoid", "identity")
OUTPUT_LOSS = [
    ("softmax", "cross_entropy"),
    ("softmax", "binary_cross_entropy"),
    ("softmax", "mse"),
    ("sigmoid", "binary_cross_entropy"),
    ("sigmoid", "cross_entropy"),
    ("sigmoid", "mse"),
    ("identity", "mse"),
    ("tanh", "mse"),
    ("relu", "mse"),
]


def rel(a, b) -> float:
    """max |a − b| / max |b|, in float64 on the host."""
    a, b = np.asarray(to_numpy(a), dtype=np.float64), np.asarray(to_numpy(b), dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def flat(model) -> np.ndarray:
    """Every weight and bias of ``model`` in one NumPy vector."""
    return np.concatenate([np.concatenate([W.ravel(), b.ravel()]) for W, b in model.get_weights()])


def targets(rng, loss, n, k):
    """Random targets of the kind ``loss`` takes: reals, 0/1, or one-hot rows."""
    if loss == "mse":
        return rng.normal(size=(n, k))
    if loss == "binary_cross_entropy":
        return rng.integers(0, 2, size=(n, k)).astype(float)
    return np.eye(k)[rng.integers(0, k, n)]


def max_rel_diff(a, b) -> float:
    """Largest max |x − y| / max |y| over the weights and biases of models ``a`` and ``b`` (b the reference)."""
    worst = 0.0
    for pa, pb in zip(a.get_weights(), b.get_weights()):
        for x, ref in zip(pa, pb):
            worst = max(worst, float(np.max(np.abs(x - ref))) / max(float(np.max(np.abs(ref))), 1e-12))
    return worst
