"""Per-batch-shape buffers: layer outputs Z, deltas D, the target batch T and the gradients by layer.

A :class:`Workspace` is made once per batch shape for training and reused by every step of
that shape (the ops write into it with ``out=``); :meth:`Workspace.unbuffered` wraps one input
and lets each op allocate. It knows the model only through ``ops``, ``sizes``, ``params``,
``dtype`` and ``xp_dtype``, so it imports nothing of the network.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .network import MLP


class Workspace:
    """Buffers for one batch: ``Z[l]`` layer outputs (``Z[0]`` the input), ``D[l]`` deltas ∂E/∂A_l,
    ``T`` the target batch and ``grads[l - 1] = (dW_l, db_l)``, the gradients of layer l.

    ``grads`` is empty while the gradients are not allocated (the fused CPU step never needs
    them); :meth:`dW` and :meth:`db` read a layer's gradient by its number l = 1 … L.
    """

    def __init__(self, Z: list[Any], D: list[Any], T: Any, grads: list[tuple[Any, Any]]) -> None:
        self.Z, self.D, self.T, self.grads = Z, D, T, grads
        self.flat_grads: Any = None  # set by allocate_grads: every gradient is a view into this 1-D buffer
        self.grad_views: tuple[tuple[Any, Any], ...] = tuple(grads)
        self.update_plan: list[list[tuple[slice | None, Any]]] | None = None  # see training.fused
        self.bias_grads: list[Any] | None = None  # the fused step's db_l buffers

    @classmethod
    def allocate(cls, model: MLP, rows: int, grads: bool = True) -> Workspace:
        """Buffers for batches of ``rows`` samples; ``grads=False`` leaves out the full gradients."""
        alloc, dtype = model.ops.alloc, model.xp_dtype
        ws = cls(
            [alloc((rows, n), dtype) for n in model.sizes],
            [None] + [alloc((rows, n), dtype) for n in model.sizes[1:]],
            alloc((rows, model.sizes[-1]), dtype),
            [],
        )
        if grads:
            ws.allocate_grads(model)
        return ws

    @classmethod
    def unbuffered(cls, model: MLP, X: Any) -> Workspace:
        """A workspace around the input ``X`` whose other arrays each op allocates."""
        n = len(model.layers)
        return cls([X] + [None] * n, [None] * (n + 1), None, [(None, None)] * n)

    def dW(self, l: int) -> Any:
        """∂E/∂W_l of layer l (1 … L)."""
        return self.grads[l - 1][0]

    def db(self, l: int) -> Any:
        """∂E/∂b_l of layer l (1 … L)."""
        return self.grads[l - 1][1]

    def flat_grad_list(self) -> list[Any]:
        """The gradients in parameter order [dW_1, db_1, dW_2, …] (the optimizer's view)."""
        return [g for pair in self.grads for g in pair]

    def allocate_grads(self, model: MLP) -> None:
        """The full gradient buffers, every one a view into one flat buffer (:attr:`flat_grads`)."""
        shapes = [tuple(p.shape) for p in model.params]
        views, self.flat_grads = _views_of_one_buffer(model.ops, shapes, model.xp_dtype)
        self.grads = list(zip(views[0::2], views[1::2]))
        self.grad_views = tuple(self.grads)

    def allocate_update_plan(self, model: MLP) -> None:
        """For each layer, its weight-gradient blocks as (rows, buffer) (rows None: the whole
        matrix). The blocks of every layer share one buffer."""
        ops, dtype = model.ops, model.xp_dtype
        itemsize = np.dtype(model.dtype).itemsize
        pairs = list(zip(model.sizes[:-1], model.sizes[1:]))
        blocks = [
            [(r, n_in if r is None else r.stop - r.start) for r in ops.weight_blocks(n_in, n_out, itemsize)]
            for n_in, n_out in pairs
        ]
        flat = ops.alloc((max(m * n_out for rows, (_, n_out) in zip(blocks, pairs) for _, m in rows),), dtype)
        self.update_plan = [
            [(r, ops.xp.reshape(flat[: m * n_out], (m, n_out))) for r, m in rows]
            for rows, (_, n_out) in zip(blocks, pairs)
        ]

    def pack_grads(self, ops: Any) -> Any:
        """Every gradient in the one contiguous buffer (for a single allreduce), returned.

        ``grads`` are views into it, so this costs nothing unless an Ops returned a new
        array instead of writing ``out=`` (the reference Ops): that one is copied in.
        """
        for i, (views, pair) in enumerate(zip(self.grad_views, self.grads)):
            for view, g in zip(views, pair):
                if g is not view:
                    ops.assign(view, g)
            self.grads[i] = views
        return self.flat_grads


def _views_of_one_buffer(ops: Any, shapes: list[tuple[int, ...]], dtype: Any, align: int = 64) -> tuple[list[Any], Any]:
    """Zeroed arrays of ``shapes`` that are views into one 1-D buffer, each starting on a
    multiple of ``align`` elements; returns (views, buffer)."""
    sizes = [math.prod(s) for s in shapes]
    starts = [0]
    for n in sizes:
        starts.append(starts[-1] + -(-n // align) * align)
    flat = ops.alloc((starts[-1],), dtype)
    return [ops.xp.reshape(flat[a : a + n], s) for a, n, s in zip(starts, sizes, shapes)], flat
