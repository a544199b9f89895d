"""Gradient check: model.gradients against central finite differences of model.loss."""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import to_numpy
from .network import MLP
from .validation import check_number


def numerical_gradients(model: MLP, X: Any, Y: Any, loss: str = "auto", l2: float = 0.0, eps: float = 1e-6) -> list[np.ndarray]:
    """∂E/∂θ for every parameter by central differences (E(θ+ε) − E(θ−ε)) / 2ε, as NumPy arrays."""
    out = []
    for p in model.params:
        host = np.array(to_numpy(p))
        g = np.empty_like(host, dtype=np.float64)
        for idx in np.ndindex(*host.shape):
            orig = float(host[idx])
            p[idx] = orig + eps
            plus = model.loss(X, Y, loss=loss, l2=l2)
            p[idx] = orig - eps
            minus = model.loss(X, Y, loss=loss, l2=l2)
            p[idx] = orig
            g[idx] = (plus - minus) / (2.0 * eps)
        out.append(g)
    return out


def gradcheck(model: MLP, X: Any, Y: Any, loss: str = "auto", l2: float = 0.0, eps: float = 1e-6) -> float:
    """Largest relative error ‖g − ĝ‖ / max(‖g‖ + ‖ĝ‖, tiny) over the parameters.

    Needs a float64 model: in float32 the differences drown in rounding error.
    """
    if model.dtype != "float64":
        raise ValueError(f"gradcheck needs a float64 model (MLP(..., dtype='float64')); this one is {model.dtype}")
    eps = check_number(eps, "eps")
    analytic = [to_numpy(g) for pair in model.gradients(X, Y, loss=loss, l2=l2) for g in pair]
    numeric = numerical_gradients(model, X, Y, loss=loss, l2=l2, eps=eps)
    worst = 0.0
    for a, n in zip(analytic, numeric):
        denom = max(np.linalg.norm(a) + np.linalg.norm(n), np.finfo(np.float64).tiny)
        worst = max(worst, float(np.linalg.norm(a - n) / denom))
    return worst
