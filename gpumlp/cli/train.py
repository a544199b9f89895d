"""``gpumlp train``: train an MLP on a data file and save it with what predict and evaluate need.

:class:`TrainingData` turns the data file and flags into the task, the loss, the network's
targets, the validation split and the standardisation; a ``--resume`` run derives the same from
the same data and flags. :func:`cmd_train` checks the flags before any work, trains (resuming
from a checkpoint, on every rank of an ``mpiexec`` job with ``--distributed``), turns Ctrl-C
into :class:`~gpumlp.cli.errors.Interrupted`, and reports and saves the result.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import IO, Any

import numpy as np

from .._files import check_output_path
from ..backends import get_backend
from ..checkpoint import Checkpoint, load_checkpoint
from ..data import train_test_split
from ..distributed import Group
from ..memory import check_fits, model_bytes, training_bytes
from ..network import MLP
from ..validation import check_fits_dtype
from ._mpi import join_mpi_job, run_on_ranks
from .bundle import Bundle, plain_value
from .datafiles import Table, read_data
from .errors import EXIT_INTERRUPTED, EXIT_OK, CLIError, Interrupted, Terminated, stop_signals_like_ctrl_c

MAX_CLASSES_AUTO = 100  # loss="auto": integer targets with at most this many values are classes


def _task_and_loss(y: np.ndarray, loss: str) -> tuple[str, str]:
    if loss == "mse":
        return "regression", "mse"
    if loss in ("cross_entropy", "binary_cross_entropy"):
        return "classification", loss
    if y.ndim == 2:
        return "regression", "mse"
    if y.dtype.kind in "biu" or y.dtype.kind in "USO":
        return "classification", "cross_entropy"
    values = np.unique(y)
    if np.all(values == np.round(values)) and len(values) <= MAX_CLASSES_AUTO:
        return "classification", "cross_entropy"
    return "regression", "mse"


def _targets(table: Table, task: str, loss: str, source: str) -> tuple[np.ndarray, list[Any]]:
    """Training targets (class indices or floats) and the sorted class labels."""
    y = table.y
    if task == "regression":
        try:
            return np.asarray(y, dtype=np.float64), []
        except ValueError:
            raise CLIError(
                f"{source}: the target {table.target or ''} is not numeric; regression (--loss mse) needs numbers"
            ) from None
    if y.ndim != 1:
        raise CLIError(f"{source}: classification needs one target column; got shape {y.shape}")
    classes, idx = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise CLIError(f"{source}: the target has a single class ({plain_value(classes[0])!r}); need at least 2")
    return idx.astype(np.int64), [plain_value(c) for c in classes]


def _network_targets(
    task: str, loss: str, classes: list[Any], y_tr: np.ndarray, y_val: np.ndarray | None
) -> tuple[int, str, np.ndarray, np.ndarray | None]:
    """(outputs, output activation, train targets, validation targets) for the task and loss."""
    if task == "regression":
        n_out = 1 if y_tr.ndim == 1 else y_tr.shape[1]
        return n_out, "identity", y_tr, y_val
    k = len(classes)
    if loss == "cross_entropy":
        return k, "softmax", y_tr, y_val
    if k == 2:  # one sigmoid output: P(second class)
        return 1, "sigmoid", y_tr.astype(np.float64), None if y_val is None else y_val.astype(np.float64)
    eye = np.eye(k)  # one sigmoid per class (one-vs-rest)
    return k, "sigmoid", eye[y_tr], None if y_val is None else eye[y_val]


def standardisation(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations of ``X`` that never overflow.

    Each column is divided by its largest absolute value first, so no square exceeds 1 (a
    feature of 1e154 would square to inf in float64 and be zeroed by an infinite scale).

    Parameters
    ----------
    X : numpy.ndarray
        Finite float64 features, shape (samples, features).

    Returns
    -------
    tuple of numpy.ndarray
        The means and the scales, shape (features,) each; a constant column's scale is 1.
    """
    top = np.abs(X).max(axis=0)
    top = np.where(top > 0, top, 1.0)
    Z = X / top
    std = Z.std(axis=0)
    return Z.mean(axis=0) * top, np.where(std > 0, std * top, 1.0)


