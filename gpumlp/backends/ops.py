"""The reference :class:`Ops`: the few array kernels the math needs, on the Python Array API standard only.

It runs on any conforming namespace (NumPy, CuPy, ``array_api_strict``), accepts ``out=`` and
ignores it: results are always returned, and callers keep the returned array. Optimizer updates
are in place, so parameter arrays never move. The fast Ops (:mod:`.inplace_ops`,
:mod:`.numpy_ops`, :mod:`.cupy_ops`) override these methods, and the tests compare them with
this reference.
"""

from __future__ import annotations

from typing import Any

from ..activations import ACTIVATIONS
from ..losses import CANONICAL_PAIRS, LOSSES


class Ops:
    """Reference kernels on the Array API standard (``out=`` accepted, never required)."""

    # Capability flags: off in the reference, switched on only by the Ops that implement them.
    fused_update = False  # fit may fuse each step into the backward pass (gemm_update, weight_blocks): NumpyOps

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

    def sparse_affine_activate(self, S: Any, W: Any, b: Any, activation: str) -> Any:
        """Z = g(S W + b) for a sparse S (the backend's CSR matrix): a sparse × dense GEMM."""
        return ACTIVATIONS[activation].forward(self.xp, self.xp.asarray(S @ W) + b)

    def sparse_gemm_tn(self, S: Any, D: Any, out: Any = None) -> Any:
        """Sᵀ D for a sparse S (the first layer's weight gradient), dense; written into ``out`` if given."""
        G = self.xp.asarray(S.T @ D)
        if out is None:
            return G
        self.assign(out, G)
        return out

    def backprop_activation(self, activation: str, Z: Any, D: Any, consume_z: bool = False) -> Any:
        """D ⊙ g'(A) from the layer output Z (may overwrite D on fast paths; with
        ``consume_z``, Z too: the caller has no further use for it)."""
        return ACTIVATIONS[activation].backward(self.xp, Z, D)

    def gemm_update(self, p: Any, a: Any, b: Any, alpha: float, beta: float = 1.0, trans_a: bool = False) -> bool:
        """In place p ← β·p + α·op(a)·b in one GEMM, where the Ops can (a weight update
        inside the GEMM that makes its gradient); False, having done nothing, where not."""
        return False

    def weight_blocks(self, n_in: int, n_out: int, itemsize: int) -> list[Any]:
        """Row blocks in which the fused update makes and applies a (n_in, n_out) weight
        gradient of ``itemsize``-byte elements: slices of rows, or [None] for all at once."""
        return [None]

    def output_delta(self, activation: str, loss: str, Y: Any, T: Any, scale: float, out: Any = None) -> Any:
        """D_L = ∂E/∂A_L with E = scale · Σ_n ℓ_n; (Ŷ − T)·scale for the canonical pairs."""
        if (activation, loss) in CANONICAL_PAIRS:
            return (Y - T) * scale
        G = LOSSES[loss].grad(self.xp, Y, T) * scale
        return ACTIVATIONS[activation].backward(self.xp, Y, G)

    def loss_sum(self, loss: str, Y: Any, T: Any) -> Any:
        """Σ_n ℓ(Ŷ_n, T_n) as a 0-d array on the device."""
        return LOSSES[loss].value(self.xp, Y, T)

    def weighted_loss_sum(self, loss: str, Y: Any, T: Any, w: Any) -> Any:
        """Σ_n w_n ℓ(Ŷ_n, T_n) as a 0-d array on the device (``w`` of shape (rows,))."""
        xp = self.xp
        if loss == "mse":
            R = Y - T
            E = 0.5 * (R * R)
        else:
            eps = float(xp.finfo(Y.dtype).eps)
            Yc = xp.clip(Y, eps, 1.0 - eps)
            E = T * xp.log(Yc)
            if loss == "binary_cross_entropy":
                E = E + (1.0 - T) * xp.log(1.0 - Yc)
            E = -E
        return xp.sum(xp.reshape(w, (-1, 1)) * E)

    def scale_rows(self, D: Any, w: Any) -> Any:
        """D_n ← w_n D_n for every row n (sample weights on the output delta; in place where the Ops can)."""
        return D * self.xp.reshape(w, (-1, 1))

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

    def total(self, arrays: list[Any]) -> Any:
        """Σ of every element of every array, 0-d: NaN or ±inf when any element is (or the sum overflows)."""
        s = self.xp.sum(arrays[0])
        for a in arrays[1:]:
            s = s + self.xp.sum(a)
        return s

    def clip_global_norm(self, grads: list[Any], max_norm: float) -> list[Any]:
        """Scale every gradient by min(1, c/‖g‖), ‖g‖ the norm of all of them together.

        The scale stays a 0-d device array multiplied into the gradients: no host sync.
        """
        sq = self.sq_norm(grads[0])
        for g in grads[1:]:
            sq = sq + self.sq_norm(g)
        s = max_norm / self.xp.maximum(self.xp.sqrt(sq), max_norm)
        return [self.scale(g, s) for g in grads]

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
