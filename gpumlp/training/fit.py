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

from ..backends import is_sparse
from ..checkpoint import Checkpoint, apply_checkpoint, check_checkpoint_path, check_resume, load_checkpoint
from ..memory import check_fits, training_bytes
from ..optimizers import Optimizer, make_optimizer
from ..validation import check_bool, check_number, check_sample_weight
from .compiled_epoch import compiled_loop
from .distributed import Reducer, make_reducer
from .divergence import diverged, divergence_error
from .fused import can_fuse
from .lbfgs import fit_lbfgs
from .start_check import resume_identity, tell_other_ranks_of_early_failure
from .state import EpochState, one_fit_at_a_time
from .step import LossTotal, RowBatches, StepConfig, train_step
from .weighting import check_validation_data, eager_or_device_loop, evaluate

if TYPE_CHECKING:
    from ..network import MLP

Callback = Callable[["MLP", int, dict], "bool | None"]


class ConvergenceWarning(UserWarning):
    """Training reached its epoch limit while the monitored loss was still improving (as scikit-learn's).

    Warned by :func:`fit` with ``early_stopping=True`` when the epochs ran out before ``patience``
    epochs passed without improvement: more epochs would likely give a better model.
    """


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
        sample_weight: np.ndarray | None = None,
        l2_per_sample: bool = False,
    ) -> None:
        self.model, self.optimizer, self.rng = model, optimizer, rng
        # sample weights: on the host for each batch's Σw (a step's denominator), on the device for the gathers
        self.weights = sample_weight
        self.device_weights = None if sample_weight is None else model.to_device(sample_weight)
        self.l2_per_sample = l2_per_sample
        self.l2_loss = 0.0  # the L2 part of the last epoch's loss
        self.sparse_input = False  # X is a sparse matrix (set by fit)
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
        model, config = self.model, self.config
        if self.device_loop is not None:
            loss = self.device_loop.run_epoch(X, T)
            self.l2_loss = model.l2_penalty(config.l2)
            return loss
        n = X.shape[0]
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        rows = RowBatches(model.ops, X, T, model.backend.asarray(order), self.device_weights)
        losses = LossTotal(model.ops, model.xp_dtype, model.params, rows)
        plan = list(self.batches(n))
        sums = None if self.weights is None else np.add.reduceat(self.weights[order], [a for a, _ in plan])
        per_sample = self.l2_per_sample and config.l2 > 0
        for i, (start, stop) in enumerate(plan):
            denom = stop - start if sums is None else float(sums[i])
            if denom == 0:  # a batch whose weights are all zero holds no data: no step
                continue
            l2 = config.l2 / denom if self.l2_per_sample else config.l2
            # the batch adds (rows/Σw)·Σ w ℓ, and with l2_per_sample rows·(λ_b/2)Σ‖W‖² (shared by the ranks)
            losses.prepare((stop - start) / denom, 0.5 * l2 * (stop - start) / config.reducer.size if per_sample else 0)
            lo, hi = config.reducer.shard(start, stop)
            ws = model.workspace(hi - lo, grads=not config.fused, sparse_input=rows.sparse)
            train_step(model, ws, rows.select(lo, hi), losses, self.optimizer, config, denom, l2=l2)
        loss = config.reducer.sum_scalar(losses.total) / n
        if per_sample:
            self.l2_loss = config.reducer.sum_scalar(losses.penalty_total) / n
            return loss
        self.l2_loss = model.l2_penalty(config.l2)
        return loss + self.l2_loss

    def evaluate(self, X: Any, T: Any, W: Any = None) -> float:
        """Mean loss (with the L2 term) on data already on the device: :func:`.weighting.evaluate`."""
        return evaluate(self.model, self.config, X, T, W, self.l2_per_sample)


def _warn_still_improving(epochs: int, history: dict[str, list[float]], waited: int) -> None:
    monitored = history.get("val_loss") or history["loss"]
    best = int(np.argmin(monitored)) + 1
    name = "validation loss" if history.get("val_loss") else "training loss"
    warnings.warn(
        f"training stopped at its limit of {epochs} epochs while the {name} was still improving "
        f"({'its last epoch was its best' if waited == 0 else f'best at epoch {best}'}); "
        "train for more epochs for a better model",
        ConvergenceWarning,
        stacklevel=4,
    )


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


