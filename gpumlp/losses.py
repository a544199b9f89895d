"""Loss functions as a table: name -> (value, gradient with respect to the output).

With B samples, outputs Ŷ and targets T (one-hot for cross_entropy), the batch loss is
E = (1/B) Σ_n ℓ(Ŷ_n, T_n), plus (λ/2) Σ_l ‖W_l‖² when L2 is on (seed 002's λR):
- mse:                  ℓ = ½ Σ_k (Ŷ_k − T_k)²                 (seed 001's E = 1/(2N) Σ (t − y)²)
- binary_cross_entropy: ℓ = −Σ_k [T_k log Ŷ_k + (1 − T_k) log(1 − Ŷ_k)]
- cross_entropy:        ℓ = −Σ_k T_k log Ŷ_k
``value(xp, Y, T)`` returns Σ_n ℓ (a 0-d array, summed so batches add up on the device);
``grad(xp, Y, T)`` returns ∂ℓ/∂Ŷ per sample. Logs clip Ŷ to [eps, 1 − eps] of its dtype.
For the canonical pairs the output delta ∂E/∂A_L collapses to (Ŷ − T)/B (no Jacobian).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


def _eps(xp: Any, Y: Any) -> float:
    return float(xp.finfo(Y.dtype).eps)


def _clipped(xp: Any, Y: Any) -> Any:
    eps = _eps(xp, Y)
    return xp.clip(Y, eps, 1.0 - eps)


def mse(xp: Any, Y: Any, T: Any) -> Any:
    """Σ_n ½ Σ_k (Ŷ − T)²."""
    R = Y - T
    return 0.5 * xp.sum(R * R)


def dmse(xp: Any, Y: Any, T: Any) -> Any:
    """∂ℓ/∂Ŷ = Ŷ − T."""
    return Y - T


def binary_cross_entropy(xp: Any, Y: Any, T: Any) -> Any:
    """−Σ [T log Ŷ + (1 − T) log(1 − Ŷ)]."""
    Yc = _clipped(xp, Y)
    return -xp.sum(T * xp.log(Yc) + (1.0 - T) * xp.log(1.0 - Yc))


def dbinary_cross_entropy(xp: Any, Y: Any, T: Any) -> Any:
    """∂ℓ/∂Ŷ = (Ŷ − T) / (Ŷ(1 − Ŷ))."""
    Yc = _clipped(xp, Y)
    return (Yc - T) / (Yc * (1.0 - Yc))


def cross_entropy(xp: Any, Y: Any, T: Any) -> Any:
    """−Σ T log Ŷ."""
    return -xp.sum(T * xp.log(_clipped(xp, Y)))


def dcross_entropy(xp: Any, Y: Any, T: Any) -> Any:
    """∂ℓ/∂Ŷ = −T / Ŷ."""
    return -T / _clipped(xp, Y)


class Loss(NamedTuple):
    """One table entry: summed value and per-sample gradient with respect to Ŷ."""

    value: Callable[[Any, Any, Any], Any]
    grad: Callable[[Any, Any, Any], Any]


LOSSES: dict[str, Loss] = {
    "mse": Loss(mse, dmse),
    "binary_cross_entropy": Loss(binary_cross_entropy, dbinary_cross_entropy),
    "cross_entropy": Loss(cross_entropy, dcross_entropy),
}
# (output activation, loss) pairs whose delta ∂E/∂A_L is simply (Ŷ − T)/B.
CANONICAL_PAIRS = {("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy"), ("identity", "mse")}
# loss="auto": the loss that pairs with each output activation.
AUTO_LOSS = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy", "identity": "mse"}
# Losses that take logs of Ŷ need outputs in (0, 1).
PROBABILITY_OUTPUTS = ("softmax", "sigmoid")
