"""The ``gpumlp`` command: ``info``, ``train``, ``predict``, ``evaluate`` and ``bench``.

Data comes from a .csv (header optional; ``--target`` names the label column, default the
last), an .npz (arrays ``X`` and ``y``), an .npy (one 2-D array, target in ``--target`` or the
last column) or a built-in dataset name. ``train`` saves the model as gpumlp's .npz together
with what ``predict`` and ``evaluate`` need: the task, class labels, feature names and the
input standardisation. Bad input is reported as one line on stderr with exit status 2, a
diverged training run with exit status 1, Ctrl-C with 130.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import io as _io
import itertools
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import IO, Any, NoReturn, Sequence

import numpy as np

from . import __version__
from .activations import HIDDEN_ACTIVATIONS
from .backend import BACKEND_NAMES, backend_info
from .checkpoint import Checkpoint, check_checkpoint_path, load_checkpoint
from .data import DATASETS, load_dataset, train_test_split
from .distributed import DistributedError, Group
from .distributed import init as init_group
from .io import encode_meta, read_npz, save
from .io import load as load_model
from .losses import LOSSES
from .network import MLP
from .optimizers import OPTIMIZERS
from .training import DivergenceError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, the status of a command whose output pipe was closed
# Extra arrays stored in the model .npz beside the weights ("__" keys: not weights, see gpumlp.io).
CLI_META, CLI_MEAN, CLI_SCALE = "__cli__", "__cli_mean__", "__cli_scale__"
CHECKPOINT_RECORD = "__checkpoint__"  # the array that makes a model file a gpumlp.checkpoint file
HEADER_SAMPLE_ROWS = 1000  # rows of a CSV read to decide whether its first row is a header
MAX_CLASSES_AUTO = 100  # loss="auto": integer targets with at most this many values are classes


class CLIError(Exception):
    """Bad command-line input: printed as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises CLIError (one line, no usage dump) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see `{self.prog} --help`)")


# ----- data loading ----------------------------------------------------------------------
class Table:
    """Features X (float64), target y (or None), and the names read from the source."""

    def __init__(self, X: np.ndarray, y: np.ndarray | None, features: list[str] | None, target: str | None) -> None:
        self.X, self.y, self.features, self.target = X, y, features, target


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _column_index(spec: str, header: list[str] | None, n_cols: int, path: str) -> int:
    """Column ``spec`` (a header name or an integer index, negative from the end) as an index."""
    if header is not None and spec in header:
        return header.index(spec)
    try:
        index = int(spec)
    except ValueError:
        names = f"; columns are {', '.join(header)}" if header else " (the file has no header row; use a column number)"
        raise CLIError(f"{path}: no column named {spec!r}{names}") from None
    if not -n_cols <= index < n_cols:
        raise CLIError(f"{path}: column {index} is out of range; the file has {n_cols} columns")
    return index % n_cols


def _loadtxt(path: str, skip: int, cols: list[int], header: list[str] | None, dtype: Any) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": the caller says so
            return np.loadtxt(path, delimiter=",", skiprows=skip, usecols=cols, dtype=dtype, quotechar='"', ndmin=2,
                              encoding="utf-8-sig")
    except ValueError as exc:
        m = re.search(r"could not convert string '(.*)' to \w+ at row (\d+), column (\d+)", str(exc))
        if m is None:
            raise CLIError(f"{path}: {exc}") from None
        col = int(m.group(3)) - 1  # NumPy counts the file's columns from 1, whatever usecols is
        name = f"{header[col]!r} (column {col})" if header else f"column {col}"
        if not m.group(1):
            raise CLIError(f"{path}: line {int(m.group(2)) + 1 + skip}: {name} is empty (a missing value); "
                           "fill it in or drop the row") from None
        raise CLIError(
            f"{path}: line {int(m.group(2)) + 1 + skip}: {name} has the non-numeric value {m.group(1)!r}; "
            f"feature columns must be numbers (if it is the target, pass --target {header[col] if header else col})"
        ) from None


