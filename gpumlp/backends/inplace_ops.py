"""InplaceOps: the hot paths that NumPy and CuPy share, with ``out=`` buffers and in-place ufuncs.

Both namespaces write into ``out=`` (matmul, take, sum, the ufuncs) and update arrays in place
(``+=``, ``*=``), which the Array API standard does not promise; written once here, these
paths are the whole of :class:`~gpumlp.backends.numpy_ops.NumpyOps` on arrays its BLAS cannot
take and the fallback of :class:`~gpumlp.backends.cupy_ops.CupyOps` for arrays its kernels
cannot take. Results are still returned: callers keep the returned array.
"""

from __future__ import annotations

from typing import Any

from ..losses import CANONICAL_PAIRS
from .ops import Ops


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


def activate_in_place(xp: Any, activation: str, A: Any) -> None:
    """Overwrite the pre-activation ``A`` with g(A).

    Parameters
    ----------
    xp : module
        The array namespace of ``A`` (NumPy, CuPy, or a stand-in with their ufunc API).
    activation : str
        A name of :data:`gpumlp.activations.ACTIVATIONS`.
    A : array
        The (rows, units) pre-activation, written in place.
    """
    _INPLACE_FORWARD[activation](xp, A)


class InplaceOps(Ops):
    """``out=`` buffers and in-place ufuncs: what NumPy and CuPy share beyond the Array API."""

    _eps: dict[Any, float] = {}  # machine ε per dtype (shared, immutable)

    def copy(self, a: Any) -> Any:
        return a.copy()

    def gemm(self, a: Any, b: Any, out: Any = None, trans_a: bool = False, trans_b: bool = False) -> Any:
        return self.xp.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)

    def affine_activate(self, X: Any, W: Any, b: Any, activation: str, out: Any = None) -> Any:
        out = self.xp.matmul(X, W, out=out)
        out += b
        activate_in_place(self.xp, activation, out)
        return out

    def backprop_activation(self, activation: str, Z: Any, D: Any, consume_z: bool = False) -> Any:
        xp = self.xp
        if activation == "relu":
            if consume_z:  # the 0/1 mask in place of Z: no temporary
                xp.greater(Z, 0, out=Z)
                D *= Z
            else:
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

    def loss_sum(self, loss: str, Y: Any, T: Any) -> Any:
        if loss != "cross_entropy":
            return super().loss_sum(loss, Y, T)
        # −Σ T log clip(Ŷ, ε, 1 − ε), as in losses.py, in four calls (the per-step cost of tiny nets)
        eps = self._eps.get(Y.dtype)
        if eps is None:
            eps = self._eps[Y.dtype] = float(self.xp.finfo(Y.dtype).eps)
        L = self.xp.maximum(Y, eps)
        self.xp.minimum(L, 1.0 - eps, out=L)
        self.xp.log(L, out=L)
        return -self.xp.vdot(T, L)

    def scale_rows(self, D: Any, w: Any) -> Any:
        D *= w.reshape(-1, 1)
        return D

    def sum_rows(self, D: Any, out: Any = None) -> Any:
        return D.sum(axis=0, out=out)

    def take_rows(self, A: Any, idx: Any, out: Any = None) -> Any:
        return self.xp.take(A, idx, axis=0, out=out)

    def add_scaled(self, y: Any, alpha: float, x: Any) -> Any:
        if alpha == 1.0:
            y += x
        else:
            y += alpha * x
        return y

    def sq_norm(self, a: Any) -> Any:
        flat = a.reshape(-1)
        return self.xp.dot(flat, flat)

    def total(self, arrays: list[Any]) -> Any:
        return sum(a.sum() for a in arrays)

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
