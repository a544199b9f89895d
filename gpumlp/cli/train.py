"""``gpumlp train``: train an MLP on a data file and save it with what predict and evaluate need.

:class:`~gpumlp.cli.trainingdata.TrainingData` turns the data file and flags into the task, the
loss, the network's targets, the validation split and the standardisation; a ``--resume`` run
derives the same from the same data and flags. :func:`cmd_train` checks the flags before any work, trains (resuming
from a checkpoint, on every rank of an ``mpiexec`` job with ``--distributed``), turns Ctrl-C
into :class:`~gpumlp.cli.errors.Interrupted`, and reports and saves the result.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from typing import IO

import numpy as np

from .._files import check_output_path
from ..backends import get_backend
from ..checkpoint import Checkpoint, load_checkpoint
from ..distributed import Group
from ..memory import check_fits, model_bytes, training_bytes
from ..network import MLP
from ..pipeline import Pipeline, predicted_indices
from ..training import DivergenceError
from ._mpi import join_mpi_job, run_on_ranks
from .errors import EXIT_INTERRUPTED, EXIT_OK, CLIError, Interrupted, Terminated, stop_signals_like_ctrl_c
from .trainingdata import TrainingData

DEFAULT_BATCH = 200  # --batch-size when not given: min(200, samples), as scikit-learn's MLP


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
    pipe = Pipeline(model, data.meta, data.mean, data.scale, data.y_mean, data.y_scale)
    n_train = data.X_tr.shape[0]
    resume = None if args.resume is None else _resume_checkpoint(args.resume, model, n_train, args.epochs)
    start = 0 if resume is None else resume.epoch
    lr = args.lr if args.lr is not None else (0.001 if args.optimizer == "adam" else 0.01)
    batch_size = _batch_size(args.batch_size, n_train)
    quiet = True if args.no_progress or not root else None  # None: a bar on a terminal, else a line per epoch
    bar = ProgressBar(args.epochs - start, n_train, disable=quiet, desc="train")
    try:
        X_tr = pipe.network_input(data.X_tr)
        validation = None if data.X_val is None else (pipe.network_input(data.X_val), data.T_val)
    except ValueError as exc:
        raise CLIError(f"{args.data}: {exc}") from None
    t0 = time.perf_counter()
    try:
        history = model.fit(
            X_tr,
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
