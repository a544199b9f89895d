"""The fit loop: device-resident data, shuffled minibatches, history, early stopping.

X and the targets are moved to the device once per ``fit``. Each epoch draws a permutation
from the model's seeded host RNG (so NumPy and CuPy runs see the same batches), uploads it
once, and gathers every batch on the device into reused buffers. The epoch loss is summed
on the device and read once per epoch: no host round-trip inside an epoch.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .network import MLP, Workspace
from .optimizers import Optimizer, make_optimizer
from .validation import check_number

Callback = Callable[[MLP, int, dict], "bool | None"]


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss; the model keeps the last good weights."""


class Trainer:
    """One training run's settings and state; :func:`fit` drives it epoch by epoch."""

    def __init__(
        self, model: MLP, loss: str, optimizer: Optimizer, l2: float, batch_size: int,
        shuffle: bool, rng: np.random.Generator,
    ) -> None:
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.l2 = l2
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = rng
        optimizer.bind(model.params, model.ops)

    def batches(self, n: int) -> Iterable[tuple[int, int]]:
        """(start, stop) row ranges of one epoch."""
        return ((s, min(s + self.batch_size, n)) for s in range(0, n, self.batch_size))

    def step(self, ws: Any, T: Any, denom: int) -> Any:
        """Forward, backward and update on the batch in ``ws``; returns Σ_n ℓ_n (device 0-d)."""
        model = self.model
        Y = model.forward_into(ws)
        batch_loss = model.ops.loss_sum(self.loss, Y, T)
        grads = model.backward_into(ws, T, self.loss, 1.0 / denom)
        model.add_l2(grads, self.l2)
        self.optimizer.step(model.params, grads)
        return batch_loss

    def run_epoch(self, X: Any, T: Any) -> float:
        """One pass over (X, T), already on the device; returns the mean training loss."""
        model, ops = self.model, self.model.ops
        n = X.shape[0]
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        perm = model.backend.asarray(order)
        total = ops.alloc((), model._xp_dtype)
        for start, stop in self.batches(n):
            ws = model.workspace(stop - start)
            idx = perm[start:stop]
            ws.Z[0] = ops.take_rows(X, idx, out=ws.Z[0])
            ws.T = ops.take_rows(T, idx, out=ws.T)
            total += self.step(ws, ws.T, stop - start)
        return float(total) / n + model.l2_penalty(self.l2)

    def evaluate(self, X: Any, T: Any, chunk: int = 8192) -> float:
        """Mean loss (with the L2 term) on data already on the device, in chunks of rows."""
        model = self.model
        total = 0.0
        n = X.shape[0]
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            Y = model.forward_into(Workspace.unbuffered(model, X[start:stop, ...]))
            total += float(model.ops.loss_sum(self.loss, Y, T[start:stop, ...]))
        return total / X.shape[0] + model.l2_penalty(self.l2)

    def snapshot(self) -> list[Any]:
        """Device copies of the parameters."""
        return [self.model.ops.copy(p) for p in self.model.params]

    def restore(self, snap: list[Any]) -> None:
        """Copy a :meth:`snapshot` back into the parameters (which keep their addresses)."""
        for p, s in zip(self.model.params, snap):
            self.model.ops.assign(p, s)


def _check_batch_size(batch_size: int | None, n: int) -> int:
    if batch_size is None:
        return n
    batch_size = check_number(batch_size, "batch_size", integer=True)
    if batch_size > n:
        warnings.warn(f"batch_size={batch_size} is larger than the {n} samples; using {n}", UserWarning, stacklevel=3)
        return n
    return batch_size


def fit(
    model: MLP,
    X: Any,
    Y: Any,
    loss: str = "auto",
    optimizer: "str | Optimizer" = "sgd",
    lr: float = 0.01,
    momentum: float = 0.0,
    nesterov: bool = False,
    l2: float = 0.0,
    epochs: int = 10,
    batch_size: int | None = 32,
    shuffle: bool = True,
    validation_data: tuple[Any, Any] | None = None,
    early_stopping: bool = False,
    patience: int = 5,
    seed: int | None = None,
    progress: bool = False,
    callbacks: Sequence[Callback] = (),
) -> dict[str, list[float]]:
    """Train ``model`` by minibatch gradient descent and return the per-epoch history.

    ``batch_size=None`` is full-batch gradient descent, 1 is stochastic. ``history["loss"]``
    holds the mean training loss of each epoch (L2 term included); ``history["val_loss"]``
    the loss on ``validation_data`` after each epoch. ``early_stopping`` stops once the
    monitored loss (validation if given, else training) has not improved for ``patience``
    epochs, and restores the best weights. ``seed`` reseeds the shuffling RNG; by default
    it continues the model's own RNG. Each callback is called as ``cb(model, epoch, logs)``
    after every epoch; one that returns True stops training.
    """
    lr = check_number(lr, "lr")
    l2 = check_number(l2, "l2", allow_zero=True)
    epochs = check_number(epochs, "epochs", integer=True)
    patience = check_number(patience, "patience", integer=True)
    opt = make_optimizer(optimizer, lr=lr, momentum=momentum, nesterov=nesterov)
    Xd, Td, loss = model._check_data(X, Y, loss)
    batch_size = _check_batch_size(batch_size, Xd.shape[0])
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (X_val, Y_val)")
        val = model._check_data(*validation_data, loss)[:2]
    if seed is not None:
        model.rng = np.random.default_rng(check_number(seed, "seed", integer=True, allow_zero=True))
    trainer = Trainer(model, loss, opt, l2, batch_size, bool(shuffle), model.rng)
    history: dict[str, list[float]] = {"loss": []}
    if val is not None:
        history["val_loss"] = []
    callbacks = list(callbacks)
    if progress:
        from .progress import ProgressBar

        callbacks.append(ProgressBar(epochs, Xd.shape[0]))
    best, best_snap, waited = math.inf, None, 0
    last_good = trainer.snapshot()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        train_loss = trainer.run_epoch(Xd, Td)
        if not math.isfinite(train_loss):
            trainer.restore(last_good)
            good = history["loss"][-1] if history["loss"] else None
            raise DivergenceError(
                f"training diverged in epoch {epoch}: the loss became {train_loss}; last finite epoch loss: {good}. "
                "The model keeps the weights from the end of the last good epoch. Try a smaller lr or gradient clipping."
            )
        last_good = trainer.snapshot()
        history["loss"].append(train_loss)
        logs: dict[str, float] = {"loss": train_loss, "time": time.perf_counter() - t0}
        if val is not None:
            logs["val_loss"] = trainer.evaluate(*val)
            history["val_loss"].append(logs["val_loss"])
        stop = any(cb(model, epoch, logs) for cb in callbacks)
        if early_stopping:
            monitored = logs.get("val_loss", train_loss)
            if monitored < best:
                best, best_snap, waited = monitored, trainer.snapshot(), 0
            else:
                waited += 1
                if waited >= patience:
                    trainer.restore(best_snap)
                    stop = True
        if stop:
            break
    model.history = history
    return history
