"""The training data of ``gpumlp train``: :class:`TrainingData` turns a data file and the flags into the
task, the loss, the network's targets, the validation split and the standardisation (features, and
regression targets), and checks that nothing overflows the model's dtype.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from ..data import train_test_split
from ..pipeline import plain_value
from ..validation import check_fits_dtype
from .datafiles import Table, read_data
from .errors import CLIError
from .task import choose_task, describe

DEFAULT_VAL_SPLIT = 0.1  # --val-split when not given: held out for early stopping, if the data allows it


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
        if standard:
            self.mean, self.scale = standardisation(self.X_tr)
        else:
            self.mean, self.scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
        self.y_mean = self.y_scale = None
        if self.task == "regression" and standard:  # the network learns (y - y_mean) / y_scale
            self.y_mean, self.y_scale = standardisation(self.y_tr.reshape(len(self.y_tr), -1))
        self.n_out, self.output, self.T_tr, self.T_val = _network_targets(
            self.task, self.loss, self.classes, self._scaled(self.y_tr), self._scaled(self.y_val)
        )
        # Standardised features cannot overflow (|x - mean| / std <= sqrt(samples)); raw ones and targets can.
        checks = [("a feature", X, " or --scale standard")] if args.scale == "none" else []
        checks += [("the target", y, " or --scale standard")] if self.task == "regression" and not standard else []
        if self.task == "regression" and standard:  # held-out targets far outside the training range can
            checks += [("a standardised target", t, "") for t in (self.T_tr, self.T_val) if t is not None]
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

    def _scaled(self, y: np.ndarray | None) -> np.ndarray | None:
        if y is None or self.y_mean is None:
            return y
        return ((y.reshape(len(y), -1) - self.y_mean) / self.y_scale).reshape(y.shape)