def _read_csv(path: str, target: str | None, want_target: bool, known_target: str | None) -> Table:
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: drop the BOM spreadsheets write
        rows = [[c.strip() for c in row] for row in itertools.islice(csv.reader(f), HEADER_SAMPLE_ROWS)]
    if not rows or not rows[0]:
        raise CLIError(f"{path}: the file is empty")
    first = rows[0]
    # The first row is a header when a text cell in it is not among its column's values below; a
    # text label that recurs ("setosa" in a headerless file) is data.
    below = [{row[i] for row in rows[1:] if i < len(row)} for i in range(len(first))]
    header = first if any(c and not _is_number(c) and c not in below[i] for i, c in enumerate(first)) else None
    n_cols = len(first)
    t = None
    if target is not None:
        t = _column_index(target, header, n_cols, path)
    elif header and known_target in header:
        t = header.index(known_target)
    elif want_target:
        t = n_cols - 1
    feature_cols = [i for i in range(n_cols) if i != t]
    if not feature_cols:
        raise CLIError(f"{path}: no feature columns left besides the target column")
    skip = 1 if header else 0
    X = _loadtxt(path, skip, feature_cols, header, np.float64)
    if X.shape[0] == 0:
        raise CLIError(f"{path}: no data rows")
    y = None
    if t is not None:
        y = _loadtxt(path, skip, [t], header, str)[:, 0]
        y = np.char.strip(y)
        empty = np.flatnonzero(y == "")
        if empty.size and want_target:  # predict drops the column whatever it holds
            name = f"{header[t]!r} (column {t})" if header else f"column {t}"
            raise CLIError(f"{path}: line {empty[0] + 1 + skip}: the target {name} is empty (a missing value); "
                           "fill it in or drop the row")
        if all(_is_number(v) for v in y[: min(len(y), 1000)]):
            try:
                y = y.astype(np.float64)
            except ValueError:
                pass
    features = [header[i] for i in feature_cols] if header else None
    return Table(X, y, features, header[t] if header and t is not None else None)


def _read_npz(path: str, want_target: bool) -> Table:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise CLIError(f"{path}: not a readable .npz file ({exc})") from None
    keys = {k.lower(): k for k in arrays}
    if "x" not in keys:
        if len(arrays) == 1 and not want_target:
            return Table(np.asarray(next(iter(arrays.values())), dtype=np.float64), None, None, None)
        raise CLIError(f"{path}: expected arrays named 'X' and 'y'; the file holds {sorted(arrays)}")
    y = arrays[keys["y"]] if "y" in keys else None
    if want_target and y is None:
        raise CLIError(f"{path}: no target array 'y' (the file holds {sorted(arrays)})")
    return Table(np.asarray(arrays[keys["x"]], dtype=np.float64), y, None, "y" if y is not None else None)


def _read_npy(path: str, target: str | None, want_target: bool) -> Table:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CLIError(f"{path}: not a readable .npy file ({exc})") from None
    if data.ndim != 2:
        raise CLIError(f"{path}: expected a 2-D array (samples x columns); got shape {data.shape}")
    t = None
    if target is not None:
        t = _column_index(target, None, data.shape[1], path)
    elif want_target:
        t = data.shape[1] - 1
    cols = [i for i in range(data.shape[1]) if i != t]
    if not cols:
        raise CLIError(f"{path}: no feature columns left besides the target column")
    return Table(np.asarray(data[:, cols], dtype=np.float64), None if t is None else data[:, t], None, None)


def read_data(
    source: str, target: str | None = None, want_target: bool = True, known_target: str | None = None
) -> Table:
    """Load ``source`` (.csv / .npz / .npy path or a built-in dataset name) as a :class:`Table`.

    The target is column ``target`` if given, else a CSV column named ``known_target`` (the
    training target) if there is one, else the last column when ``want_target``.
    """
    if not os.path.exists(source):
        if source in DATASETS:
            X, y = load_dataset(source)
            return Table(np.asarray(X, dtype=np.float64), y, None, "target")
        raise CLIError(f"no such file: {source!r} (nor a built-in dataset: {', '.join(DATASETS)})")
    if os.path.isdir(source):
        raise CLIError(f"{source!r} is a directory, not a data file")
    ext = os.path.splitext(source)[1].lower()
    if ext == ".csv":
        try:
            table = _read_csv(source, target, want_target, known_target)
        except UnicodeDecodeError as exc:
            raise CLIError(f"{source}: not UTF-8 text ({exc}); save the CSV as UTF-8") from None
    elif ext == ".npz":
        table = _read_npz(source, want_target)
    elif ext == ".npy":
        table = _read_npy(source, target, want_target)
    else:
        raise CLIError(f"{source!r}: unsupported data file type {ext or '(none)'!r}; use .csv, .npz or .npy")
    if table.X.ndim != 2 or table.X.shape[0] == 0:
        raise CLIError(f"{source}: expected a non-empty 2-D feature array; got shape {table.X.shape}")
    if not np.isfinite(table.X).all():
        raise CLIError(f"{source}: the features contain missing, NaN or infinite values")
    if table.y is not None and len(table.y) != table.X.shape[0]:
        raise CLIError(f"{source}: {table.X.shape[0]} feature rows but {len(table.y)} targets")
    return table


