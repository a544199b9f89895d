"""Optimizers: SGD (momentum, Nesterov) and Adam, updating parameters in place on the device.

State (velocities, moments) is allocated once, on the parameters' backend, the first time
an optimizer meets a parameter list, and reused by every later step and ``fit`` call on
parameters of the same shapes, dtype and backend; other parameters get fresh state and t = 0.
Gradients are scratch after :meth:`Optimizer.step`: the fast Ops reuse them as buffers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends import to_numpy
from .validation import check_choice, check_number

if TYPE_CHECKING:
    from .backends.ops import Ops

OPTIMIZERS = ("sgd", "adam")


class Optimizer:
    """Base class: holds the learning rate, the step count and per-parameter state.

    Capabilities are class attributes, declared by each optimizer:

    - ``fusable``: :meth:`step` is begin_step + one :meth:`update` per parameter, and
      :meth:`update` accepts row blocks, so the fused CPU path may make those calls itself as
      each gradient block is computed (``gpumlp.training.fused``);
    - ``prescalable``: the update may be p ← p + c·∇E for c = :attr:`prescale` (plain SGD).

    A subclass that defines its own ``step`` is not ``fusable``, and one that defines its own
    ``update`` is not ``prescalable`` (its update must see ∇E), unless it declares so itself.
    """

    name = ""
    state_names: tuple[str, ...] = ()
    fusable = True
    prescalable = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if "step" in own and "fusable" not in own:
            cls.fusable = False
        if "update" in own and "prescalable" not in own:
            cls.prescalable = False

    def __init__(self, lr: float) -> None:
        self.lr = check_number(lr, "lr")
        self.t = 0
        self.state: dict[str, list[Any]] = {}
        self._ops: Ops | None = None

    def bind(self, params: list[Any], ops: Ops) -> None:
        """Allocate state for ``params`` on their backend unless it already fits them."""
        shapes = [(tuple(p.shape), p.dtype) for p in params]
        current = [(tuple(a.shape), a.dtype) for a in next(iter(self.state.values()), [])]
        if ops is self._ops and (not self.state_names or current == shapes):
            return
        self._ops = ops
        self.state = {k: [ops.alloc(tuple(p.shape), p.dtype) for p in params] for k in self.state_names}
        if self.state_names:  # fresh (zero) moments start the step count again: Adam's bias correction needs t = 0
            self.t = 0

    def step(self, params: list[Any], grads: list[Any]) -> None:
        """Apply one update to every parameter, in place."""
        self.begin_step()
        for i, (p, g) in enumerate(zip(params, grads)):
            self.update(i, p, g)

    @property
    def prescale(self) -> float | None:
        """A factor c for which the update is just p ← p + c·∇E, or None (the default).

        The fused path folds c into the output delta, so the gradient blocks it makes are
        already the updates and go to :meth:`apply_prescaled` (one pass instead of two).
        """
        return None

    def apply_prescaled(self, i: int, p: Any, g: Any, rows: slice | None = None) -> None:
        """p ← p + g, where g = c·∇E with c = :attr:`prescale` (see :meth:`update` for rows)."""
        self._ops.add_scaled(p, 1.0, g)

    def begin_step(self) -> None:
        """Start step t + 1; its :meth:`update` calls follow (the fused fast path makes them
        itself, one per gradient block, as soon as each block is computed)."""
        self.t += 1

    def update(self, i: int, p: Any, g: Any, rows: slice | None = None) -> None:
        """Update parameter ``i`` in place from its gradient ``g`` (scratch afterwards).

        With ``rows``, ``p`` and ``g`` are that block of rows of parameter ``i`` and the
        state is sliced to match, so a weight matrix can be updated block by block.
        """
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters, step count and state as NumPy arrays (for checkpoints)."""
        return {
            "name": self.name,
            "hyper": self.hyper(),
            "t": self.t,
            "state": {k: [np.array(to_numpy(a)) for a in v] for k, v in self.state.items()},
        }

    def load_state_dict(self, sd: dict[str, Any], params: list[Any], backend: Any) -> None:
        """Restore what :meth:`state_dict` wrote onto ``backend``, where ``params`` live."""
        if sd.get("name") != self.name:
            raise ValueError(f"optimizer state is for {sd.get('name')!r}, not {self.name!r}")
        self.bind(params, backend.ops)
        self.t = int(sd["t"])
        for k, arrays in sd["state"].items():
            for dst, src in zip(self.state[k], arrays):
                backend.ops.assign(dst, backend.asarray(src, dtype=dst.dtype))

    def hyper(self) -> dict[str, Any]:
        """The hyperparameters, as plain Python values."""
        return {"lr": self.lr}


class SGD(Optimizer):
    """Minibatch gradient descent: v ← μv − η∇E; W ← W + v (Nesterov: W ← W + μv − η∇E)."""

    name = "sgd"
    prescalable = True

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(lr)
        self.momentum = check_number(momentum, "momentum", allow_zero=True, upper=1.0)
        if nesterov and not self.momentum:
            raise ValueError("nesterov=True needs momentum > 0")
        self.nesterov = bool(nesterov)
        self.state_names = ("velocity",) if self.momentum else ()

    @property
    def prescale(self) -> float | None:
        # plain SGD: W ← W + (−η∇E)
        return None if self.momentum or not self.prescalable else -self.lr

    def update(self, i: int, p: Any, g: Any, rows: slice | None = None) -> None:
        v = None
        if self.momentum:
            v = self.state["velocity"][i]
            v = v if rows is None else v[rows]
        self._ops.sgd_update(p, g, v, self.lr, self.momentum, self.nesterov)

    def hyper(self) -> dict[str, Any]:
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction folded into the step size η_t."""

    name = "adam"
    state_names = ("m", "v")

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        super().__init__(lr)
        self.beta1 = check_number(beta1, "beta1", allow_zero=True, upper=1.0)
        self.beta2 = check_number(beta2, "beta2", allow_zero=True, upper=1.0)
        self.eps = check_number(eps, "eps")
        self._lr_t = 0.0  # η_t of the current step, set by begin_step

    def step_size(self, t: int) -> float:
        """η_t = η √(1 − β2^t) / (1 − β1^t), the bias-corrected step size of step t (from 1)."""
        return self.lr * math.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)

    def begin_step(self) -> None:
        self.t += 1
        self._lr_t = self.step_size(self.t)

    def update(self, i: int, p: Any, g: Any, rows: slice | None = None) -> None:
        m, v = self.state["m"][i], self.state["v"][i]
        if rows is not None:
            m, v = m[rows], v[rows]
        self._ops.adam_update(p, g, m, v, self._lr_t, self.beta1, self.beta2, self.eps)

    def hyper(self) -> dict[str, Any]:
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


def make_optimizer(
    optimizer: str | Optimizer, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False
) -> Optimizer:
    """An :class:`Optimizer` from a name ("sgd", "adam") or an existing instance (kept as is)."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    name = check_choice(optimizer, "optimizer", OPTIMIZERS)
    if name == "sgd":
        return SGD(lr=lr, momentum=momentum, nesterov=nesterov)
    if momentum or nesterov:
        raise ValueError("momentum and nesterov apply to optimizer='sgd' only; Adam keeps its own moments")
    return Adam(lr=lr)
