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
from typing import IO, Any

import numpy as np

from .._files import atomic_write, check_output_path
from .bundle import Bundle
from .datafiles import read_data
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
    bundle = Bundle.load(args.model, args.backend)
    table = read_data(args.data, args.target, want_target=False, known_target=bundle.meta.get("target"))
    raw = bundle.outputs(bundle.features_of(table, args.data))
    if bundle.classification:
        if args.proba:
            columns = [f"p_{c}" for c in bundle.classes]
            rows = bundle.probabilities(raw)
        else:
            columns = [table.target or bundle.meta.get("target") or "prediction"]
            rows = np.array(bundle.classes, dtype=object)[bundle.predicted_indices(raw)].reshape(-1, 1)
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
    bundle = Bundle.load(args.model, args.backend)
    table = read_data(args.data, args.target, want_target=True, known_target=bundle.meta.get("target"))
    X = bundle.features_of(table, args.data).astype(bundle.model.dtype)
    raw = bundle.outputs(X)
    model = bundle.model
    result: dict[str, Any] = {"samples": int(X.shape[0])}
    if bundle.classification:
        idx = bundle.class_indices(table.y, args.data)
        k = len(bundle.classes)
        pred = bundle.predicted_indices(raw)
        if model.output_activation == "softmax":
            T: np.ndarray = idx
        elif raw.shape[1] == 1:
            T = idx.astype(np.float64)
        else:
            T = np.eye(k)[idx]
        confusion = np.zeros((k, k), dtype=np.int64)
        np.add.at(confusion, (idx, pred), 1)
        result.update(
            accuracy=float(np.mean(pred == idx)),
            loss=model.loss(X, T),
            classes=bundle.classes,
            confusion_matrix=confusion.tolist(),
        )
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
