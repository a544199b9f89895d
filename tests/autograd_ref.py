"""A tiny tape-based reverse-mode autodiff on NumPy arrays, written for the tests only.

It knows nothing of gpumlp: the MLP is rebuilt from primitive ops (matmul, add, exp, log, ...)
and differentiated by the chain rule op by op, an independent check on model.gradients.
"""

from __future__ import annotations

import numpy as np


class Var:
    def __init__(self, value, parents=()):
        self.value = np.asarray(value, dtype=np.float64)
        self.parents = parents  # tuples (parent Var, function grad_out -> grad contribution)
        self.grad = np.zeros_like(self.value)

    def __add__(self, other):
        other = other if isinstance(other, Var) else Var(other)
        return Var(
            self.value + other.value,
            (
                (self, lambda g: _unbroadcast(g, self.value.shape)),
                (other, lambda g: _unbroadcast(g, other.value.shape)),
            ),
        )

    def __sub__(self, other):
        other = other if isinstance(other, Var) else Var(other)
        return self + other * -1.0

    def __mul__(self, other):
        other = other if isinstance(other, Var) else Var(other)
        return Var(
            self.value * other.value,
            (
                (self, lambda g: _unbroadcast(g * other.value, self.value.shape)),
                (other, lambda g: _unbroadcast(g * self.value, other.value.shape)),
            ),
        )

    def __truediv__(self, other):
        other = other if isinstance(other, Var) else Var(other)
        return self * other.reciprocal()

    def reciprocal(self):
        return Var(1.0 / self.value, ((self, lambda g: -g / self.value**2),))

    def __matmul__(self, other):
        return Var(self.value @ other.value, ((self, lambda g: g @ other.value.T), (other, lambda g: self.value.T @ g)))

    def exp(self):
        out = np.exp(self.value)
        return Var(out, ((self, lambda g: g * out),))

    def log(self):
        return Var(np.log(self.value), ((self, lambda g: g / self.value),))

    def tanh(self):
        out = np.tanh(self.value)
        return Var(out, ((self, lambda g: g * (1.0 - out**2)),))

    def relu(self):
        mask = self.value > 0
        return Var(self.value * mask, ((self, lambda g: g * mask),))

    def sum(self, axis=None, keepdims=False):
        shape = self.value.shape

        def back(g):
            if axis is not None and not keepdims:
                g = np.expand_dims(g, axis)
            return np.broadcast_to(g, shape).copy()

        return Var(self.value.sum(axis=axis, keepdims=keepdims), ((self, back),))

    def backward(self):
        order, seen = [], set()

        def visit(v):
            if id(v) not in seen:
                seen.add(id(v))
                for p, _ in v.parents:
                    visit(p)
                order.append(v)

        visit(self)
        self.grad = np.ones_like(self.value)
        for v in reversed(order):
            for p, fn in v.parents:
                p.grad = p.grad + fn(v.grad)


def _unbroadcast(g, shape):
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, n in enumerate(shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


def sigmoid(v: Var) -> Var:
    return (((v * -1.0).exp()) + 1.0).reciprocal()


def softmax(v: Var) -> Var:
    e = (v + Var(-v.value.max(axis=1, keepdims=True))).exp()  # the shift is a constant
    return e / e.sum(axis=1, keepdims=True)


ACT = {"sigmoid": sigmoid, "tanh": Var.tanh, "relu": Var.relu, "identity": lambda v: v, "softmax": softmax}


def mlp_loss_and_grads(weights, acts, X, T, loss, l2):
    """E = mean loss + (λ/2)Σ‖W‖² and its gradients, by reverse-mode AD over primitives."""
    params = [(Var(W), Var(b)) for W, b in weights]
    Z = Var(X)
    for (W, b), act in zip(params, acts):
        Z = ACT[act](Z @ W + b)
    B = X.shape[0]
    Tv = Var(T)
    if loss == "mse":
        R = Z - Tv
        E = (R * R).sum() * (0.5 / B)
    elif loss == "cross_entropy":
        E = (Tv * Z.log()).sum() * (-1.0 / B)
    else:
        E = (Tv * Z.log() + (Var(1.0) - Tv) * (Var(1.0) - Z).log()).sum() * (-1.0 / B)
    for W, _ in params:
        E = E + (W * W).sum() * (0.5 * l2)
    E.backward()
    return float(E.value), [(W.grad, b.grad) for W, b in params]
