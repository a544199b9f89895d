"""The ``gpumlp`` command: ``info``, ``train``, ``predict``, ``evaluate`` and ``bench``.

Data comes from a .csv (header optional; ``--target`` names the label column, default the
last), an .npz (arrays ``X`` and ``y``), an .npy (one 2-D array, target in ``--target`` or the
last column) or a built-in dataset name. ``train`` saves the model as gpumlp's .npz together
with what ``predict`` and ``evaluate`` need: the task, class labels, feature names and the
input standardisation. Bad input is reported as one line on stderr with exit status 2, a
diverged training run with exit status 1, Ctrl-C with 130, SIGTERM / SIGHUP during training
(rolled back like Ctrl-C) with 143 / 129.

The package: this module holds the parser, :func:`main` and the reporting of errors and warnings
as one line; :mod:`.errors` the exit statuses and exceptions; :mod:`.datafiles` the data files;
:mod:`.bundle` the model file's CLI metadata; :mod:`.info`, :mod:`.train`, :mod:`.predict`
(``predict`` and ``evaluate``) and :mod:`.bench` the commands, :mod:`._mpi` the MPI abort policy.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from collections.abc import Sequence
from typing import IO, Any, NoReturn

from .. import __version__
from ..activations import HIDDEN_ACTIVATIONS
from ..backends import BACKEND_NAMES
from ..data import DATASETS
from ..losses import LOSSES
from ..optimizers import OPTIMIZERS
from ._mpi import end_job_early
from .bench import cmd_bench
from .errors import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    REPORTED,
    UNEXPECTED,
    CLIError,
    failure,
    one_line,
)
from .info import cmd_info
from .predict import cmd_evaluate, cmd_predict
from .train import cmd_train

__all__ = [
    "main",
    "build_parser",
    "CLIError",
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "EXIT_BROKEN_PIPE",
]


class _Parser(argparse.ArgumentParser):
    """argparse that raises CLIError (one line, no usage dump) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see `{self.prog} --help`)")


def _hidden(text: str) -> list[int]:
    parts = text.replace(" ", "").split(",")
    try:
        if not all(parts):  # "", "10,,10", "10,": an empty width is a typo, not "no layer"
            raise ValueError
        sizes = [int(s) for s in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths like 256,256, each a positive integer; got {text!r}"
        ) from None
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer widths must be positive; got {text!r}")
    return sizes


