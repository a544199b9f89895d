"""``gpumlp predict`` and ``gpumlp evaluate``: using a model file on a data file.

``predict`` writes labels, class probabilities (``--proba``) or values as CSV on stdout, or to a
.csv or .npy file; ``evaluate`` scores labelled data: accuracy, loss and the confusion matrix for
a classifier, MSE, R² and loss for a regressor, as text or JSON.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from .._files import atomic_write, check_output_path
from ..pipeline import Pipeline, predicted_indices, probabilities
from .bundle import features_of, load_pipeline
from .datafiles import Table, read_data
from .errors import EXIT_OK, CLIError, emit


def _check_out(args: argparse.Namespace) -> None:
    """``--out`` checked before any work: a .csv or .npy name, a writable place, none of the inputs."""
    if args.out is None:
        return
    if not args.out.lower().endswith((".csv", ".npy")):
        raise CLIError(f"--out {args.out!r}: use a .csv or .npy file name")
    check_output_path(args.out, "--out", (("the model file", args.model), ("the data file", args.data)))


def _write_table(path: str | None, columns: list[str], rows: np.ndarray, out: IO[str]) -> None:
    """Predictions to .npy (the bare array), .csv, or CSV on stdout when no path is given; a file is
    written atomically (a failed write leaves the old file as it was)."""
    if path and path.lower().endswith(".npy"):
        atomic_write(path, lambda f: np.save(f, rows[:, 0] if rows.shape[1] == 1 else rows), "--out")
        return
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    if rows.dtype.kind == "f":
        writer.writerows([f"{v:.7g}" for v in row] for row in rows.tolist())
    else:
        writer.writerows(rows.tolist())
    if path:
        atomic_write(path, lambda f: f.write(buf.getvalue().encode("utf-8")), "--out")
    else:
        emit(out, buf.getvalue())


def _run(
    args: argparse.Namespace, want_target: bool, use: Callable[[Pipeline, np.ndarray, Any], Any]
) -> tuple[Pipeline, Table, Any]:
    """Load ``args.model``, read ``args.data`` for it and apply ``use(pipe, X_raw, y)``; errors name the file."""
    pipe = load_pipeline(args.model, args.backend)
    table = read_data(
        args.data,
        args.target,
        want_target=want_target,
        known_target=pipe.meta.get("target"),
        drop=args.drop,
        delimiter=args.delimiter,
    )
    try:
        return pipe, table, use(pipe, features_of(pipe, table, args.data), table.y)
    except ValueError as exc:
        raise CLIError(f"{args.data}: {exc}") from None


def cmd_predict(args: argparse.Namespace, out: IO[str]) -> int:
    """Predictions (labels, probabilities or values) for a data file.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``predict`` arguments: ``model``, ``data``, ``target``, ``proba``, ``out`` and
        ``backend``.
    out : IO[str]
        Where the CSV goes without ``--out`` (stdout).

    Returns
    -------
    int
        The exit status, 0.

    Raises
    ------
    CLIError
        For an unusable model or data file, ``--proba`` with a regressor, or an ``--out`` that is
        neither .csv nor .npy.
    """
    _check_out(args)
    pipe, table, raw = _run(args, want_target=False, use=lambda pipe, X, _: pipe.outputs(X))
    if pipe.classification:
        if args.proba:
            columns = [f"p_{c}" for c in pipe.classes]
            rows = probabilities(raw)
        else:
            columns = [table.target or pipe.meta.get("target") or "prediction"]
            rows = np.array(pipe.classes, dtype=object)[predicted_indices(raw)].reshape(-1, 1)
            if all(isinstance(c, (int, float)) for c in pipe.classes):
                rows = rows.astype(np.float64 if any(isinstance(c, float) for c in pipe.classes) else np.int64)
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
    """Accuracy, loss and confusion matrix (classifiers) or MSE and R² (regressors).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``evaluate`` arguments: ``model``, ``data``, ``target``, ``json`` and ``backend``.
    out : IO[str]
        Where the report goes (stdout).

    Returns
    -------
    int
        The exit status, 0.

    Raises
    ------
    CLIError
        For an unusable model or data file, a label that is not one of the model's classes, or
        regression targets that are not numbers of the model's output width.
    """
    pipe, table, result = _run(args, want_target=True, use=lambda pipe, X, y: pipe.evaluate(X, y))
    if args.json:
        print(json.dumps(result, indent=2), file=out)
        return EXIT_OK
    print(f"samples   {result['samples']}", file=out)
    if pipe.classification:
        confusion = np.array(result["confusion_matrix"])
        print(f"accuracy  {result['accuracy']:.4f}", file=out)
        print(f"loss      {result['loss']:.4f}  ({pipe.meta['loss']})", file=out)
        print("confusion matrix (rows: true class, columns: predicted class)", file=out)
        labels = [str(c) for c in pipe.classes]
        width = max(max(len(s) for s in labels), len(str(int(confusion.max()))), 3)
        print(" " * width + " " + " ".join(f"{s:>{width}}" for s in labels), file=out)
        for label, row in zip(labels, confusion):
            print(f"{label:>{width}} " + " ".join(f"{v:>{width}}" for v in row), file=out)
    else:
        print(f"mse       {result['mse']:.6g}", file=out)
        print(f"r2        {result['r2']:.4f}", file=out)
        print(f"loss      {result['loss']:.6g}  (mse: half the squared error)", file=out)
    return EXIT_OK
