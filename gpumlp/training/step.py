"""ONE gradient step, used by every loop: the eager epoch, the CUDA-graph device loop and the fused CPU path.

:func:`train_step` is the order of operations, written once:

    batch -> forward -> loss sum -> backward -> reduce across ranks -> L2 -> clip -> update(param, grad)

What differs between the loops is handed to it as small objects, not written as another copy:

- a **batch source** fills ``ws.Z[0]`` and ``ws.T`` with this step's rows and moves on after the
  update: :class:`RowBatches` gathers rows of a host-chosen slice of the epoch's permutation; the
  device loop's source reads the batch number from device memory and increments it there;
- a **loss total** adds this batch's Σ_n ℓ_n to the epoch's sum on the device
  (:class:`LossTotal`; the device loop's accumulates in one kernel, so capture allocates nothing);
- an **update rule** with ``step(params, grads)``: the optimizer itself, or the device loop's rule
  that reads Adam's step size η_t from a device schedule;
- :class:`StepConfig` says whether the update is fused into the backward pass (the CPU fast path,
  :func:`gpumlp.training.fused.backward_update`): then it takes the optimizer's calls itself, block
  by block, and no full gradient exists, so there is nothing to reduce or clip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .distributed import Reducer
from .fused import backward_update

if TYPE_CHECKING:
    from ..network import MLP
    from ..workspace import Workspace


class BatchSource(Protocol):
    """Puts a step's batch into the workspace and moves on once the step is done."""

    def fill(self, ws: Workspace) -> None:
        """Write this step's inputs into ``ws.Z[0]`` and its targets into ``ws.T``."""

    def advance(self) -> None:
        """The step is done (updated): the next call to :meth:`fill` gives the next batch."""


class LossAccumulator(Protocol):
    """The epoch's loss sum on the device."""

    def add(self, loss: str, Y: Any, T: Any) -> None:
        """Add Σ_n ℓ(Ŷ_n, T_n) of this batch."""


class UpdateRule(Protocol):
    """p ← update(p, g) for every parameter; an :class:`~gpumlp.optimizers.Optimizer` is one."""

    def step(self, params: list[Any], grads: list[Any]) -> None:
        """Apply one update to every parameter, in place."""


@dataclass
class StepConfig:
    """The settings of a step that stay fixed through a ``fit``."""

    loss: str
    l2: float = 0.0
    clip_norm: float | None = None  # c of g ← g·min(1, c/‖g‖), or None
    fused: bool = False  # the update fused into the backward pass (training.fused.can_fuse)
    reducer: Reducer = field(default_factory=Reducer)  # sums the gradients of the ranks


def train_step(
    model: MLP,
    ws: Workspace,
    batch: BatchSource,
    losses: LossAccumulator,
    update: UpdateRule,
    config: StepConfig,
    denom: int,
) -> None:
    """One gradient step on the batch ``batch`` puts into ``ws``, with the mean over ``denom`` rows.

    ``denom`` is the global batch's row count (a rank holds only its shard of it). ``update`` is
    an :class:`UpdateRule`; on the fused path it must be the optimizer, whose calls the backward
    pass makes. Nothing here reads the device, so a CUDA graph can capture the whole step.
    """
    batch.fill(ws)
    Y = model.forward_into(ws)
    losses.add(config.loss, Y, ws.T)
    if config.fused:
        backward_update(model, ws, ws.T, config.loss, 1.0 / denom, config.l2, update)
    else:
        model.backward_into(ws, ws.T, config.loss, 1.0 / denom)
        config.reducer.reduce_grads(ws)
        model.add_l2(ws, config.l2)
        grads = ws.flat_grad_list()
        if config.clip_norm is not None:
            grads = model.ops.clip_global_norm(grads, config.clip_norm)
        update.step(model.params, grads)
    batch.advance()


class RowBatches:
    """The eager loop's batch source: rows ``perm[lo:hi]`` of (X, T), the slice set by :meth:`select`."""

    def __init__(self, ops: Any, X: Any, T: Any, perm: Any) -> None:
        self.ops, self.X, self.T, self.perm = ops, X, T, perm
        self.idx: Any = None

    def select(self, lo: int, hi: int) -> RowBatches:
        """Make positions [lo, hi) of the permutation the next batch; returns this source."""
        self.idx = self.perm[lo:hi]
        return self

    def fill(self, ws: Workspace) -> None:
        ws.Z[0] = self.ops.take_rows(self.X, self.idx, out=ws.Z[0])
        ws.T = self.ops.take_rows(self.T, self.idx, out=ws.T)

    def advance(self) -> None:
        self.idx = None


class LossTotal:
    """The eager loop's loss sum: a 0-d float64 device array, whatever the model's dtype.

    Each batch's sum (in the model's dtype, over at most ``batch_size`` rows) is added in float64,
    so an epoch of many small float32 batches sums as scikit-learn's does (``dtype`` is kept for
    the callers' signature; the total is float64).
    """

    def __init__(self, ops: Any, dtype: Any) -> None:
        self.ops = ops
        self.total = ops.alloc((), ops.xp.float64)

    def add(self, loss: str, Y: Any, T: Any) -> None:
        self.total += self.ops.loss_sum(loss, Y, T)  # float32 + float64 -> float64 (array API promotion)