class TrainingData:
    """What ``train`` derives from the data file and flags: the split, the network's targets and
    the Bundle metadata (task, classes, feature names, standardisation). A ``--resume`` run
    derives the same from the same data and flags, so it needs no copy of them in the checkpoint.

    Parameters
    ----------
    args : argparse.Namespace
        The ``train`` arguments: ``data``, ``target``, ``loss``, ``val_split``, ``seed`` and ``scale``.

    Attributes
    ----------
    task, loss : str
        "classification" or "regression", and the loss (``--loss auto`` resolved).
    classes : list
        The sorted class labels (empty for regression).
    X_tr, y_tr, X_val, y_val : numpy.ndarray
        The raw training and validation features and targets (class indices for classification);
        the validation pair is None without ``--val-split``.
    mean, scale : numpy.ndarray
        The standardisation from the training features (zeros and ones with ``--scale none``).
    n_out, output : int, str
        The network's output width and output activation.
    T_tr, T_val : numpy.ndarray
        The targets the network trains on (T_val None without ``--val-split``).
    meta : dict
        The :class:`~gpumlp.cli.bundle.Bundle` metadata.

    Raises
    ------
    CLIError
        For unreadable data, targets that do not fit the task, or an impossible ``--val-split``.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        table = read_data(args.data, args.target, want_target=True)
        self.task, self.loss = _task_and_loss(np.asarray(table.y), args.loss)
        y, self.classes = _targets(table, self.task, self.loss, args.data)
        X = table.X
        if args.val_split:
            try:
                self.X_tr, self.X_val, self.y_tr, self.y_val = train_test_split(
                    X, y, test_size=args.val_split, seed=args.seed, stratify=self.task == "classification"
                )
            except ValueError as exc:
                raise CLIError(f"--val-split {args.val_split}: {exc}") from None
        else:
            self.X_tr, self.y_tr, self.X_val, self.y_val = X, y, None, None
        if args.scale == "standard":
            self.mean, self.scale = standardisation(self.X_tr)
        else:
            self.mean, self.scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
        self.n_out, self.output, self.T_tr, self.T_val = _network_targets(
            self.task, self.loss, self.classes, self.y_tr, self.y_val
        )
        # Standardised features cannot overflow (|x - mean| / std <= sqrt(samples)); raw ones and targets can.
        checks = [("a feature", X, " or --scale standard")] if args.scale == "none" else []
        checks += [("the target", y, "")] if self.task == "regression" else []
        for what, values, other in checks:
            try:
                check_fits_dtype(values, args.dtype, what, f"train with --dtype float64{other}")
            except ValueError as exc:
                raise CLIError(f"{args.data}: {exc}") from None
        self.meta = {
            "task": self.task,
            "loss": self.loss,
            "classes": self.classes,
            "features": table.features,
            "target": table.target,
            "data": os.path.basename(args.data),
            "scale": args.scale,
        }


def _check_train_flags(args: argparse.Namespace) -> None:
    if args.checkpoint_every is not None and not args.checkpoint:
        raise CLIError("--checkpoint-every needs --checkpoint PATH (the file the checkpoints are written to)")
    if args.checkpoint and args.out and os.path.abspath(args.checkpoint) == os.path.abspath(args.out):
        raise CLIError(
            f"--checkpoint and --out both name {args.out!r}; use two files: the checkpoint keeps the training "
            "state for --resume, --out the model for predict and evaluate"
        )
    data = ("the data file", args.data)
    outputs = (("--out", args.out, (data, ("--resume", args.resume))), ("--checkpoint", args.checkpoint, (data,)))
    for flag, path, inputs in (*outputs, ("--plot", args.plot, (data, ("--resume", args.resume)))):
        if path:  # fail before training, not after it; --checkpoint may be the --resume file it continues
            check_output_path(path, flag, inputs)
    if args.resume and not os.path.isfile(args.resume):
        raise CLIError(f"--resume: no such checkpoint file: {args.resume!r}")
    if args.mpi_timeout is not None and not args.distributed:
        raise CLIError("--mpi-timeout applies to --distributed training")


def _resume_checkpoint(path: str, model: MLP, n_train: int, epochs: int) -> Checkpoint:
    """The ``--resume`` checkpoint, checked against this run's network, training-set size and epochs."""
    ck = load_checkpoint(path)
    sizes = ck.meta.get("sizes")
    if sizes != list(model.sizes):
        raise CLIError(
            f"--resume {path}: the checkpoint holds a {'-'.join(map(str, sizes))} network, this run builds "
            f"{_arch(model)}; use the data, --target, --loss and --hidden of the run that wrote it"
        )
    if ck.config.get("n_samples") != n_train:
        raise CLIError(
            f"--resume {path}: the checkpointed run trained on {ck.config.get('n_samples')} samples, this one has "
            f"{n_train}; use the data file, --val-split and --seed of the run that wrote it"
        )
    if ck.epoch > epochs:
        raise CLIError(
            f"--resume {path}: the checkpoint is at epoch {ck.epoch}, past --epochs {epochs} "
            "(--epochs counts all epochs, the resumed ones included)"
        )
    return ck