@tell_other_ranks_of_early_failure
@one_fit_at_a_time
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
    sample_weight: Any,
    l2_per_sample: bool,
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
checkpoint, checkpoint_every, resume, cuda_graph, allow_tf32, sample_weight, l2_per_sample, compiled
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
    lbfgs = isinstance(optimizer, str) and optimizer == "lbfgs"  # full batch: training.lbfgs
    opt = None if lbfgs else make_optimizer(optimizer, lr=lr, momentum=momentum, nesterov=nesterov)
    l2_per_sample = check_bool(l2_per_sample, "l2_per_sample")
    Xd, Td, loss = model.check_data(X, Y, loss)
    weights = check_sample_weight(sample_weight, Xd.shape[0])
    batch_size = _check_batch_size(batch_size, Xd.shape[0])
    val = None if validation_data is None else check_validation_data(model, validation_data, loss)
    seed = None if seed is None else check_number(seed, "seed", integer=True, allow_zero=True)
    if lbfgs:
        unsupported = {"comm": comm, "clip_norm": clip_norm, "early_stopping": early_stopping, "resume": resume}
        unsupported.update(checkpoint=checkpoint, cuda_graph=cuda_graph is True, allow_tf32=allow_tf32)
        return fit_lbfgs(model, Xd, Td, loss, l2, l2_per_sample, weights, epochs, val, seed, callbacks, unsupported)
    config = {
        "loss": loss,
        "batch_size": batch_size,
        "shuffle": shuffle,
        "l2": l2,
        "clip_norm": clip_norm,
        "n_samples": int(Xd.shape[0]),
    }
    ck = None
    if resume is not None:  # checked in full before anything of the model changes
        ck = resume if isinstance(resume, Checkpoint) else load_checkpoint(resume)
        check_resume(ck, model, opt, config)
    check_fits(  # what training adds to the model, which is allocated already
        training_bytes(
            model.sizes,
            np.dtype(model.dtype).itemsize,
            batch_size,  # per process; a rank of an MPI job needs less
            len(opt.state_names),
            early_stopping,
        ),
        model.backend,
        f"training an MLP of sizes {list(model.sizes)} with batch_size={batch_size} and optimizer {opt.name!r}",
    )
    reducer = make_reducer(comm, model.backend)
    if seed is not None:
        model.rng = np.random.default_rng(seed)
    if ck is not None:
        apply_checkpoint(ck, model, opt, config, checked=True)
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
        clip_norm=clip_norm,
        divergence_threshold=divergence_threshold,
        resume=resume_identity(ck),
    )
    trainer = Trainer(model, loss, opt, l2, batch_size, shuffle, model.rng, reducer, clip_norm, weights, l2_per_sample)
    if is_sparse(Xd):  # sparse rows: the eager loop, and no fused update (it needs a dense Z_0)
        trainer.sparse_input, trainer.config.fused = True, False
    trainer.device_loop = eager_or_device_loop(trainer, cuda_graph, allow_tf32)
    history: dict[str, list[float]] = {"loss": []}
    if val is not None:
        history["val_loss"] = []
    best, best_snap, waited, start = math.inf, None, 0, 0
    if ck is not None:
        history.update({k: list(v) for k, v in ck.history.items()})
        best = math.inf if ck.best_loss is None else ck.best_loss
        best_snap = None if ck.best_weights is None else [model.to_device(a) for a in ck.best_weights]
        waited, start = ck.waited, ck.epoch
        if ck.config.get("stopped") or (early_stopping and waited >= patience):
            start = max(start, epochs)  # a run that stopped stays stopped: resuming it trains no further
    if trainer.device_loop is None:  # the compiled CPU epoch of small networks (training.compiled_epoch)
        trainer.device_loop = compiled_loop(trainer, compiled, int(Xd.shape[0]), max(epochs - start, 0))
    loop_name = "eager" if trainer.device_loop is None else getattr(trainer.device_loop, "name", "device")
    callbacks = list(callbacks)
    bar = None
    if progress and reducer.is_root:
        from ..progress import ProgressBar

        bar = ProgressBar(max(epochs - start, 0), Xd.shape[0])
        callbacks.append(bar)
    good = EpochState(model, opt)  # the last complete, finite epoch: what a divergence or Ctrl-C returns to
    good.capture(start, best, waited, best_snap)
    path = checkpoint if reducer.is_root else None
    good.signals.install()  # Ctrl-C interrupts once; signals after it wait until the rollback is done
    try:
        for epoch in range(start + 1, epochs + 1):
            t0 = time.perf_counter()
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a divergence is reported below
                train_loss = trainer.run_epoch(Xd, Td)
                why = diverged(model, train_loss, history["loss"], divergence_threshold)
            if why:
                steps = f"optimizer step {opt.t}" if opt.t == good.t + 1 else f"optimizer steps {good.t + 1}-{opt.t}"
                good.rollback(history, path, config)
                model.history = history
                raise divergence_error(epoch, steps, why, train_loss, good, history, opt.lr, path)
            history["loss"].append(train_loss)
            logs: dict[str, Any] = {
                "loss": train_loss,
                "l2_loss": trainer.l2_loss,
                "time": time.perf_counter() - t0,
                "loop": loop_name,
            }
            if val is not None:
                logs["val_loss"] = trainer.evaluate(*val)
                history["val_loss"].append(logs["val_loss"])
            stop = any([bool(cb(model, epoch, logs)) for cb in callbacks])  # every callback sees every epoch
            if early_stopping:
                monitored = logs.get("val_loss", train_loss)
                if monitored < best:
                    best, best_snap, waited = monitored, model.snapshot(), 0
                else:
                    waited += 1
                    stop = stop or waited >= patience
            good.capture(epoch, best, waited, best_snap)
            if path is not None and (epoch % checkpoint_every == 0 or stop or epoch == epochs):
                good.save(path, history, {**config, "stopped": True} if stop else config)
            if stop:
                break
        else:
            if early_stopping and waited < patience and len(history["loss"]) > start:
                _warn_still_improving(epochs, history, waited)
    except KeyboardInterrupt:
        good.rollback(history, path, config)
        model.history = history
        raise
    finally:
        if bar is not None:
            bar.close()
        good.signals.release()
    if early_stopping and waited and best_snap is not None:
        model.restore(best_snap)  # stopped by patience or not, the model ends at its best epoch
    model.history = history
    return history
