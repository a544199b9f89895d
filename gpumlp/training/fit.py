"""The fit loop: device-resident data, shuffled minibatches, history, early stopping, rollback.

X and the targets are moved to the device once per ``fit``. Each epoch draws a permutation
from the model's seeded host RNG (so NumPy and CuPy runs see the same batches), uploads it
once, and gathers every batch on the device into reused buffers. The epoch loss is summed
on the device and read once per epoch: no host round-trip inside an epoch.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checkpoint import Checkpoint, apply_checkpoint, check_checkpoint_path, load_checkpoint
from ..optimizers import Optimizer, make_optimizer
from ..validation import check_bool, check_number
from ..workspace import Workspace
from .compiled_epoch import compiled_loop
from .cuda_graph import device_loop
from .distributed import Reducer, make_reducer
from .fused import can_fuse
from .state import EpochState
from .step import LossTotal, RowBatches, StepConfig, train_step

if TYPE_CHECKING:
    from ..network import MLP

Callback = Callable[["MLP", int, dict], "bool | None"]


class DivergenceError(FloatingPointError):
    """Training diverged (a NaN/inf or exploding epoch loss, or non-finite weights).

    Raised by :func:`fit`, which first puts back the weights, optimizer state and RNG state of
    the last good epoch. ``epoch`` is where it was detected, ``loss`` that epoch's loss,
    ``last_good_epoch`` / ``last_good_loss`` the epoch the model now holds and its loss.
    """

    def __init__(
        self,
        message: str,
        epoch: int = 0,
        loss: float = math.nan,
        last_good_epoch: int = 0,
        last_good_loss: float | None = None,
    ) -> None:
        super().__init__(message)
        self.epoch, self.loss = epoch, loss
        self.last_good_epoch, self.last_good_loss = last_good_epoch, last_good_loss


class Trainer:
    """One training run's settings and state; :func:`fit` drives it epoch by epoch.

    Every step of every loop is :func:`~gpumlp.training.step.train_step` with :attr:`config`:
    the eager epoch here (:meth:`run_epoch`), or the device loop of
    :mod:`gpumlp.training.cuda_graph` that replaces it (CUDA graphs / TF32).
    """

    def __init__(
        self,
        model: MLP,
        loss: str,
        optimizer: Optimizer,
        l2: float,
        batch_size: int,
        shuffle: bool,
        rng: np.random.Generator,
        reducer: Reducer | None = None,
        clip_norm: float | None = None,
    ) -> None:
        self.model, self.optimizer, self.rng = model, optimizer, rng
        self.batch_size, self.shuffle = batch_size, shuffle
        reducer = reducer or Reducer()  # data parallelism: shards batches, sums gradients
        self.config = StepConfig(loss, l2, clip_norm, can_fuse(model.ops, optimizer, reducer.size, clip_norm), reducer)
        self.device_loop: Any = None  # a cuda_graph.DeviceLoop runs the epochs instead (CUDA graphs / TF32)
        optimizer.bind(model.params, model.ops)

    @property
    def reducer(self) -> Reducer:
        """The ranks' gradient reducer (a single process: one that does nothing)."""
        return self.config.reducer

    def batches(self, n: int) -> Iterable[tuple[int, int]]:
        """(start, stop) row ranges of one epoch."""
        return ((s, min(s + self.batch_size, n)) for s in range(0, n, self.batch_size))

    def run_epoch(self, X: Any, T: Any) -> float:
        """One pass over (X, T), already on the device; returns the mean training loss."""
        if self.device_loop is not None:
            return self.device_loop.run_epoch(X, T)
        model, config = self.model, self.config
        n = X.shape[0]
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        rows = RowBatches(model.ops, X, T, model.backend.asarray(order))
        losses = LossTotal(model.ops, model.xp_dtype)
        for start, stop in self.batches(n):
            lo, hi = config.reducer.shard(start, stop)
            ws = model.workspace(hi - lo, grads=not config.fused)
            train_step(model, ws, rows.select(lo, hi), losses, self.optimizer, config, stop - start)
        return config.reducer.sum_scalar(losses.total) / n + model.l2_penalty(config.l2)

    def evaluate(self, X: Any, T: Any, chunk: int = 8192) -> float:
        """Mean loss (with the L2 term) on data already on the device, in chunks of rows."""
        model = self.model
        total = 0.0
        lo, hi = self.reducer.shard(0, X.shape[0])
        for start in range(lo, hi, chunk):
            stop = min(start + chunk, hi)
            Y = model.forward_into(Workspace.unbuffered(model, X[start:stop, ...]))
            total += float(model.ops.loss_sum(self.config.loss, Y, T[start:stop, ...]))
        return self.reducer.sum_scalar(total) / X.shape[0] + model.l2_penalty(self.config.l2)


