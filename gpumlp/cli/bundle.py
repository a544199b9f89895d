"""The model file as the commands see it: a :class:`~gpumlp.pipeline.Pipeline` read with CLI errors.

:func:`load_pipeline` reads a file written by ``gpumlp train`` (or ``MLP.save``: the task is then
inferred from the output layer, with no scaling) and :func:`features_of` picks a data file's
feature columns for it. The preprocessing itself lives in :mod:`gpumlp.pipeline`, shared with
``gpumlp.load`` in Python, so the command and the Python object give the same answers.
"""

from __future__ import annotations

import os

import numpy as np

from ..modelfile import read_npz
from ..pipeline import Pipeline, load
from .datafiles import Table
from .errors import CLIError

CHECKPOINT_RECORD = "__checkpoint__"  # the array that makes a model file a gpumlp.checkpoint file


def load_pipeline(path: str, backend: str) -> Pipeline:
    """Read a model file written by ``gpumlp train`` or ``MLP.save`` as a Pipeline.

    Parameters
    ----------
    path : str
        The model .npz.
    backend : str
        The backend to load the model onto ("auto", "numpy" or "cupy").

    Returns
    -------
    Pipeline
        The model with its stored preprocessing; for a model saved from the Python API, the task
        inferred from its output layer (softmax or sigmoid: classes 0..k-1) and no scaling.

    Raises
    ------
    CLIError
        When the file is missing, is not a gpumlp model, or is a training checkpoint.
    """
    if not os.path.exists(path):
        raise CLIError(f"no such model file: {path!r}")
    try:
        _, arrays = read_npz(path)
        found = load(path, backend=backend)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if isinstance(found, Pipeline):
        return found
    if CHECKPOINT_RECORD in arrays:
        raise CLIError(
            f"{path!r} is a training checkpoint, without the standardisation and classes `gpumlp train` "
            f"stores in its --out model; write that with `gpumlp train DATA --resume {path} --out model.npz` "
            "(--epochs at the checkpoint's epoch trains no further)"
        )
    model = found  # a model saved from the Python API: infer the task from its output layer
    n_in, n_out = model.sizes[0], model.sizes[-1]
    classification = model.output_activation in ("softmax", "sigmoid")
    meta = {
        "task": "classification" if classification else "regression",
        "classes": (list(range(n_out)) if n_out > 1 else [0, 1]) if classification else [],
        "features": None,
        "target": None,
        "loss": model.resolve_loss("auto"),
    }
    return Pipeline(model, meta, np.zeros(n_in), np.ones(n_in))


def features_of(pipe: Pipeline, table: Table, source: str) -> np.ndarray:
    """The model's raw input columns from ``table``, checked against the training features.

    Parameters
    ----------
    pipe : Pipeline
        The model.
    table : Table
        The data read from ``source``.
    source : str
        The data file or dataset name, for messages.

    Returns
    -------
    numpy.ndarray
        The raw features in training column order (picked by name when both the model and the
        file have column names); the Pipeline standardises them.

    Raises
    ------
    CLIError
        When training feature columns are missing or the column count does not fit the model.
    """
    names, X = pipe.features, table.X
    if names and table.features and set(names) <= set(table.features):
        X = X[:, [table.features.index(n) for n in names]]
    elif names and table.features:
        missing = [n for n in names if n not in table.features]
        hint = ""
        if table.target in missing:  # the file lacks the training target, so its last column stood in
            hint = (
                f" ({table.target!r} was taken as the target: the file has no column "
                f"{pipe.meta.get('target')!r}; name the target with --target)"
            )
        more = f" ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise CLIError(f"{source}: missing feature columns {missing[:5]}{more}{hint}")
    if X.shape[1] != pipe.model.n_features:
        raise CLIError(
            f"{source}: {X.shape[1]} feature columns, but the model expects {pipe.model.n_features}"
            f"{' (pass --target to drop the target column)' if X.shape[1] == pipe.model.n_features + 1 else ''}"
        )
    return X
