"""What ``gpumlp train`` guesses about the data, each guess with its reason and how to override it.

:func:`choose_task` decides classification or regression (``--task``, else ``--loss``, else the
target's values: text labels and whole numbers written without a decimal point with at most
:data:`MAX_CLASSES_AUTO` distinct values are classes; values written like ``54.0`` or ``3.7`` are
numbers to regress). :func:`describe` turns the guesses (target column, task, classes, scaling)
into the lines ``train`` prints before it trains.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .datafiles import Table
from .errors import CLIError

MAX_CLASSES_AUTO = 100  # whole-number targets written without a decimal point: classes up to this many values
CLASS_LOSSES = ("cross_entropy", "binary_cross_entropy")


def _written_as(table: Table) -> str:
    """How the target's values are written: "text", "integers" or "decimals" (a binary array's by value)."""
    if table.target_written is not None:
        return table.target_written
    y = np.asarray(table.y)
    if y.dtype.kind in "USO":
        return "text"
    if y.dtype.kind in "biu":
        return "integers"
    return "integers" if bool(np.all(y == np.round(y))) else "decimals"


def choose_task(table: Table, task: str | None, loss: str) -> tuple[str, str, str]:
    """The task, the loss and why: from ``--task``, else ``--loss``, else the target's values.

    Parameters
    ----------
    table : Table
        The training data.
    task : {"classification", "regression"} or None
        ``--task``; None to guess.
    loss : str
        ``--loss`` ("auto" or a loss name).

    Returns
    -------
    tuple of (str, str, str)
        The task, the loss, and the reason for the task (for the printed guess).

    Raises
    ------
    CLIError
        When ``--task`` and ``--loss`` contradict each other.
    """
    y = np.asarray(table.y)
    if task is not None:
        if (task == "regression") == (loss in CLASS_LOSSES) and loss != "auto":
            raise CLIError(f"--task {task} does not go with --loss {loss}")
        return task, loss if loss != "auto" else ("mse" if task == "regression" else "cross_entropy"), "--task"
    if loss == "mse":
        return "regression", "mse", "--loss mse"
    if loss in CLASS_LOSSES:
        return "classification", loss, f"--loss {loss}"
    if y.ndim == 2:
        return "regression", "mse", f"the target has {y.shape[1]} columns"
    written = _written_as(table)
    if written == "text":
        return "classification", "cross_entropy", "the target holds text labels"
    if written == "decimals":
        if table.target_written is None:
            return "regression", "mse", "the target holds fractional numbers"
        return "regression", "mse", "the target holds numbers written with a decimal point or exponent"
    n_values = len(np.unique(y))
    if n_values <= MAX_CLASSES_AUTO:
        return (
            "classification",
            "cross_entropy",
            f"the target holds {n_values} distinct whole numbers (at most {MAX_CLASSES_AUTO} count as classes)",
        )
    return "regression", "mse", f"the target holds {n_values} distinct whole numbers (over {MAX_CLASSES_AUTO})"


def describe(table: Table, args: Any, task: str, why: str, classes: list[Any]) -> list[str]:
    """The lines ``train`` prints about what it chose: target column, task and classes, scaling.

    Parameters
    ----------
    table : Table
        The training data.
    args : argparse.Namespace
        The ``train`` arguments (``target``, ``task``, ``scale``).
    task : str
        The chosen task.
    why : str
        Its reason, from :func:`choose_task`.
    classes : list
        The class labels (empty for regression).

    Returns
    -------
    list of str
        One line each for the target, the task and the scaling.
    """
    name = repr(table.target) if table.target else "the target"
    if args.target is not None:
        target = f"target: column {name} (--target)"
    elif table.features is None and table.target == "y":
        target = "target: the .npz file's array 'y'"
    elif table.features is None and table.target == "target":
        target = "target: the built-in dataset's labels"
    elif table.target is None:
        target = "target: the last column (name another with --target)"
    else:
        target = f"target: column {name} (the last column; name another with --target)"
    other = "regression" if task == "classification" else "classification"
    how = "" if why == "--task" else f" (guessed: {why}; override with --task {other})"
    if task == "classification":
        shown = ", ".join(repr(c) for c in classes[:10]) + (", ..." if len(classes) > 10 else "")
        line = f"task: classification, {len(classes)} classes [{shown}]{how}"
    else:
        line = f"task: regression{how}"
    if args.scale == "none":
        scaling = "scaling: none (--scale none)"
    else:
        scaling = "scaling: features standardised with the training mean and std"
        if task == "regression":
            scaling += ", and the target too (predictions are turned back into target units)"
        scaling += "; stored in the model (--scale none to turn off)"
    return [target, line, scaling]
