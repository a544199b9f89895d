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
import warnings
from typing import IO, Any

import numpy as np

from ..checkpoint import Checkpoint, check_checkpoint_path, load_checkpoint
from ..data import train_test_split
from ..distributed import Group
from ..network import MLP
from ..pipeline import Pipeline, plain_value, predicted_indices
from ..training import DivergenceError
from ._mpi import join_mpi_job, run_on_ranks
from .datafiles import Table, read_data
from .errors import EXIT_OK, CLIError, Interrupted
from .task import choose_task, describe

DEFAULT_VAL_SPLIT = 0.1  # --val-split when not given: held out for early stopping, if the data allows it
DEFAULT_BATCH = 200  # --batch-size when not given: min(200, samples), as scikit-learn's MLP


def _targets(table: Table, task: str, loss: str, source: str) -> tuple[np.ndarray, list[Any]]:
    """Training targets (class indices or floats) and the sorted class labels."""
    y = np.asarray(table.y)
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
        table = read_data(args.data, args.target, want_target=True, drop=args.drop, delimiter=args.delimiter)
        self.task, self.loss, why = choose_task(table, args.task, args.loss)
        y, self.classes = _targets(table, self.task, self.loss, args.data)
        self.guesses = describe(table, args, self.task, why, self.classes)
        X = table.X
        split = DEFAULT_VAL_SPLIT if args.val_split is None else args.val_split
        self.X_tr, self.y_tr, self.X_val, self.y_val = X, y, None, None
        if split:
            try:
                self.X_tr, self.X_val, self.y_tr, self.y_val = train_test_split(
                    X, y, test_size=split, seed=args.seed, stratify=self.task == "classification"
                )
            except ValueError as exc:
                if args.val_split is not None:
                    raise CLIError(f"--val-split {args.val_split}: {exc}") from None
                self.guesses.append(f"validation: none (a {split:g} split does not fit this data: {exc})")
            else:
                held = "" if args.val_split is not None else "; --val-split to change"
                self.guesses.append(f"validation: {len(self.X_val)} samples ({split:g}) held out{held}")
        standard = args.scale == "standard"
        self.mean = self.X_tr.mean(axis=0) if standard else np.zeros(X.shape[1])
        std = self.X_tr.std(axis=0) if standard else np.ones(X.shape[1])
        self.scale = np.where(std > 0, std, 1.0)
        self.y_mean = self.y_scale = None
        if self.task == "regression" and standard:  # the network learns (y - y_mean) / y_scale
            y2 = self.y_tr.reshape(len(self.y_tr), -1)
            self.y_mean, y_std = y2.mean(axis=0), y2.std(axis=0)
            self.y_scale = np.where(y_std > 0, y_std, 1.0)
        self.n_out, self.output, self.T_tr, self.T_val = _network_targets(
            self.task, self.loss, self.classes, self._scaled(self.y_tr), self._scaled(self.y_val)
        )
        self.meta = {
            "task": self.task,
            "loss": self.loss,
            "classes": self.classes,
            "features": table.features,
            "target": table.target,
            "data": os.path.basename(args.data),
            "scale": args.scale,
        }

    def _scaled(self, y: np.ndarray | None) -> np.ndarray | None:
        if y is None or self.y_mean is None:
            return y
        return ((y.reshape(len(y), -1) - self.y_mean) / self.y_scale).reshape(y.shape)


def _check_train_flags(args: argparse.Namespace) -> None:
    if args.checkpoint_every is not None and not args.checkpoint:
        raise CLIError("--checkpoint-every needs --checkpoint PATH (the file the checkpoints are written to)")
    if args.checkpoint and args.out and os.path.abspath(args.checkpoint) == os.path.abspath(args.out):
        raise CLIError(
            f"--checkpoint and --out both name {args.out!r}; use two files: the checkpoint keeps the training "
            "state for --resume, --out the model for predict and evaluate"
        )
    for flag, path in (("--out", args.out), ("--checkpoint", args.checkpoint)):
        if path:
            check_checkpoint_path(path, flag)  # fail before training, not after it
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


