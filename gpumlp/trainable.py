"""The public ``fit`` of a model, without an import of the training code.

:class:`Trainable` gives :class:`~gpumlp.network.MLP` its ``fit`` method: the one place that
states the training settings, their defaults and their documentation. It forwards every setting
to the training loop installed with :func:`install_training_loop`; ``gpumlp/__init__.py``
installs :func:`gpumlp.training.fit`, so the model (the math) never imports the loop, and the
loop never imports the model class. :func:`fit` is the same method called as a function,
``gpumlp.fit(model, X, Y, ...)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checkpoint import Checkpoint
    from .optimizers import Optimizer

TrainingLoop = Callable[..., dict[str, list[float]]]
_installed: list[TrainingLoop] = []


def install_training_loop(loop: TrainingLoop) -> None:
    """Make every :meth:`Trainable.fit` call ``loop(model, X, Y, **settings)``."""
    _installed[:] = [loop]


class Trainable:
    """Mixin for a model that :func:`gpumlp.training.fit` can train (it has MLP's methods)."""

    def fit(
        self,
        X: Any,
        Y: Any,
        loss: str = "auto",
        optimizer: str | Optimizer = "sgd",
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
        callbacks: Sequence[Callable[..., bool | None]] = (),
        comm: Any = None,
        clip_norm: float | None = None,
        divergence_threshold: float | None = 1e4,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 1,
        resume: str | os.PathLike[str] | Checkpoint | None = None,
        cuda_graph: bool | str = False,
        allow_tf32: bool = False,
        sample_weight: Any = None,
        l2_per_sample: bool = False,
        compiled: bool | str = "auto",
    ) -> dict[str, list[float]]:
        """Train by minibatch gradient descent and return the per-epoch history.

        Each epoch draws a permutation of the samples from ``model.rng`` and takes one optimizer
        step per batch of ``batch_size`` rows: forward, loss, backward, (allreduce), L2, clipping,
        update. The data moves to the model's device once; the epoch loss is read once per epoch.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            Inputs, any array kind (NumPy, CuPy, ...).
        Y : array of shape (n_samples,) or (n_samples, n_outputs)
            Targets: class labels (int) or one-hot rows for cross_entropy, values otherwise.
        loss : {"auto", "mse", "cross_entropy", "binary_cross_entropy"}
            "auto": softmax → cross_entropy, sigmoid → binary_cross_entropy, identity → mse.
        optimizer : {"sgd", "adam", "lbfgs"} or Optimizer
            An instance keeps its state (moments, step count) across ``fit`` calls. "lbfgs" is
            full-batch L-BFGS (scipy's L-BFGS-B, :mod:`gpumlp.training.lbfgs`): ``epochs`` is its
            most iterations (scikit-learn's ``max_fun=15000``, ``tol=1e-4``), one history entry per
            iteration; ``lr``, ``batch_size`` and ``shuffle`` do not apply, and ``comm``,
            ``clip_norm``, ``early_stopping``, ``checkpoint``, ``resume`` and the CUDA-graph loop
            are refused.
        lr : float
            Learning rate η (for a named optimizer).
        momentum : float
            SGD's momentum μ in [0, 1).
        nesterov : bool
            Nesterov momentum (SGD with ``momentum`` > 0).
        l2 : float
            λ of the L2 term (λ/2) Σ_l ‖W_l‖² (weights only, not biases). By default λ is per
            batch: every step minimises its batch's mean loss + (λ/2) Σ_l ‖W_l‖², whatever the
            batch's size, and the epoch loss adds the term once, from the end-of-epoch weights.
            See ``l2_per_sample`` for scikit-learn's ``alpha``.
        epochs : int
            Epochs in total (with ``resume``: including those already done).
        batch_size : int or None
            Rows per step; None is full-batch gradient descent, 1 stochastic. Larger than the data:
            clipped with a warning.
        shuffle : bool
            Draw a new permutation each epoch (else the rows in order).
        validation_data : (X_val, Y_val), optional
            Scored after every epoch into ``history["val_loss"]``.
        early_stopping : bool
            Stop once the monitored loss (validation if given, else training) has not improved for
            ``patience`` epochs; the model then gets the best epoch's weights back.
        patience : int
            Epochs without improvement that early stopping waits.
        seed : int, optional
            Reseeds the shuffling RNG; by default training continues the model's own RNG.
        progress : bool
            Show a tqdm progress bar (on rank 0).
        callbacks : sequence of callables
            Each called as ``cb(model, epoch, logs)`` after every epoch; one that returns True stops.
            ``logs`` holds "loss", "time" (seconds), "val_loss" with validation data, and "loop":
            which loop ran the epoch ("eager", "compiled", or the CUDA device loop's name).
        comm : "mpi", mpi4py communicator or gpumlp.distributed.Group, optional
            Train data-parallel across MPI ranks, equal to one process with the same ``batch_size``;
            every rank passes the same data and settings (docs/distributed.md).
        clip_norm : float, optional
            c of g ← g·min(1, c/‖g‖), ‖g‖ the global norm of each step's gradients.
        divergence_threshold : float or None
            An epoch loss above this factor × max(1, first epoch's loss) counts as diverged
            (None: only NaN/inf losses and weights do).
        checkpoint : str or os.PathLike, optional
            File that receives model, optimizer, RNG state, epoch and history atomically every
            ``checkpoint_every`` epochs, at the last epoch, and on Ctrl-C or divergence.
        checkpoint_every : int
            Epochs between checkpoints.
        resume : str, os.PathLike or Checkpoint, optional
            Continue a checkpointed run to ``epochs`` in total, exactly as if it had not stopped
            (its RNG state replaces ``seed``).
        cuda_graph : bool or "auto"
            Capture each train step as a CUDA graph and replay it (CuPy only; "auto": where it can).
        allow_tf32 : bool
            Let float32 matmuls use TF32 tensor cores (CuPy only; about 3 fewer significant digits).
        sample_weight : array of shape (n_samples,) or float, optional
            Per-sample weights w_n (finite, >= 0, not all zero), kept on the device and gathered
            with each batch. A step minimises (1/Σ_b w_n) Σ_b w_n ℓ_n (+ the L2 term): each row's
            output delta and loss are scaled by its weight and the batch is normalised by its
            weights' sum, as scikit-learn's MLPs do; the epoch loss is Σ_b (rows_b/Σ_b w)·Σ_b w ℓ / n.
            A batch whose weights are all zero takes no step. ``validation_data`` may then be
            (X_val, Y_val, w_val). Runs the eager loop (``cuda_graph=True`` refuses it).
        l2_per_sample : bool
            λ per sample, scikit-learn's ``alpha``: a step on a batch of B rows (or weight sum Σw)
            uses λ/B, i.e. minimises (Σ_b w_n ℓ_n + (λ/2) Σ_l ‖W_l‖²)/B, and each batch's penalty
            (λ/2B) Σ‖W_l‖² at the weights it saw is added to its loss before its update; the epoch
            loss is the row-weighted mean of these batch losses (scikit-learn's ``loss_curve_``).
            Runs the eager loop when ``l2`` > 0.
        compiled : bool or "auto"
            Run each epoch as one numba-compiled function (NumPy only, numba from the ``fast`` extra;
            gpumlp.training.compiled_epoch): same batches and results as the step-by-step loop to
            rounding, much faster for small networks. "auto": where it can run, batch_size × the
            number of parameters ≤ 150 000 and the fit is long enough to pay back numba's 1–2 s
            start-up (whatever else the process ran before); True: always (ValueError where it cannot run);
            False: never. ``GPUMLP_JIT=0`` turns numba off everywhere.

        Returns
        -------
        dict of str to list of float
            ``"loss"``: each epoch's mean training loss (L2 term included); ``"val_loss"`` with
            ``validation_data``. Also kept as ``model.history``.

        Raises
        ------
        TypeError, ValueError
            For a bad argument or data; the message names it (GPU options on NumPy included).
        gpumlp.DivergenceError
            When an epoch diverges (NaN/inf or exploding loss, non-finite weights); the model,
            optimizer and RNG hold the last good epoch again (docs/reliability.md).
        KeyboardInterrupt
            Re-raised after rolling the model back to its last complete epoch (and checkpointing it).
        """
        (loop,) = _installed
        return loop(
            self,
            X,
            Y,
            loss=loss,
            optimizer=optimizer,
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            l2=l2,
            epochs=epochs,
            batch_size=batch_size,
            shuffle=shuffle,
            validation_data=validation_data,
            early_stopping=early_stopping,
            patience=patience,
            seed=seed,
            progress=progress,
            callbacks=callbacks,
            comm=comm,
            clip_norm=clip_norm,
            divergence_threshold=divergence_threshold,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            resume=resume,
            cuda_graph=cuda_graph,
            allow_tf32=allow_tf32,
            sample_weight=sample_weight,
            l2_per_sample=l2_per_sample,
            compiled=compiled,
        )


fit = Trainable.fit  # gpumlp.fit(model, X, Y, ...) is model.fit(X, Y, ...)