def _interrupted(model: MLP, checkpoint: str | None, exc: KeyboardInterrupt) -> Interrupted:
    done = len(model.history.get("loss", []))
    if checkpoint and os.path.exists(checkpoint):
        saved = f"; checkpoint in {checkpoint} (continue with --resume {checkpoint})"
    else:
        saved = "; nothing saved (train with --checkpoint PATH to be able to resume)"
    what, code = (str(exc), 128 + exc.signum) if isinstance(exc, Terminated) else ("interrupted", EXIT_INTERRUPTED)
    return Interrupted(f"{what}; the model was rolled back to epoch {done}{saved}", code)


def cmd_train(args: argparse.Namespace, out: IO[str]) -> int:
    """Train an MLP on a data file or built-in dataset and save it (on rank 0 with --distributed).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``train`` arguments (see ``gpumlp train --help``).
    out : IO[str]
        Where the summary goes (stdout).

    Returns
    -------
    int
        The exit status: 0, or 1 on a rank other than 0 when a distributed run diverged.

    Raises
    ------
    CLIError
        For bad flags, data, plot or output paths, or a ``--resume`` checkpoint that does not fit
        this run; checked before training where possible.
    DivergenceError
        When the loss diverged (the command reports it with exit status 1).
    Interrupted
        On Ctrl-C, SIGTERM or SIGHUP, after the model was rolled back to its last complete epoch.
    """
    with stop_signals_like_ctrl_c():
        if not args.distributed:
            return _cmd_train(args, None, out)
        group = join_mpi_job(args)  # first: a failure on one rank after this ends every rank (run_on_ranks)
        return run_on_ranks(group, lambda: _cmd_train(args, group, out))


def _cmd_train(args: argparse.Namespace, group: Group | None, out: IO[str]) -> int:
    _check_train_flags(args)
    if args.plot:
        from ..plotting import check_plot_path

        check_plot_path(args.plot)
    return _train(args, TrainingData(args), group, out)