def _number(text: str, kind: type, expected: str, ok: Any, bound: str) -> Any:
    """``text`` as a ``kind`` for argparse; ``expected`` names the form, ``ok(value)`` checks ``bound``."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {bound}; got {text}")
    return value


def _positive_int(text: str) -> int:
    return _number(text, int, "a positive integer", lambda v: v > 0, "positive")


def _positive_float(text: str) -> float:
    return _number(text, float, "a positive number", lambda v: 0.0 < v < math.inf, "a positive finite number")


def _fraction(text: str) -> float:
    return _number(text, float, "a number in [0, 1)", lambda v: 0.0 <= v < 1.0, "in [0, 1)")


_AUTO_BATCH = 0  # --batch-size not given: min(200, training samples)


def _names(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated column names or numbers; got {text!r}")
    return names


def _batch(text: str) -> int | None:
    if text == "full":
        return None
    return _number(text, int, "a positive integer or 'full'", lambda v: v > 0, "positive")


def _threshold(text: str) -> float | None:
    if text.lower() == "none":
        return None
    return _number(
        text,
        float,
        "a number > 1 or 'none'",
        lambda v: 1.0 < v < math.inf,
        "> 1 (a factor over the first epoch's loss) or 'none'",
    )


# ----- the parser and main ----------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``gpumlp`` argument parser with its subcommands.

    Returns
    -------
    argparse.ArgumentParser
        A parser that raises :class:`CLIError` on bad arguments instead of exiting; each
        subcommand's namespace has ``func(args, out) -> exit status``.
    """
    parser = _Parser(prog="gpumlp", description="Train and use multilayer perceptrons on NumPy or a CUDA GPU.")
    parser.add_argument("--version", action="version", version=f"gpumlp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_help = f"a .csv, .npz or .npy file, or a built-in dataset: {', '.join(DATASETS)}"
    target_help = "target column: a CSV header name or a column number (default: the last column)"
    drop_help = "CSV columns to leave out, such as ID columns: names or numbers, comma-separated"
    delim_help = "CSV field separator, one character or 'tab' (default: sniffed among , ; tab |)"

    p = sub.add_parser("info", help="backend, device and versions")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train a model and save it")
    p.add_argument("data", help=data_help)
    p.add_argument("--target", help=target_help)
    p.add_argument("--drop", type=_names, default=[], metavar="COL[,COL]", help=drop_help)
    p.add_argument("--delimiter", help=delim_help)
    p.add_argument(
        "--task",
        choices=("classification", "regression"),
        help="default: guessed and printed (text or whole-number targets written without a decimal point, "
        "at most 100 values: classification; else regression)",
    )
    p.add_argument("--hidden", type=_hidden, default=[100], help="hidden layer widths, e.g. 256,256 (default 100)")
    p.add_argument("--activation", default="relu", choices=HIDDEN_ACTIVATIONS, help="hidden activation (default relu)")
    p.add_argument(
        "--loss",
        default="auto",
        choices=("auto", *LOSSES),
        help="auto: cross_entropy for classification, mse for regression",
    )
    p.add_argument("--optimizer", default="adam", choices=OPTIMIZERS, help="(default adam)")
    p.add_argument("--lr", type=float, help="learning rate (default 0.001 for adam, 0.01 for sgd)")
    p.add_argument("--momentum", type=float, default=0.0, help="sgd momentum")
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd)")
    p.add_argument("--l2", type=float, default=0.0, help="L2 weight penalty λ")
    p.add_argument("--epochs", type=_positive_int, default=200, help="most epochs (default 200)")
    p.add_argument(
        "--batch-size",
        type=_batch,
        default=_AUTO_BATCH,
        help="samples per step, or 'full' (default min(200, training samples))",
    )
    p.add_argument(
        "--val-split",
        type=_fraction,
        help="fraction held out for validation and early stopping (default 0.1 where the data allows; 0: none)",
    )
    p.add_argument(
        "--early-stopping",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stop when the validation (else training) loss stalls for --patience epochs and keep the best "
        "epoch's weights (default on)",
    )
    p.add_argument("--patience", type=_positive_int, default=10, help="epochs without improvement (default 10)")
    p.add_argument(
        "--scale",
        default="standard",
        choices=("standard", "none"),
        help="standardise features with the training mean and std (stored in the model)",
    )
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES[:3], help="auto: CuPy when a GPU is there")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="(default float32)")
    p.add_argument("--seed", type=int, default=0, help="weights, shuffling and the validation split (default 0)")
    p.add_argument("--out", default="model.npz", help="model file to write (default model.npz)")
    p.add_argument("--plot", help="save the loss curve to this image file (PNG)")
    p.add_argument(
        "--clip-norm",
        type=_positive_float,
        metavar="C",
        help="scale each step's gradients down to global norm at most C",
    )
    p.add_argument(
        "--divergence-threshold",
        type=_threshold,
        default=1e4,
        metavar="F",
        help="stop (exit status 1) when an epoch's loss exceeds F x max(1, first epoch's loss); "
        "'none': only on NaN/inf (default 1e4)",
    )
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="write the training state (weights, optimizer, RNG, epoch, history) here for --resume",
    )
    p.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        metavar="N",
        help="checkpoint every N epochs (default 1); also at the end, on Ctrl-C and on divergence",
    )
    p.add_argument(
        "--resume",
        metavar="PATH",
        help="continue the run checkpointed in PATH up to --epochs in total; give the data and data "
        "flags of that run (--target, --loss, --val-split, --scale, --seed)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over the ranks of `mpiexec -n N gpumlp train ...` (needs mpi4py: pip install mpi4py mpich)",
    )
    p.add_argument(
        "--mpi-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="--distributed: how long a rank waits for the others (default $GPUMLP_MPI_TIMEOUT or 300)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it only shows on a terminal)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="predict with a saved model")
    p.add_argument("model", help="model .npz written by `gpumlp train` or MLP.save")
    p.add_argument("data", help=data_help)
    p.add_argument("--target", help="a column to drop from the features (the training target is dropped by name)")
    p.add_argument("--drop", type=_names, default=[], metavar="COL[,COL]", help=drop_help)
    p.add_argument("--delimiter", help=delim_help)
    p.add_argument("--proba", action="store_true", help="class probabilities instead of labels")
    p.add_argument("--out", help="write to this .csv or .npy file (default: CSV on stdout)")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES[:3])
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="score a saved model on labelled data")
    p.add_argument("model", help="model .npz written by `gpumlp train` or MLP.save")
    p.add_argument("data", help=data_help)
    p.add_argument("--target", help=target_help + "; a CSV's training target is found by name")
    p.add_argument("--drop", type=_names, default=[], metavar="COL[,COL]", help=drop_help)
    p.add_argument("--delimiter", help=delim_help)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES[:3])
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="run benchmarks/bench_train.py; further arguments go to it", add_help=False)
    p.set_defaults(func=cmd_bench)
    return parser


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"gpumlp: warning: {one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gpumlp`` command; returns the exit status (1: training diverged, 2: bad input, 130: Ctrl-C).

    Errors are one line on stderr, never a traceback (unless ``GPUMLP_DEBUG`` is set, for an
    unexpected one); warnings are one ``gpumlp: warning: ...`` line each.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after ``gpumlp``; default ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 1 when training diverged or an MPI job failed, 2 for bad input, 130 on
        Ctrl-C, 143 / 129 on SIGTERM / SIGHUP during training, 141 when stdout was closed by its
        reader; ``gpumlp bench`` returns the script's.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _main(argv, sys.stdout)


def _main(argv: list[str], out: IO[str]) -> int:
    try:
        args, extra = build_parser().parse_known_args(argv)
        if args.command == "bench":
            args.bench_args = extra
        elif extra:
            raise CLIError(f"unrecognized arguments: {' '.join(extra)} (see `gpumlp {args.command} --help`)")
        return int(args.func(args, out))
    except BrokenPipeError:  # `gpumlp predict ... | head`: the reader left; stop quietly, as `cat` would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush is quiet too
        return EXIT_BROKEN_PIPE
    except (*REPORTED, *UNEXPECTED) as exc:
        if os.environ.get("GPUMLP_DEBUG") and not isinstance(exc, REPORTED):
            raise
        code, line = failure(exc)
        print(line, file=sys.stderr)
        end_job_early(argv, code)  # --distributed: a rank that failed before joining the job ends it
        return code
