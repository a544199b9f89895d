"""What sample weights and the per-sample L2 term add to the fit loop: their validation-data
triple, and the choice of the eager loop where the CUDA-graph device loop cannot serve them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends import is_sparse
from ..validation import check_sample_weight
from ..workspace import Workspace
from .cuda_graph import device_loop

if TYPE_CHECKING:
    from ..network import MLP


def check_validation_data(model: MLP, validation_data: Any, loss: str) -> tuple[Any, Any, Any]:
    """``fit``'s ``validation_data`` as (X_val, T_val, w_val) on the model's device, w_val a host
    array of sample weights or None; TypeError or ValueError naming what is wrong."""
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise TypeError("validation_data must be a pair (X_val, Y_val) or (X_val, Y_val, sample_weight_val)")
    X, T, _ = model.check_data(*validation_data[:2], loss, names=("validation_data X", "validation_data Y"))
    w = None
    if len(validation_data) == 3:
        w = check_sample_weight(validation_data[2], X.shape[0], "validation_data sample_weight")
    return X, T, w


def eager_or_device_loop(trainer: Any, cuda_graph: bool | str, allow_tf32: bool) -> Any:
    """The CUDA-graph device loop for ``trainer`` (cuda_graph.device_loop), or None where the
    eager loop must run: sample weights, sparse X and ``l2_per_sample`` are eager-loop features, so
    ``cuda_graph=True`` / ``allow_tf32=True`` refuse them and ``"auto"`` quietly runs eagerly."""
    why = "sample_weight" if trainer.weights is not None else None
    if trainer.sparse_input:
        why = "sparse X"
    if trainer.l2_per_sample and trainer.config.l2 > 0:
        why = "l2_per_sample=True"
    if why is None:
        return device_loop(trainer, cuda_graph, allow_tf32)
    for name, value in (("cuda_graph", cuda_graph), ("allow_tf32", allow_tf32)):
        if value is True:
            raise ValueError(
                f"{name}=True runs the CUDA-graph device loop, which does not support {why}; pass {name}=False"
            )
    return None


def evaluate(model: MLP, config: Any, X: Any, T: Any, W: Any = None, l2_per_sample: bool = False) -> float:
    """Mean loss (with the L2 term) of ``model`` on data already on the device, in chunks of rows.

    ``config`` is the run's :class:`~gpumlp.training.step.StepConfig` (loss, λ, the ranks'
    reducer). With sample weights ``W`` (a host array; None: none), the weighted mean Σ w ℓ / Σ w.
    With ``l2_per_sample`` the L2 term is λ/(2 Σw)·Σ‖W‖², the whole set taken as one batch.
    """
    chunk = 8192
    total = 0.0
    lo, hi = config.reducer.shard(0, X.shape[0])
    Wd = None if W is None else model.to_device(W)
    for start in range(lo, hi, chunk):
        stop = min(start + chunk, hi)
        rows = X[start:stop] if is_sparse(X) else X[start:stop, ...]  # the Array API wants the ellipsis
        Y = model.forward_into(Workspace.unbuffered(model, rows))
        if Wd is None:
            total += float(model.ops.loss_sum(config.loss, Y, T[start:stop, ...]))
        else:
            total += float(model.ops.weighted_loss_sum(config.loss, Y, T[start:stop, ...], Wd[start:stop]))
    denom = X.shape[0] if W is None else float(np.sum(W))
    l2 = config.l2 / denom if l2_per_sample else config.l2
    return config.reducer.sum_scalar(total) / denom + model.l2_penalty(l2)
