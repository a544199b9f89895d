"""Ops: the few array kernels the math needs, written once on ``self.xp``.

:class:`Ops` is the reference: it uses only the Python Array API standard, so it runs on
any conforming namespace (``array_api_strict`` included) and ignores ``out=``; results are
always returned, and callers keep the returned array. :class:`NumpyOps` overrides the hot
paths with ``out=`` buffers and in-place ufuncs (NumPy and CuPy share that ufunc API);
:class:`CupyOps` adds fused device kernels on top. Tests compare the fast paths with the
reference. Optimizer updates are in place on every Ops, so parameter arrays never move.
"""

from __future__ import annotations

from typing import Any

from .activations import ACTIVATIONS
from .losses import CANONICAL_PAIRS, LOSSES


class Ops:
    """Reference kernels on the Array API standard (``out=`` accepted, never required)."""

    def __init__(self, xp: Any) -> None:
        self.xp = xp

    def alloc(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """A zero-filled array."""
        return self.xp.zeros(shape, dtype=dtype)

    def copy(self, a: Any) -> Any:
        """A new array equal to ``a``."""
        return self.xp.asarray(a, copy=True)

    def assign(self, dst: Any, src: Any) -> None:
        """dst[...] = src, in place."""
        dst[...] = src

    def gemm(self, a: Any, b: Any, out: Any = None, trans_a: bool = False, trans_b: bool = False) -> Any:
        """a @ b, with either operand transposed."""
        return self.xp.matmul(a.T if trans_a else a, b.T if trans_b else b)

    def affine_activate(self, X: Any, W: Any, b: Any, activation: str, out: Any = None) -> Any:
        """Z = g(X W + b): one layer's forward pass."""
        return ACTIVATIONS[activation].forward(self.xp, self.xp.matmul(X, W) + b)

    def backprop_activation(self, activation: str, Z: Any, D: Any) -> Any:
        """D ⊙ g'(A) from the layer output Z (may overwrite D on fast paths)."""
        return ACTIVATIONS[activation].backward(self.xp, Z, D)

    def output_delta(self, activation: str, loss: str, Y: Any, T: Any, scale: float, out: Any = None) -> Any:
        """D_L = ∂E/∂A_L with E = scale · Σ_n ℓ_n; (Ŷ − T)·scale for the canonical pairs."""
        if (activation, loss) in CANONICAL_PAIRS:
            return (Y - T) * scale
        G = LOSSES[loss].grad(self.xp, Y, T) * scale
        return ACTIVATIONS[activation].backward(self.xp, Y, G)

    def loss_sum(self, loss: str, Y: Any, T: Any) -> Any:
        """Σ_n ℓ(Ŷ_n, T_n) as a 0-d array on the device."""
        return LOSSES[loss].value(self.xp, Y, T)

    def sum_rows(self, D: Any, out: Any = None) -> Any:
        """Column sums of D (the bias gradient)."""
        return self.xp.sum(D, axis=0)

    def take_rows(self, A: Any, idx: Any, out: Any = None) -> Any:
        """A[idx] along the first axis (batch gather on the device)."""
        return self.xp.take(A, idx, axis=0)

    def add_scaled(self, y: Any, alpha: float, x: Any) -> Any:
        """y + alpha·x (in place where the Ops can)."""
        y += alpha * x
        return y

    def scale(self, y: Any, alpha: float) -> Any:
        """alpha·y (in place where the Ops can)."""
        y *= alpha
        return y

    def sq_norm(self, a: Any) -> Any:
        """‖a‖² as a 0-d array."""
        return self.xp.sum(a * a)

    def all_finite(self, a: Any) -> Any:
        """0-d boolean: every element of ``a`` is finite."""
        return self.xp.all(self.xp.isfinite(a))

    def sgd_update(self, p: Any, g: Any, v: Any, lr: float, momentum: float, nesterov: bool) -> None:
        """In place: v ← μv − ηg; p ← p + v (Nesterov: p ← p + μv − ηg). v is None when μ = 0."""
        if v is None:
            p -= lr * g
            return
        v *= momentum
        v -= lr * g
        if nesterov:
            p += momentum * v - lr * g
        else:
            p += v

    def adam_update(self, p: Any, g: Any, m: Any, v: Any, lr_t: float, beta1: float, beta2: float, eps: float) -> None:
        """In place: m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²; p ← p − η_t m / (√v + ε)."""
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        p -= lr_t * m / (self.xp.sqrt(v) + eps)


def _inplace_sigmoid(xp: Any, A: Any) -> None:
    A *= 0.5
    xp.tanh(A, out=A)
    A += 1.0
    A *= 0.5


def _inplace_softmax(xp: Any, A: Any) -> None:
    A -= A.max(axis=1, keepdims=True)
    xp.exp(A, out=A)
    A /= A.sum(axis=1, keepdims=True)


_INPLACE_FORWARD = {
    "sigmoid": _inplace_sigmoid,
    "tanh": lambda xp, A: xp.tanh(A, out=A),
    "relu": lambda xp, A: xp.maximum(A, 0, out=A),
    "identity": lambda xp, A: None,
    "softmax": _inplace_softmax,
}


class NumpyOps(Ops):
    """Hot paths with ``out=`` buffers and in-place ufuncs (NumPy; CuPy shares the API)."""

    def copy(self, a: Any) -> Any:
        return a.copy()

    def gemm(self, a: Any, b: Any, out: Any = None, trans_a: bool = False, trans_b: bool = False) -> Any:
        return self.xp.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)

    def affine_activate(self, X: Any, W: Any, b: Any, activation: str, out: Any = None) -> Any:
        out = self.xp.matmul(X, W, out=out)
        out += b
        _INPLACE_FORWARD[activation](self.xp, out)
        return out

    def backprop_activation(self, activation: str, Z: Any, D: Any) -> Any:
        xp = self.xp
        if activation == "relu":
            xp.multiply(D, Z > 0, out=D)
        elif activation == "sigmoid":
            D *= Z
            D -= D * Z
        elif activation == "tanh":
            D -= D * Z * Z
        elif activation != "identity":
            return super().backprop_activation(activation, Z, D)
        return D

    def output_delta(self, activation: str, loss: str, Y: Any, T: Any, scale: float, out: Any = None) -> Any:
        if (activation, loss) not in CANONICAL_PAIRS:
            return super().output_delta(activation, loss, Y, T, scale, out)
        out = self.xp.subtract(Y, T, out=out)
        out *= scale
        return out

    def sum_rows(self, D: Any, out: Any = None) -> Any:
        return D.sum(axis=0, out=out)

    def take_rows(self, A: Any, idx: Any, out: Any = None) -> Any:
        return self.xp.take(A, idx, axis=0, out=out)

    def sq_norm(self, a: Any) -> Any:
        flat = a.reshape(-1)
        return self.xp.dot(flat, flat)

    def sgd_update(self, p: Any, g: Any, v: Any, lr: float, momentum: float, nesterov: bool) -> None:
        if v is None:
            g *= -lr
            p += g
            return
        v *= momentum
        g *= -lr
        v += g
        if nesterov:
            g += momentum * v
            p += g
        else:
            p += v

    def adam_update(self, p: Any, g: Any, m: Any, v: Any, lr_t: float, beta1: float, beta2: float, eps: float) -> None:
        xp = self.xp
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        xp.multiply(g, g, out=g)
        g *= 1.0 - beta2
        v += g
        xp.sqrt(v, out=g)
        g += eps
        xp.divide(m, g, out=g)
        g *= -lr_t
        p += g


class CupyOps(NumpyOps):
    """CuPy: the NumPy fast paths (CuPy mirrors the ufunc ``out=`` API) on the device."""