# ----- the saved model and its CLI metadata ----------------------------------------------
class Bundle:
    """A model plus what the CLI needs around it: task, classes, feature names, scaling."""

    def __init__(self, model: MLP, meta: dict[str, Any], mean: np.ndarray, scale: np.ndarray) -> None:
        self.model, self.meta, self.mean, self.scale = model, meta, mean, scale

    @property
    def classification(self) -> bool:
        return self.meta["task"] == "classification"

    @property
    def classes(self) -> list[Any]:
        return self.meta["classes"]

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.scale

    def save(self, path: str) -> None:
        extra = {CLI_META: encode_meta(self.meta), CLI_MEAN: self.mean, CLI_SCALE: self.scale}
        save(self.model, path, extra=extra)

    @classmethod
    def load(cls, path: str, backend: str) -> "Bundle":
        if not os.path.exists(path):
            raise CLIError(f"no such model file: {path!r}")
        try:
            _, arrays = read_npz(path)
            model = load_model(path, backend=backend)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        if CLI_META in arrays:
            meta = json.loads(arrays[CLI_META].tobytes().decode("utf-8"))
            return cls(model, meta, arrays[CLI_MEAN], arrays[CLI_SCALE])
        if CHECKPOINT_RECORD in arrays:
            raise CLIError(
                f"{path!r} is a training checkpoint, without the standardisation and classes `gpumlp train` "
                f"stores in its --out model; write that with `gpumlp train DATA --resume {path} --out model.npz` "
                "(--epochs at the checkpoint's epoch trains no further)"
            )
        # A model saved from the Python API: infer the task from its output layer.
        n_in, n_out = model.sizes[0], model.sizes[-1]
        classification = model.output_activation in ("softmax", "sigmoid")
        classes = (list(range(n_out)) if n_out > 1 else [0, 1]) if classification else []
        meta = {
            "task": "classification" if classification else "regression", "classes": classes,
            "features": None, "target": None, "loss": model.resolve_loss("auto"),
        }
        return cls(model, meta, np.zeros(n_in), np.ones(n_in))

    def features_of(self, table: Table, source: str) -> np.ndarray:
        """The model's input columns from ``table``, checked against the training features."""
        names, X = self.meta.get("features"), table.X
        if names and table.features and set(names) <= set(table.features):
            X = X[:, [table.features.index(n) for n in names]]
        elif names and table.features:
            missing = [n for n in names if n not in table.features]
            hint = ""
            if table.target in missing:  # the file lacks the training target, so its last column stood in
                hint = (f" ({table.target!r} was taken as the target: the file has no column "
                        f"{self.meta.get('target')!r}; name the target with --target)")
            raise CLIError(f"{source}: missing feature columns {missing[:5]}{' ...' if len(missing) > 5 else ''}{hint}")
        if X.shape[1] != self.model.n_features:
            raise CLIError(
                f"{source}: {X.shape[1]} feature columns, but the model expects {self.model.n_features}"
                f"{' (pass --target to drop the target column)' if X.shape[1] == self.model.n_features + 1 else ''}"
            )
        return self.transform(X)

    def class_indices(self, y: np.ndarray, source: str) -> np.ndarray:
        """Labels ``y`` as indices into the model's classes; unknown labels are an error."""
        classes = self.classes
        lookup = {_label_key(c): i for i, c in enumerate(classes)}
        out = np.empty(len(y), dtype=np.int64)
        for n, v in enumerate(y):
            i = lookup.get(_label_key(v))
            if i is None:
                raise CLIError(
                    f"{source}: label {_plain(v)!r} (row {n + 1}) is not one of the model's classes {classes}"
                )
            out[n] = i
        return out

    def outputs(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(X.astype(self.model.dtype)))

    def probabilities(self, out: np.ndarray) -> np.ndarray:
        """Per-class probabilities from the network output (a single sigmoid means 2 classes)."""
        return np.column_stack([1 - out[:, 0], out[:, 0]]) if out.shape[1] == 1 else out


