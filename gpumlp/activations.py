"""Activation functions as a table: name -> (forward, backward from the output).

Every function takes the array namespace ``xp`` first and uses only the Array API
standard, so the same table runs on NumPy, CuPy and ``array_api_strict``. As in the
seeds, derivatives are written from the activation's *output* Z = g(A):
sigmoid' = Z(1 - Z), tanh' = 1 - Z², relu' = [Z > 0] (g'(0) = 0), identity' = 1.
``backward(xp, Z, D)`` returns D ⊙ g'(A): the delta passed down through the layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


def sigmoid(xp: Any, A: Any) -> Any:
    """Logistic σ(A) = 1/(1+e^-A), in the overflow-free form (1 + tanh(A/2))/2."""
    return 0.5 * (xp.tanh(0.5 * A) + 1.0)


def dsigmoid(xp: Any, Z: Any) -> Any:
    """σ'(A) from Z = σ(A): Z(1 - Z)."""
    return Z * (1.0 - Z)


def tanh(xp: Any, A: Any) -> Any:
    """Hyperbolic tangent."""
    return xp.tanh(A)


def dtanh(xp: Any, Z: Any) -> Any:
    """tanh'(A) from Z = tanh(A): 1 - Z²."""
    return 1.0 - Z * Z


def relu(xp: Any, A: Any) -> Any:
    """Rectified linear unit max(A, 0); NaN stays NaN (as on the fast paths), so divergence shows."""
    return xp.where(A < 0, xp.zeros_like(A), A)


def drelu(xp: Any, Z: Any) -> Any:
    """relu'(A) from Z = relu(A): 1 where Z > 0, else 0 (so g'(0) = 0)."""
    return xp.astype(Z > 0, Z.dtype)


def identity(xp: Any, A: Any) -> Any:
    """Linear output g(A) = A."""
    return A


def didentity(xp: Any, Z: Any) -> Any:
    """identity' = 1."""
    return xp.ones_like(Z)


def softmax(xp: Any, A: Any) -> Any:
    """Row-wise softmax; subtracts the row max so exp never overflows."""
    E = xp.exp(A - xp.max(A, axis=1, keepdims=True))
    return E / xp.sum(E, axis=1, keepdims=True)


def softmax_backward(xp: Any, Z: Any, D: Any) -> Any:
    """Softmax Jacobian-vector product: Z ⊙ (D - Σ_k D_k Z_k), row-wise."""
    return Z * (D - xp.sum(D * Z, axis=1, keepdims=True))


class Activation(NamedTuple):
    """One table entry: forward g(A), and backward (Z, D) -> D ⊙ g'(A)."""

    forward: Callable[[Any, Any], Any]
    backward: Callable[[Any, Any, Any], Any]
    derivative: Callable[[Any, Any], Any] | None  # elementwise g' from Z; None for softmax


def _elementwise(forward: Callable, derivative: Callable) -> Activation:
    return Activation(forward, lambda xp, Z, D: D * derivative(xp, Z), derivative)


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": _elementwise(sigmoid, dsigmoid),
    "tanh": _elementwise(tanh, dtanh),
    "relu": _elementwise(relu, drelu),
    "identity": _elementwise(identity, didentity),
    "softmax": Activation(softmax, softmax_backward, None),
}
HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "identity")
OUTPUT_ACTIVATIONS = tuple(ACTIVATIONS)
