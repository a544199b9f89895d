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

from ..backends import is_sparse
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

    # A source of weighted batches also has ``weights``: the batch's sample weights after fill.


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
    denom: float,
    *,
    l2: float | None = None,
) -> None:
    """One gradient step on the batch ``batch`` puts into ``ws``: the gradient of
    (1/denom) Σ_n w_n ℓ_n + (λ/2) Σ_l ‖W_l‖².

    ``denom`` is the global batch's row count, or its sum of sample weights (a rank holds only
    its shard of it). ``l2`` is this step's λ (default ``config.l2``); w are the sample weights
    the batch source holds after ``fill`` (its ``weights``; None or none: w_n = 1). ``update``
    is an :class:`UpdateRule`; on the fused path it must be the optimizer, whose calls the
    backward pass makes. Nothing here reads the device, so a CUDA graph can capture the whole step.
    """
    l2 = config.l2 if l2 is None else l2
    batch.fill(ws)
    weights = getattr(batch, "weights", None)
    Y = model.forward_into(ws)
    losses.add(config.loss, Y, ws.T)
    if config.fused:
        backward_update(model, ws, ws.T, config.loss, 1.0 / denom, l2, update, weights)
    else:
        model.backward_into(ws, ws.T, config.loss, 1.0 / denom, weights)
        config.reducer.reduce_grads(ws)
        model.add_l2(ws, l2)
        grads = ws.flat_grad_list()
        if config.clip_norm is not None:
            grads = model.ops.clip_global_norm(grads, config.clip_norm)
        update.step(model.params, grads)
    batch.advance()


class RowBatches:
    """The eager loop's batch source: rows ``perm[lo:hi]`` of (X, T) and of the sample weights
    ``W`` (None: unweighted), the slice set by :meth:`select`; :attr:`weights` is the batch's."""

    def __init__(self, ops: Any, X: Any, T: Any, perm: Any, W: Any = None) -> None:
        self.ops, self.X, self.T, self.perm, self.W = ops, X, T, perm, W
        self.sparse = is_sparse(X)
        self.idx: Any = None
        self.weights: Any = None

    def select(self, lo: int, hi: int) -> RowBatches:
        """Make positions [lo, hi) of the permutation the next batch; returns this source."""
        self.idx = self.perm[lo:hi]
        return self

    def fill(self, ws: Workspace) -> None:
        if self.sparse:  # the batch's rows of the CSR matrix, still sparse
            ws.Z[0] = self.X[self.idx]
        else:
            ws.Z[0] = self.ops.take_rows(self.X, self.idx, out=ws.Z[0])
        ws.T = self.ops.take_rows(self.T, self.idx, out=ws.T)
        if self.W is not None:
            self.weights = self.ops.take_rows(self.W, self.idx)

    def advance(self) -> None:
        self.idx = None
        self.weights = None


class LossTotal:
    """The eager loop's loss sum: a 0-d float64 device array, whatever the model's dtype.

    Each batch's sum (in the model's dtype, over at most ``batch_size`` rows) is added in float64,
    so an epoch of many small float32 batches sums as scikit-learn's does (``dtype`` is kept for
    the callers' signature; the totals are float64).

    By default each batch adds Σ_n ℓ_n. :meth:`prepare` sets what the next batch adds instead:
    ``factor`` · Σ_n w_n ℓ_n (w: the ``weights`` of ``batches`` after their fill), plus
    ``penalty`` · Σ_l ‖W_l‖² of the weights the batch saw (scikit-learn's per-batch L2 term),
    taken before the step's update.
    """

    def __init__(self, ops: Any, dtype: Any, params: list[Any] | None = None, batches: Any = None) -> None:
        self.ops, self.batches = ops, batches
        self.total = ops.alloc((), ops.xp.float64)
        self.weight_matrices = [] if params is None else params[0::2]
        self.penalty_total = ops.alloc((), ops.xp.float64)  # the part of ``total`` the penalty added
        self.prepare()

    def prepare(self, factor: float = 1.0, penalty: float = 0.0) -> None:
        """What the next :meth:`add` sums: see the class docstring."""
        self.factor, self.penalty = factor, penalty

    def add(self, loss: str, Y: Any, T: Any) -> None:
        weights = getattr(self.batches, "weights", None)
        if weights is None:
            s = self.ops.loss_sum(loss, Y, T)
        else:
            s = self.ops.weighted_loss_sum(loss, Y, T, weights)
        self.total += s if self.factor == 1.0 else s * self.factor
        if self.penalty:
            p = sum(self.ops.sq_norm(W) for W in self.weight_matrices) * self.penalty
            self.total += p
            self.penalty_total += p