def _plain(v: Any) -> Any:
    """A NumPy scalar as a plain Python value (JSON-able), whole floats as ints."""
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _label_key(v: Any) -> str:
    v = _plain(v)
    return str(v).strip()


# ----- commands ----------------------------------------------------------------------------
def _pkg_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cmd_info(args: argparse.Namespace, out: IO[str]) -> int:
    """Backend, device and versions."""
    info: dict[str, Any] = {"gpumlp": __version__, "python": platform.python_version()}
    info.update(backend_info(args.backend))
    for pkg in ("scikit-learn", "matplotlib", "tqdm"):
        info.setdefault(pkg, _pkg_version(pkg))
    if args.json:
        print(json.dumps(info, indent=2, default=str), file=out)
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            print(f"{k:<{width}}  {v}", file=out)
    return EXIT_OK


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


def _hidden(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths like 256,256; got {text!r}") from None
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


def _batch(text: str) -> int | None:
    if text == "full":
        return None
    return _number(text, int, "a positive integer or 'full'", lambda v: v > 0, "positive")


def _threshold(text: str) -> float | None:
    if text.lower() == "none":
        return None
    return _number(text, float, "a number > 1 or 'none'", lambda v: 1.0 < v < math.inf,
                   "> 1 (a factor over the first epoch's loss) or 'none'")


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
        raise CLIError(f"{source}: the target has a single class ({_plain(classes[0])!r}); need at least 2")
    return idx.astype(np.int64), [_plain(c) for c in classes]


class TrainingData:
    """What ``train`` derives from the data file and flags: the split, the network's targets and
    the Bundle metadata (task, classes, feature names, standardisation). A ``--resume`` run
    derives the same from the same data and flags, so it needs no copy of them in the checkpoint."""

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
        self.mean = self.X_tr.mean(axis=0) if args.scale == "standard" else np.zeros(X.shape[1])
        std = self.X_tr.std(axis=0) if args.scale == "standard" else np.ones(X.shape[1])
        self.scale = np.where(std > 0, std, 1.0)
        self.n_out, self.output, self.T_tr, self.T_val = _network_targets(
            self.task, self.loss, self.classes, self.y_tr, self.y_val
        )
        self.meta = {
            "task": self.task, "loss": self.loss, "classes": self.classes, "features": table.features,
            "target": table.target, "data": os.path.basename(args.data), "scale": args.scale,
        }


class Interrupted(Exception):
    """Ctrl-C during training (the model rolled back to its last complete epoch): exit status 130."""


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


def _join_mpi_job(args: argparse.Namespace) -> Group:
    """This process's place in the ``mpiexec`` job; selects its GPU, so it comes before the model."""
    try:
        return init_group("mpi", timeout=args.mpi_timeout, backend=args.backend)
    except ImportError as exc:
        raise CLIError(f"--distributed: {exc}") from None


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
    """Train an MLP on a data file or built-in dataset and save it (on rank 0 with --distributed)."""
    _check_train_flags(args)
    if args.plot:
        from .plotting import check_plot_path

        check_plot_path(args.plot)
    data = TrainingData(args)
    if not args.distributed:
        return _train(args, data, None, out)
    group = _join_mpi_job(args)
    try:
        return _train(args, data, group, out)
    except DivergenceError:
        if group.is_root:
            raise
        return EXIT_FAILED  # rank 0 reports it: the loss is summed over the ranks, so every rank stops here
    except (*_REPORTED, *_UNEXPECTED) as exc:
        if group.size == 1 or (os.environ.get("GPUMLP_DEBUG") and not isinstance(exc, _REPORTED)):
            raise  # one process: _main reports it; GPUMLP_DEBUG: the traceback, then the excepthook aborts all
        # Ending only this rank would leave the others waiting in their next collective.
        code, line = _failure(exc)
        print(f"{line} (rank {group.rank} of {group.size})", file=sys.stderr, flush=True)
        group.comm.Abort(code)
        return code  # Abort ends every rank; not reached


def _train(args: argparse.Namespace, data: TrainingData, group: Group | None, out: IO[str]) -> int:
    from .progress import ProgressBar

    root = group is None or group.is_root
    model = MLP(
        [data.X_tr.shape[1], *args.hidden, data.n_out], hidden_activation=args.activation,
        output_activation=data.output, dtype=args.dtype, backend=args.backend, seed=args.seed,
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
            bundle.transform(data.X_tr).astype(args.dtype), data.T_tr, loss=data.loss, optimizer=args.optimizer,
            lr=lr, momentum=args.momentum, nesterov=args.nesterov, l2=args.l2, epochs=args.epochs,
            batch_size=batch_size, validation_data=validation, early_stopping=args.early_stopping,
            patience=args.patience, seed=args.seed, callbacks=[bar], comm=group, clip_norm=args.clip_norm,
            divergence_threshold=args.divergence_threshold, checkpoint=args.checkpoint,
            checkpoint_every=args.checkpoint_every or 1, resume=resume,
        )
    except KeyboardInterrupt:
        raise _interrupted(model, args.checkpoint) from None
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
        from .plotting import plot_history

        plot_history(history, args.plot, title=f"gpumlp {_arch(model)} MLP on {os.path.basename(args.data)}")
        print(f"saved loss curve to {args.plot}", file=out)
    return EXIT_OK


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


def _arch(model: MLP) -> str:
    return "-".join(str(n) for n in model.sizes)


def _accuracy(bundle: Bundle, X: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(_predicted_indices(bundle, bundle.outputs(bundle.transform(X))) == y))


def _predicted_indices(bundle: Bundle, out: np.ndarray) -> np.ndarray:
    return (out[:, 0] > 0.5).astype(np.int64) if out.shape[1] == 1 else np.argmax(out, axis=1)


def _write_table(path: str | None, columns: list[str], rows: np.ndarray, out: IO[str]) -> None:
    """Predictions to .npy (the bare array), .csv, or CSV on stdout when no path is given."""
    if path and path.lower().endswith(".npy"):
        np.save(path, rows[:, 0] if rows.shape[1] == 1 else rows)
        return
    if path and not path.lower().endswith(".csv"):
        raise CLIError(f"--out {path!r}: use a .csv or .npy file name")
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    if rows.dtype.kind == "f":
        writer.writerows([f"{v:.7g}" for v in row] for row in rows.tolist())
    else:
        writer.writerows(rows.tolist())
    if path:
        with open(path, "w", newline="") as f:
            f.write(buf.getvalue())
    else:
        out.write(buf.getvalue())


def cmd_predict(args: argparse.Namespace, out: IO[str]) -> int:
    """Predictions (labels, probabilities or values) for a data file."""
    bundle = Bundle.load(args.model, args.backend)
    table = read_data(args.data, args.target, want_target=False, known_target=bundle.meta.get("target"))
    raw = bundle.outputs(bundle.features_of(table, args.data))
    if bundle.classification:
        if args.proba:
            columns = [f"p_{c}" for c in bundle.classes]
            rows = bundle.probabilities(raw)
        else:
            columns = [table.target or bundle.meta.get("target") or "prediction"]
            rows = np.array(bundle.classes, dtype=object)[_predicted_indices(bundle, raw)].reshape(-1, 1)
            if all(isinstance(c, (int, float)) for c in bundle.classes):
                rows = rows.astype(np.float64 if any(isinstance(c, float) for c in bundle.classes) else np.int64)
            else:
                rows = rows.astype(str)
    else:
        if args.proba:
            raise CLIError("--proba applies to classifiers; this model is a regressor")
        columns = ["prediction"] if raw.shape[1] == 1 else [f"prediction_{i}" for i in range(raw.shape[1])]
        rows = raw
    _write_table(args.out, columns, rows, out)
    if args.out:
        print(f"wrote {rows.shape[0]} predictions to {args.out}", file=sys.stderr)
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace, out: IO[str]) -> int:
    """Accuracy, loss and confusion matrix (classifiers) or MSE and R² (regressors)."""
    bundle = Bundle.load(args.model, args.backend)
    table = read_data(args.data, args.target, want_target=True, known_target=bundle.meta.get("target"))
    X = bundle.features_of(table, args.data).astype(bundle.model.dtype)
    raw = bundle.outputs(X)
    model = bundle.model
    result: dict[str, Any] = {"samples": int(X.shape[0])}
    if bundle.classification:
        idx = bundle.class_indices(table.y, args.data)
        k = len(bundle.classes)
        pred = _predicted_indices(bundle, raw)
        if model.output_activation == "softmax":
            T: np.ndarray = idx
        elif raw.shape[1] == 1:
            T = idx.astype(np.float64)
        else:
            T = np.eye(k)[idx]
        confusion = np.zeros((k, k), dtype=np.int64)
        np.add.at(confusion, (idx, pred), 1)
        result.update(accuracy=float(np.mean(pred == idx)), loss=model.loss(X, T), classes=bundle.classes,
                      confusion_matrix=confusion.tolist())
    else:
        try:
            y = np.asarray(table.y, dtype=np.float64).reshape(raw.shape)
        except ValueError:
            raise CLIError(
                f"{args.data}: targets must be numbers with {raw.shape[1]} column(s) for this regressor"
            ) from None
        ss_res = float(((y - raw) ** 2).sum())
        ss_tot = float(((y - y.mean(axis=0)) ** 2).sum())
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
        result.update(mse=ss_res / y.size, r2=r2, loss=model.loss(X, y))
    if args.json:
        print(json.dumps(result, indent=2), file=out)
        return EXIT_OK
    print(f"samples   {result['samples']}", file=out)
    if bundle.classification:
        print(f"accuracy  {result['accuracy']:.4f}", file=out)
        print(f"loss      {result['loss']:.4f}  ({bundle.meta['loss']})", file=out)
        print("confusion matrix (rows: true class, columns: predicted class)", file=out)
        labels = [str(c) for c in bundle.classes]
        width = max(max(len(s) for s in labels), len(str(int(confusion.max()))), 3)
        print(" " * width + " " + " ".join(f"{s:>{width}}" for s in labels), file=out)
        for label, row in zip(labels, confusion):
            print(f"{label:>{width}} " + " ".join(f"{v:>{width}}" for v in row), file=out)
    else:
        print(f"mse       {result['mse']:.6g}", file=out)
        print(f"r2        {result['r2']:.4f}", file=out)
        print(f"loss      {result['loss']:.6g}  (mse: half the squared error)", file=out)
    return EXIT_OK


