"""What a model file written by ``gpumlp train`` carries beyond the weights: the :class:`Bundle`.

``predict`` and ``evaluate`` need the task (classification or regression), the class labels in
the order of the network's outputs, the training feature names and target name, the loss, and
the input standardisation (mean and scale). They are stored as extra ``"__"`` arrays in the
gpumlp .npz (not weights, see :mod:`gpumlp.modelfile`): the JSON metadata in ``__cli__``, the mean and
scale as float arrays. A model saved from the Python API has none of them; its task is inferred
from the output layer.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..modelfile import encode_meta, read_npz
from ..network import MLP, save
from ..network import load as load_model
from ..validation import check_fits_dtype
from .bundle_check import decode_cli_meta
from .datafiles import Table
from .errors import CLIError

# Extra arrays stored in the model .npz beside the weights ("__" keys: not weights, see gpumlp.modelfile).
CLI_META, CLI_MEAN, CLI_SCALE = "__cli__", "__cli_mean__", "__cli_scale__"
CHECKPOINT_RECORD = "__checkpoint__"  # the array that makes a model file a gpumlp.checkpoint file


class Bundle:
    """A model plus what the CLI needs around it: task, classes, feature names, scaling.

    Parameters
    ----------
    model : MLP
        The network.
    meta : dict
        ``task`` ("classification" or "regression"), ``classes`` (labels in output order),
        ``features`` and ``target`` (training column names or None) and ``loss``; ``train`` adds
        ``data`` (the file name) and ``scale``.
    mean, scale : numpy.ndarray
        The standardisation: the network sees ``(X - mean) / scale``.
    """

    def __init__(self, model: MLP, meta: dict[str, Any], mean: np.ndarray, scale: np.ndarray) -> None:
        self.model, self.meta, self.mean, self.scale = model, meta, mean, scale

    @property
    def classification(self) -> bool:
        """Whether the model is a classifier."""
        return self.meta["task"] == "classification"

    @property
    def classes(self) -> list[Any]:
        """The class labels in the order of the network's outputs (empty for a regressor)."""
        return self.meta["classes"]

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Standardise raw features ``X`` as in training.

        Parameters
        ----------
        X : numpy.ndarray
            Raw features, shape (samples, features).

        Returns
        -------
        numpy.ndarray
            ``(X - mean) / scale``.
        """
        return (X - self.mean) / self.scale

    def save(self, path: str) -> None:
        """Write the model with the CLI metadata and standardisation to ``path`` (gpumlp .npz).

        Parameters
        ----------
        path : str
            The model file.
        """
        extra = {CLI_META: encode_meta(self.meta), CLI_MEAN: self.mean, CLI_SCALE: self.scale}
        save(self.model, path, extra=extra)

    @classmethod
    def load(cls, path: str, backend: str) -> Bundle:
        """Read a model file written by ``gpumlp train`` or ``MLP.save``.

        Parameters
        ----------
        path : str
            The model .npz.
        backend : str
            The backend to load the model onto ("auto", "numpy" or "cupy").

        Returns
        -------
        Bundle
            The model with its stored metadata; for a model saved from the Python API, the task
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
            model = load_model(path, backend=backend)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        if CLI_META in arrays:
            return cls(model, *decode_cli_meta(path, arrays, model, (CLI_META, CLI_MEAN, CLI_SCALE)))
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
            "task": "classification" if classification else "regression",
            "classes": classes,
            "features": None,
            "target": None,
            "loss": model.resolve_loss("auto"),
        }
        return cls(model, meta, np.zeros(n_in), np.ones(n_in))

    def features_of(self, table: Table, source: str) -> np.ndarray:
        """The model's input columns from ``table``, checked against the training features.

        Parameters
        ----------
        table : Table
            The data read from ``source``.
        source : str
            The data file or dataset name, for messages.

        Returns
        -------
        numpy.ndarray
            The standardised features in training column order (picked by name when both the
            model and the file have column names).

        Raises
        ------
        CLIError
            When training feature columns are missing or the column count does not fit the model.
        """
        names, X = self.meta.get("features"), table.X
        if names and table.features and set(names) <= set(table.features):
            X = X[:, [table.features.index(n) for n in names]]
        elif names and table.features:
            missing = [n for n in names if n not in table.features]
            hint = ""
            if table.target in missing:  # the file lacks the training target, so its last column stood in
                hint = (
                    f" ({table.target!r} was taken as the target: the file has no column "
                    f"{self.meta.get('target')!r}; name the target with --target)"
                )
            more = f" ... and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise CLIError(f"{source}: missing feature columns {missing[:5]}{more}{hint}")
        if X.shape[1] != self.model.n_features:
            raise CLIError(
                f"{source}: {X.shape[1]} feature columns, but the model expects {self.model.n_features}"
                f"{' (pass --target to drop the target column)' if X.shape[1] == self.model.n_features + 1 else ''}"
            )
        X = self.transform(X)
        try:
            check_fits_dtype(X, self.model.dtype, "a standardised feature", "the model cannot take this input")
        except ValueError as exc:
            raise CLIError(f"{source}: {exc}") from None
        return X

    def class_indices(self, y: np.ndarray, source: str) -> np.ndarray:
        """Labels ``y`` as indices into the model's classes; unknown labels are an error.

        Parameters
        ----------
        y : numpy.ndarray
            Class labels (numbers or strings), one per sample.
        source : str
            The data file or dataset name, for messages.

        Returns
        -------
        numpy.ndarray
            int64 indices into :attr:`classes`.

        Raises
        ------
        CLIError
            For a label that is not one of the model's classes.
        """
        classes = self.classes
        lookup = {_label_key(c): i for i, c in enumerate(classes)}
        out = np.empty(len(y), dtype=np.int64)
        for n, v in enumerate(y):
            i = lookup.get(_label_key(v))
            if i is None:
                raise CLIError(
                    f"{source}: label {plain_value(v)!r} (row {n + 1}) is not one of the model's classes {classes}"
                )
            out[n] = i
        return out

    def outputs(self, X: np.ndarray) -> np.ndarray:
        """The network's outputs for standardised features ``X``, as NumPy.

        Parameters
        ----------
        X : numpy.ndarray
            Standardised features, cast to the model's dtype here.

        Returns
        -------
        numpy.ndarray
            Shape (samples, outputs).
        """
        return np.asarray(self.model.predict(X.astype(self.model.dtype)))

    def probabilities(self, out: np.ndarray) -> np.ndarray:
        """Per-class probabilities from the network output (a single sigmoid means 2 classes).

        Parameters
        ----------
        out : numpy.ndarray
            A classifier's outputs, shape (samples, outputs).

        Returns
        -------
        numpy.ndarray
            Shape (samples, classes).
        """
        return np.column_stack([1 - out[:, 0], out[:, 0]]) if out.shape[1] == 1 else out

    def predicted_indices(self, out: np.ndarray) -> np.ndarray:
        """The predicted class of each sample from a classifier's outputs.

        Parameters
        ----------
        out : numpy.ndarray
            The network's outputs, shape (samples, outputs).

        Returns
        -------
        numpy.ndarray
            Indices into :attr:`classes`: for one sigmoid output, 1 where it exceeds 0.5; else the
            largest output.
        """
        return (out[:, 0] > 0.5).astype(np.int64) if out.shape[1] == 1 else np.argmax(out, axis=1)


def plain_value(v: Any) -> Any:
    """A NumPy scalar as a plain Python value (JSON-able), whole floats as ints.

    Parameters
    ----------
    v : Any
        A label or value, possibly a NumPy scalar.

    Returns
    -------
    Any
        The Python value; a float with an integral value as an int.
    """
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _label_key(v: Any) -> str:
    v = plain_value(v)
    return str(v).strip()
