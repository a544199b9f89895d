"""Helpers shared by the tests that compare a device path (CuPy, or its CPU emulation) with NumPy."""

from __future__ import annotations

import numpy as np

from gpumlp.backends import to_numpy

HIDDEN = ("relu", "tanh", "sigmoid", "identity")
OUTPUT_LOSS = [("softmax", "cross_entropy"), ("softmax", "binary_cross_entropy"), ("softmax", "mse"),
               ("sigmoid", "binary_cross_entropy"), ("sigmoid", "cross_entropy"), ("sigmoid", "mse"),
               ("identity", "mse"), ("tanh", "mse"), ("relu", "mse")]


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