def _bench_script() -> Path | None:
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):  # this checkout first
        script = root / "benchmarks" / "bench_train.py"
        if script.is_file():
            return script
    return None


def cmd_bench(args: argparse.Namespace, out: IO[str]) -> int:
    """Run benchmarks/bench_train.py (from a source checkout) with the remaining arguments."""
    script = _bench_script()
    if script is None:
        raise CLIError("benchmarks/bench_train.py not found: `gpumlp bench` runs from a gpumlp source checkout")
    out.flush()
    return subprocess.call([sys.executable, str(script), *args.bench_args])


# ----- the parser and main ----------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``gpumlp`` argument parser with its subcommands."""
    parser = _Parser(prog="gpumlp", description="Train and use multilayer perceptrons on NumPy or a CUDA GPU.")
    parser.add_argument("--version", action="version", version=f"gpumlp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_help = f"a .csv, .npz or .npy file, or a built-in dataset: {', '.join(DATASETS)}"
    target_help = "target column: a CSV header name or a column number (default: the last column)"

    p = sub.add_parser("info", help="backend, device and versions")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train a model and save it")
    p.add_argument("data", help=data_help)
    p.add_argument("--target", help=target_help)
    p.add_argument("--hidden", type=_hidden, default=[128], help="hidden layer widths, e.g. 256,256 (default 128)")
    p.add_argument("--activation", default="relu", choices=HIDDEN_ACTIVATIONS, help="hidden activation (default relu)")
    p.add_argument("--loss", default="auto", choices=("auto", *LOSSES),
                   help="auto: cross_entropy for text or integer targets (classes), else mse (regression)")
    p.add_argument("--optimizer", default="adam", choices=OPTIMIZERS, help="(default adam)")
    p.add_argument("--lr", type=float, help="learning rate (default 0.001 for adam, 0.01 for sgd)")
    p.add_argument("--momentum", type=float, default=0.0, help="sgd momentum")
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd)")
    p.add_argument("--l2", type=float, default=0.0, help="L2 weight penalty λ")
    p.add_argument("--epochs", type=_positive_int, default=20, help="(default 20)")
    p.add_argument("--batch-size", type=_batch, default=64, help="samples per step, or 'full' (default 64)")
    p.add_argument("--val-split", type=_fraction, default=0.0, help="fraction held out for validation (e.g. 0.1)")
    p.add_argument("--early-stopping", action="store_true",
                   help="stop when the validation (else training) loss stalls for --patience epochs")
    p.add_argument("--patience", type=_positive_int, default=5, help="epochs without improvement (default 5)")
    p.add_argument("--scale", default="standard", choices=("standard", "none"),
                   help="standardise features with the training mean and std (stored in the model)")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES[:3], help="auto: CuPy when a GPU is there")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="(default float32)")
    p.add_argument("--seed", type=int, default=0, help="weights, shuffling and the validation split (default 0)")
    p.add_argument("--out", default="model.npz", help="model file to write (default model.npz)")
    p.add_argument("--plot", help="save the loss curve to this image file (PNG)")
    p.add_argument("--clip-norm", type=_positive_float, metavar="C",
                   help="scale each step's gradients down to global norm at most C")
    p.add_argument("--divergence-threshold", type=_threshold, default=1e4, metavar="F",
                   help="stop (exit status 1) when an epoch's loss exceeds F x max(1, first epoch's loss); "
                        "'none': only on NaN/inf (default 1e4)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="write the training state (weights, optimizer, RNG, epoch, history) here for --resume")
    p.add_argument("--checkpoint-every", type=_positive_int, metavar="N",
                   help="checkpoint every N epochs (default 1); also at the end, on Ctrl-C and on divergence")
    p.add_argument("--resume", metavar="PATH",
                   help="continue the run checkpointed in PATH up to --epochs in total; give the data and data "
                        "flags of that run (--target, --loss, --val-split, --scale, --seed)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the ranks of `mpiexec -n N gpumlp train ...` (pip install 'gpumlp[mpi]')")
    p.add_argument("--mpi-timeout", type=_positive_float, metavar="SECONDS",
                   help="--distributed: how long a rank waits for the others (default $GPUMLP_MPI_TIMEOUT or 300)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it only shows on a terminal)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="predict with a saved model")
    p.add_argument("model", help="model .npz written by `gpumlp train` or MLP.save")
    p.add_argument("data", help=data_help)
    p.add_argument("--target", help="a column to drop from the features (the training target is dropped by name)")
    p.add_argument("--proba", action="store_true", help="class probabilities instead of labels")
    p.add_argument("--out", help="write to this .csv or .npy file (default: CSV on stdout)")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES[:3])
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="score a saved model on labelled data")
    p.add_argument("model", help="model .npz written by `gpumlp train` or MLP.save")
    p.add_argument("data", help=data_help)
    p.add_argument("--target", help=target_help + "; a CSV's training target is found by name")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES[:3])
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="run benchmarks/bench_train.py; further arguments go to it", add_help=False)
    p.set_defaults(func=cmd_bench)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"gpumlp: warning: {_one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gpumlp`` command; returns the exit status (1: training diverged, 2: bad input, 130: Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _main(argv, sys.stdout)


_REPORTED = (CLIError, DivergenceError, Interrupted, KeyboardInterrupt)
_UNEXPECTED = (ValueError, TypeError, OSError, ImportError, RuntimeError)  # a traceback with GPUMLP_DEBUG=1


def _failure(exc: BaseException) -> tuple[int, str]:
    """(exit status, the one line for stderr) for an exception that ends the command."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "gpumlp: interrupted"
    if isinstance(exc, Interrupted):
        return EXIT_INTERRUPTED, f"gpumlp: {_one_line(exc)}"
    code = EXIT_FAILED if isinstance(exc, (DivergenceError, DistributedError)) else EXIT_USAGE
    return code, f"gpumlp: error: {_one_line(exc)}"


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
    except (*_REPORTED, *_UNEXPECTED) as exc:
        if os.environ.get("GPUMLP_DEBUG") and not isinstance(exc, _REPORTED):
            raise
        code, line = _failure(exc)
        print(line, file=sys.stderr)
        return code