def _check_batch_size(batch_size: int | None, n: int) -> int:
    if batch_size is None:
        return n
    batch_size = check_number(batch_size, "batch_size", integer=True)
    if batch_size > n:
        warnings.warn(f"batch_size={batch_size} is larger than the {n} samples; using {n}", UserWarning, stacklevel=3)
        return n
    return batch_size


def _check_threshold(threshold: float | None) -> float | None:
    if threshold is None:
        return None
    threshold = check_number(threshold, "divergence_threshold")
    if threshold <= 1:
        raise ValueError(
            f"divergence_threshold must be > 1 (a growth factor over the first epoch's loss) or None; got {threshold!r}"
        )
    return threshold


def _check_callbacks(callbacks: Any) -> list[Callback]:
    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Iterable):
        raise TypeError(f"callbacks must be a list of callables cb(model, epoch, logs); got {type(callbacks).__name__}")
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not callable(cb):
            raise TypeError(
                f"callbacks[{i}] must be callable as cb(model, epoch, logs); got {type(cb).__name__} {cb!r}"
            )
    return callbacks


def _divergence(model: MLP, loss: float, losses: list[float], threshold: float | None) -> str | None:
    """Why an epoch that ended with mean loss ``loss`` counts as diverged; None when it does not.

    One device read besides the loss: the sum of all weights, NaN/inf when any weight is.
    """
    if not math.isfinite(loss):
        return f"the epoch's loss is {loss}"
    if threshold is not None and losses and loss > threshold * max(1.0, losses[0]):
        return (
            f"the epoch's loss {loss:.6g} is over divergence_threshold={threshold:g} times "
            f"max(1, first epoch's loss {losses[0]:.6g})"
        )
    if not math.isfinite(float(model.ops.total(model.params))):
        return "a weight became NaN or infinite"
    return None


def _divergence_error(
    epoch: int,
    steps: str,
    why: str,
    loss: float,
    good: EpochState,
    history: dict[str, list[float]],
    lr: float,
    path: str | None,
) -> DivergenceError:
    last = history["loss"][-1] if history["loss"] else None
    kept = f"the end of epoch {good.epoch} (loss {last:.6g})" if last is not None else "the start of training"
    saved = f" and checkpoint {path!r} holds them" if path is not None else ""
    return DivergenceError(
        f"training diverged in epoch {epoch} ({steps}): {why}. The model keeps its weights from {kept}{saved}. "
        f"To fix: lower lr (this run: {lr:g}), clip gradients (e.g. clip_norm=1.0), or standardise X and the targets.",
        epoch=epoch,
        loss=loss,
        last_good_epoch=good.epoch,
        last_good_loss=last,
    )