def _interrupted(model: MLP, checkpoint: str | None) -> Interrupted:
    done = len(model.history.get("loss", []))
    if checkpoint and os.path.exists(checkpoint):
        saved = f"; checkpoint in {checkpoint} (continue with --resume {checkpoint})"
    else:
        saved = "; nothing saved (train with --checkpoint PATH to be able to resume)"
    return Interrupted(f"interrupted; the model was rolled back to epoch {done}{saved}")


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
        On Ctrl-C, after the model was rolled back to its last complete epoch.
    """
    _check_train_flags(args)
    if args.plot:
        from ..plotting import check_plot_path

        check_plot_path(args.plot)
    data = TrainingData(args)
    if not args.distributed:
        return _train(args, data, None, out)
    group = join_mpi_job(args)
    return run_on_ranks(group, lambda: _train(args, data, group, out))


def _batch_size(requested: int | None, n_train: int) -> int:
    """``--batch-size``: 0 (not given) min(200, samples), None ('full') all; a larger one is clipped with a warning."""
    if requested is None:
        return n_train
    if requested == 0:
        return min(DEFAULT_BATCH, n_train)
    if requested > n_train:
        warnings.warn(f"--batch-size {requested} is larger than the {n_train} training samples; using {n_train}")
        return n_train
    return requested


def _cli_divergence(exc: DivergenceError) -> DivergenceError:
    """The divergence error with its advice in command-line flags instead of ``fit`` arguments."""
    message = (
        str(exc)
        .replace("lower lr (", "lower --lr (")
        .replace("(e.g. clip_norm=1.0)", "(--clip-norm 1.0)")
        .replace("standardise X and the targets", "keep --scale standard (features and regression targets)")
    )
    return DivergenceError(
        message,
        epoch=exc.epoch,
        loss=exc.loss,
        last_good_epoch=exc.last_good_epoch,
        last_good_loss=exc.last_good_loss,
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _train(args: argparse.Namespace, data: TrainingData, group: Group | None, out: IO[str]) -> int:
    from ..progress import ProgressBar

    root = group is None or group.is_root
    model = MLP(
        [data.X_tr.shape[1], *args.hidden, data.n_out],
        hidden_activation=args.activation,
        output_activation=data.output,
        dtype=args.dtype,
        backend=args.backend,
        seed=args.seed,
    )
    pipe = Pipeline(model, data.meta, data.mean, data.scale, data.y_mean, data.y_scale)
    n_train = data.X_tr.shape[0]
    resume = None if args.resume is None else _resume_checkpoint(args.resume, model, n_train, args.epochs)
    start = 0 if resume is None else resume.epoch
    lr = args.lr if args.lr is not None else (0.001 if args.optimizer == "adam" else 0.01)
    batch_size = _batch_size(args.batch_size, n_train)
    quiet = True if args.no_progress or not root else None  # None: a bar on a terminal, else a line per epoch
    bar = ProgressBar(args.epochs - start, n_train, disable=quiet, desc="train")
    validation = None if data.X_val is None else (pipe.transform(data.X_val).astype(args.dtype), data.T_val)
    t0 = time.perf_counter()
    try:
        history = model.fit(
            pipe.transform(data.X_tr).astype(args.dtype),
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
    except KeyboardInterrupt:
        raise _interrupted(model, args.checkpoint) from None
    except DivergenceError as exc:
        raise _cli_divergence(exc) from None
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    if not root:
        return EXIT_OK
    if args.out:
        pipe.save(args.out)
    _report(args, data, pipe, history, start, seconds, group, out)
    return EXIT_OK


def _report(
    args: argparse.Namespace,
    data: TrainingData,
    pipe: Pipeline,
    history: dict[str, list[float]],
    start: int,
    seconds: float,
    group: Group | None,
    out: IO[str],
) -> None:
    """The summary: what was trained, the losses and scores of the epoch whose weights were kept."""
    model = pipe.model
    for line in data.guesses:  # what was chosen for the user, each with how to choose otherwise
        print(line, file=out)
    epochs = len(history["loss"])
    where = model.backend.name
    if group is not None:
        where += f" x {group.size} MPI process{'es' if group.size > 1 else ''}"
    resumed = "" if start == 0 else f" (resumed after epoch {start} from {args.resume})"
    print(
        f"trained a {_arch(model)} MLP ({args.activation} hidden, {data.output} output, {data.loss}) on {where}: "
        f"{_plural(epochs, 'epoch')}{resumed} in {seconds:.2f} s, {data.X_tr.shape[0]} training samples",
        file=out,
    )
    kept = epochs
    if args.early_stopping and epochs:
        monitored = history.get("val_loss") or history["loss"]
        kept = int(np.argmin(monitored)) + 1
    line = f"epoch {kept} (kept): loss {history['loss'][kept - 1]:.4f}" if epochs else "no epochs trained"
    if epochs and "val_loss" in history:
        line += f"  val_loss {history['val_loss'][kept - 1]:.4f}"
    line += "  " + _scores(pipe, data)
    print(line, file=out)
    if args.early_stopping and epochs < args.epochs:
        print(
            f"early stopping: no improvement for {_plural(args.patience, 'epoch')}; kept the weights of epoch {kept}",
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


def _scores(pipe: Pipeline, data: TrainingData) -> str:
    """Train (and validation) accuracy for a classifier, R² for a regressor, of the model as kept."""
    name = "accuracy" if pipe.classification else "r2"
    text = f"train {name} {_score(pipe, data.X_tr, data.y_tr):.4f}"
    if data.X_val is not None:
        text += f"  val {name} {_score(pipe, data.X_val, data.y_val):.4f}"
    return text


def _score(pipe: Pipeline, X: np.ndarray, y: np.ndarray) -> float:
    if pipe.classification:
        return float(np.mean(predicted_indices(pipe.outputs(X)) == y))
    return float(pipe.evaluate(X, y)["r2"])


def _arch(model: MLP) -> str:
    return "-".join(str(n) for n in model.sizes)
