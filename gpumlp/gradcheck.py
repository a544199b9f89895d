"""Gradient check: model.gradients against central finite differences of model.loss."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .backends import to_numpy
from .validation import check_number

if TYPE_CHECKING:
    from .network import MLP


def numerical_gradients(
    model: MLP, X: Any, Y: Any, loss: str = "auto", l2: float = 0.0, eps: float = 1e-6
) -> list[np.ndarray]:
    """∂E/∂θ for every parameter by central differences (E(θ+ε) − E(θ−ε)) / 2ε.

    Parameters
    ----------
    model : MLP
        Its parameters are perturbed one element at a time and put back.
    X, Y, loss, l2
        As for :meth:`gpumlp.MLP.loss`.
    eps : float
        The step ε.

    Returns
    -------
    list of numpy.ndarray
        float64 gradients in parameter order [dW_1, db_1, dW_2, db_2, ...].
    """
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
    """Largest relative error ‖g − ĝ‖ / max(‖g‖ + ‖ĝ‖, tiny) of :meth:`MLP.gradients` g against
    central differences ĝ, over the parameters.

    Parameters
    ----------
    model : MLP
        A float64 model: in float32 the differences drown in rounding error.
    X, Y, loss, l2
        As for :meth:`gpumlp.MLP.loss`.
    eps : float
        The finite-difference step ε.

    Returns
    -------
    float
        The worst relative error (about 1e-8 or less for correct gradients).

    Raises
    ------
    ValueError
        For a model that is not float64, or a bad ``eps``.
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