def fit(
    model: MLP,
    X: Any,
    Y: Any,
    *,
    loss: str,
    optimizer: str | Optimizer,
    lr: float,
    momentum: float,
    nesterov: bool,
    l2: float,
    epochs: int,
    batch_size: int | None,
    shuffle: bool,
    validation_data: tuple[Any, Any] | None,
    early_stopping: bool,
    patience: int,
    seed: int | None,
    progress: bool,
    callbacks: Sequence[Callback],
    comm: Any,
    clip_norm: float | None,
    divergence_threshold: float | None,
    checkpoint: str | os.PathLike[str] | None,
    checkpoint_every: int,
    resume: str | os.PathLike[str] | Checkpoint | None,
    cuda_graph: bool | str,
    allow_tf32: bool,
    compiled: bool | str,
) -> dict[str, list[float]]:
    """Train ``model`` by minibatch gradient descent and return the per-epoch history.

    The loop behind :meth:`gpumlp.MLP.fit`, which holds every setting's default and documentation
    and passes them all here (``gpumlp.fit(model, X, Y, ...)`` is that method called as a function).
    It drives ``model`` through its methods (``check_data``, ``workspace``, ``forward_into``,
    ``backward_into``, ``params``, ``snapshot``, ...), one :func:`~gpumlp.training.step.train_step`
    per batch.

    Parameters
    ----------
    model : MLP
        The network to train, in place.
    X, Y
        The data, as for :meth:`gpumlp.MLP.fit`.
    loss, optimizer, lr, momentum, nesterov, l2, epochs, batch_size, shuffle, validation_data, \
early_stopping, patience, seed, progress, callbacks, comm, clip_norm, divergence_threshold, \
checkpoint, checkpoint_every, resume, cuda_graph, allow_tf32, compiled
        Keyword-only, all required: the settings documented at :meth:`gpumlp.MLP.fit`.

    Returns
    -------
    dict of str to list of float
        ``"loss"`` (and ``"val_loss"``): one value per epoch, also kept as ``model.history``.

    Raises
    ------
    TypeError, ValueError
        For a bad argument or data.
    DivergenceError
        When an epoch diverges; the model holds the last good epoch again.
    """
    lr = check_number(lr, "lr")
    l2 = check_number(l2, "l2", allow_zero=True)
    epochs = check_number(epochs, "epochs", integer=True)
    patience = check_number(patience, "patience", integer=True)
    shuffle, nesterov = check_bool(shuffle, "shuffle"), check_bool(nesterov, "nesterov")
    early_stopping, progress = check_bool(early_stopping, "early_stopping"), check_bool(progress, "progress")
    clip_norm = None if clip_norm is None else check_number(clip_norm, "clip_norm")
    divergence_threshold = _check_threshold(divergence_threshold)
    checkpoint_every = check_number(checkpoint_every, "checkpoint_every", integer=True)
    checkpoint = None if checkpoint is None else check_checkpoint_path(checkpoint)
    callbacks = _check_callbacks(callbacks)
    opt = make_optimizer(optimizer, lr=lr, momentum=momentum, nesterov=nesterov)
    Xd, Td, loss = model.check_data(X, Y, loss)
    batch_size = _check_batch_size(batch_size, Xd.shape[0])
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (X_val, Y_val)")
        val = model.check_data(*validation_data, loss, names=("validation_data X", "validation_data Y"))[:2]
    reducer = make_reducer(comm, model.backend)
    if seed is not None:
        model.rng = np.random.default_rng(check_number(seed, "seed", integer=True, allow_zero=True))
    config = {
        "loss": loss,
        "batch_size": batch_size,
        "shuffle": shuffle,
        "l2": l2,
        "clip_norm": clip_norm,
        "n_samples": int(Xd.shape[0]),
    }
    ck = None
    if resume is not None:
        ck = resume if isinstance(resume, Checkpoint) else load_checkpoint(resume)
        apply_checkpoint(ck, model, opt, config)
    reducer.start(
        model,
        data=(Xd.shape, None if val is None else val[0].shape),
        batch_size=batch_size,
        epochs=epochs,
        loss=loss,
        optimizer=(opt.name, opt.hyper()),
        l2=l2,
        shuffle=bool(shuffle),
        stopping=(early_stopping, patience),
    )
    trainer = Trainer(model, loss, opt, l2, batch_size, shuffle, model.rng, reducer, clip_norm)
    trainer.device_loop = device_loop(trainer, cuda_graph, allow_tf32)
    history: dict[str, list[float]] = {"loss": []}
    if val is not None:
        history["val_loss"] = []
    best, best_snap, waited, start = math.inf, None, 0, 0
    if ck is not None:
        history.update({k: list(v) for k, v in ck.history.items()})
        best = math.inf if ck.best_loss is None else ck.best_loss
        best_snap = None if ck.best_weights is None else [model.to_device(a) for a in ck.best_weights]
        waited, start = ck.waited, ck.epoch
    if trainer.device_loop is None:  # the compiled CPU epoch of small networks (training.compiled_epoch)
        trainer.device_loop = compiled_loop(trainer, compiled, int(Xd.shape[0]), max(epochs - start, 0))
    loop_name = "eager" if trainer.device_loop is None else getattr(trainer.device_loop, "name", "device")
    callbacks = list(callbacks)
    if progress and reducer.is_root:
        from ..progress import ProgressBar

        callbacks.append(ProgressBar(max(epochs - start, 0), Xd.shape[0]))
    good = EpochState(model, opt)  # the last complete, finite epoch: what a divergence or Ctrl-C returns to
    good.capture(start, best, waited, best_snap)
    path = checkpoint if reducer.is_root else None
    try:
        for epoch in range(start + 1, epochs + 1):
            t0 = time.perf_counter()
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a divergence is reported below
                train_loss = trainer.run_epoch(Xd, Td)
                why = _divergence(model, train_loss, history["loss"], divergence_threshold)
            if why:
                steps = f"optimizer step {opt.t}" if opt.t == good.t + 1 else f"optimizer steps {good.t + 1}-{opt.t}"
                good.rollback(history, path, config)
                model.history = history
                raise _divergence_error(epoch, steps, why, train_loss, good, history, opt.lr, path)
            history["loss"].append(train_loss)
            logs: dict[str, Any] = {"loss": train_loss, "time": time.perf_counter() - t0, "loop": loop_name}
            if val is not None:
                logs["val_loss"] = trainer.evaluate(*val)
                history["val_loss"].append(logs["val_loss"])
            stop = any(cb(model, epoch, logs) for cb in callbacks)
            if early_stopping:
                monitored = logs.get("val_loss", train_loss)
                if monitored < best:
                    best, best_snap, waited = monitored, model.snapshot(), 0
                else:
                    waited += 1
                    stop = stop or waited >= patience
            good.capture(epoch, best, waited, best_snap)
            if path is not None and (epoch % checkpoint_every == 0 or stop or epoch == epochs):
                good.save(path, history, config)
            if stop:
                break
    except KeyboardInterrupt:
        good.rollback(history, path, config)
        model.history = history
        raise
    if early_stopping and waited and best_snap is not None:
        model.restore(best_snap)  # stopped by patience or not, the model ends at its best epoch
    model.history = history
    return history