def _train(args: argparse.Namespace, data: TrainingData, group: Group | None, out: IO[str]) -> int:
    from ..progress import ProgressBar

    root = group is None or group.is_root
    sizes = [data.X_tr.shape[1], *args.hidden, data.n_out]
    optimizer_arrays = 2 if args.optimizer == "adam" else int(bool(args.momentum))
    batch = min(args.batch_size or data.X_tr.shape[0], data.X_tr.shape[0])
    itemsize = np.dtype(args.dtype).itemsize  # the model and its training, refused before either is allocated
    needed = model_bytes(sizes, itemsize) + training_bytes(
        sizes, itemsize, batch, optimizer_arrays, args.early_stopping
    )
    check_fits(needed, get_backend(args.backend), f"training a {'-'.join(map(str, sizes))} MLP")
    model = MLP(
        sizes,
        hidden_activation=args.activation,
        output_activation=data.output,
        dtype=args.dtype,
        backend=args.backend,
        seed=args.seed,
    )
    bundle = Bundle(model, data.meta, data.mean, data.scale)
    n_train = data.X_tr.shape[0]
    resume = None if args.resume is None else _resume_checkpoint(args.resume, model, n_train, args.epochs)
    start = 0 if resume is None else resume.epoch
    lr = args.lr if args.lr is not None else (0.001 if args.optimizer == "adam" else 0.01)
    batch_size = None if args.batch_size is None else min(args.batch_size, n_train)
    quiet = True if args.no_progress or not root else None  # None: only on a terminal
    bar = ProgressBar(args.epochs - start, n_train, disable=quiet, desc="train")
    validation = None if data.X_val is None else (bundle.transform(data.X_val).astype(args.dtype), data.T_val)
    t0 = time.perf_counter()
    try:
        history = model.fit(
            bundle.transform(data.X_tr).astype(args.dtype),
            data.T_tr,
            loss=data.loss,
            optimizer=args.optimizer,
            lr=lr,
            momentum=args.momentum,
            nesterov=args.nesterov,
            l2=args.l2,
            epochs=args.epochs,
            batch_size=batch_size,
            validation_data=validation,
            early_stopping=args.early_stopping,
            patience=args.patience,
            seed=args.seed,
            callbacks=[bar],
            comm=group,
            clip_norm=args.clip_norm,
            divergence_threshold=args.divergence_threshold,
            checkpoint=args.checkpoint,
            checkpoint_every=args.checkpoint_every or 1,
            resume=resume,
        )
    except KeyboardInterrupt as exc:
        raise _interrupted(model, args.checkpoint, exc) from None
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    if not root:
        return EXIT_OK
    if args.out:
        bundle.save(args.out)
    epochs = len(history["loss"])
    where = model.backend.name
    if group is not None:
        where += f" x {group.size} MPI process{'es' if group.size > 1 else ''}"
    resumed = "" if resume is None else f" (resumed after epoch {start} from {args.resume})"
    print(
        f"trained a {_arch(model)} MLP ({args.activation} hidden, {data.output} output, {data.loss}) on {where}: "
        f"{epochs} epochs{resumed} in {seconds:.2f} s, {n_train} training samples",
        file=out,
    )
    line = f"final loss {history['loss'][-1]:.4f}"
    if "val_loss" in history:
        line += f"  val_loss {history['val_loss'][-1]:.4f}"
    if data.task == "classification":
        line += f"  train accuracy {_accuracy(bundle, data.X_tr, data.y_tr):.4f}"
        if data.X_val is not None:
            line += f"  val accuracy {_accuracy(bundle, data.X_val, data.y_val):.4f}"
    print(line, file=out)
    if args.early_stopping and epochs < args.epochs:
        monitored = history.get("val_loss") or history["loss"]
        print(
            f"early stopping: no improvement for {args.patience} epochs; "
            f"kept the weights of epoch {int(np.argmin(monitored)) + 1}",
            file=out,
        )
    if args.out:
        print(f"saved model to {args.out}", file=out)
    if args.checkpoint:
        print(f"saved checkpoint to {args.checkpoint} (for --resume)", file=out)
    if args.plot:
        from ..plotting import plot_history

        plot_history(history, args.plot, title=f"gpumlp {_arch(model)} MLP on {os.path.basename(args.data)}")
        print(f"saved loss curve to {args.plot}", file=out)
    return EXIT_OK


def _arch(model: MLP) -> str:
    return "-".join(str(n) for n in model.sizes)


def _accuracy(bundle: Bundle, X: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(bundle.predicted_indices(bundle.outputs(bundle.transform(X))) == y))
