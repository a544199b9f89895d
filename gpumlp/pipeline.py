"""A model with its preprocessing and its labels: the :class:`Pipeline` that ``gpumlp train`` saves.

A model file written by ``gpumlp train`` holds, beside the weights, what it takes to use the
network on raw data: the task, the class labels in the order of the network's outputs, the
training feature and target names, the input standardisation (the network sees
``(X - mean) / scale``) and, for regression, the target standardisation (the network predicts
``(y - y_mean) / y_scale``). They are extra ``"__"`` arrays of the gpumlp .npz (not weights, see
:mod:`gpumlp.modelfile`). :func:`load` returns a :class:`Pipeline` for such a file, so the Python
side applies exactly what the command applies; a file saved from the Python API loads as an
:class:`~gpumlp.network.MLP`. The CLI's ``predict`` and ``evaluate`` use this same class.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .backends import Backend, get_backend
from .modelfile import encode_meta, read_npz
from .network import MLP, save
from .pipeline_check import decode_cli_meta
from .validation import check_fits_dtype

# Extra arrays of a model file written by `gpumlp train` ("__" keys: not weights, see gpumlp.modelfile).
CLI_META, CLI_MEAN, CLI_SCALE = "__cli__", "__cli_mean__", "__cli_scale__"
CLI_Y_MEAN, CLI_Y_SCALE = "__cli_y_mean__", "__cli_y_scale__"  # regression target scaling (absent in old files)


class Pipeline:
    """Standardise raw features, run the network, and return labels or values: a trained model's use.

    Parameters
    ----------
    model : MLP
        The network, trained on standardised features (and standardised regression targets).
    meta : dict
        ``task`` ("classification" or "regression"), ``classes`` (labels in output order, empty
        for regression), ``features`` and ``target`` (training column names or None) and
        ``loss``; ``gpumlp train`` adds ``data`` (the file name) and ``scale``.
    mean, scale : numpy.ndarray
        The feature standardisation, shape (features,): the network sees ``(X - mean) / scale``.
    y_mean, y_scale : numpy.ndarray, optional
        The regression target standardisation, shape (outputs,): the network's output ``o`` is
        the value ``o * y_scale + y_mean``. Default: none (zeros and ones).
    """

    def __init__(
        self,
        model: MLP,
        meta: dict[str, Any],
        mean: np.ndarray,
        scale: np.ndarray,
        y_mean: np.ndarray | None = None,
        y_scale: np.ndarray | None = None,
    ) -> None:
        self.model, self.meta = model, meta
        self.mean, self.scale = np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64)
        n_out = model.sizes[-1]
        self.y_mean = np.zeros(n_out) if y_mean is None else np.asarray(y_mean, dtype=np.float64).reshape(-1)
        self.y_scale = np.ones(n_out) if y_scale is None else np.asarray(y_scale, dtype=np.float64).reshape(-1)

    @property
    def classification(self) -> bool:
        """Whether the model is a classifier."""
        return self.meta["task"] == "classification"

    @property
    def classes(self) -> list[Any]:
        """The class labels in the order of the network's outputs (empty for a regressor)."""
        return self.meta["classes"]

    @property
    def features(self) -> list[str] | None:
        """The training feature column names, in the order the network takes them (None if unnamed)."""
        return self.meta.get("features")

    def transform(self, X: Any) -> np.ndarray:
        """Standardise raw features as in training.

        Parameters
        ----------
        X : array-like or pandas.DataFrame, shape (samples, features)
            Raw features in training column order; a DataFrame's columns are picked by the training
            feature names when the model has them.

        Returns
        -------
        numpy.ndarray
            ``(X - mean) / scale``, float64.

        Raises
        ------
        ValueError
            When X is not 2-D, lacks a training feature column, or has the wrong number of columns.
        """
        names = self.features
        if names and hasattr(X, "columns"):
            missing = [n for n in names if n not in list(X.columns)]
            if missing:
                raise ValueError(f"X lacks the training feature columns {missing[:5]}")
            X = X[names]
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1 and self.model.n_features == 1:
            X = X.reshape(-1, 1)
        if X.ndim != 2 or X.shape[1] != self.model.n_features:
            raise ValueError(
                f"X must have shape (samples, {self.model.n_features}) (the raw training features"
                f"{': ' + ', '.join(names) if names else ''}); got shape {X.shape}"
            )
        return (X - self.mean) / self.scale

    def network_input(self, X: Any) -> np.ndarray:
        """Raw features as the network takes them: standardised (:meth:`transform`), in its dtype.

        Raises
        ------
        ValueError
            As :meth:`transform`; and when a standardised value overflows the model's dtype (a raw
            value far outside the training range).
        """
        Xs = self.transform(X)
        check_fits_dtype(Xs, self.model.dtype, "a standardised feature", "the model cannot take this input")
        return Xs.astype(self.model.dtype)

    def outputs(self, X: Any) -> np.ndarray:
        """The network's outputs for raw features, as NumPy: probabilities, or values in target units.

        Parameters
        ----------
        X : array-like, shape (samples, features)
            Raw features (see :meth:`transform`).

        Returns
        -------
        numpy.ndarray
            Shape (samples, outputs); a regressor's outputs with the target standardisation undone.
        """
        out = np.asarray(self.model.predict(self.network_input(X)))
        if self.classification:
            return out
        return out.astype(np.float64) * self.y_scale + self.y_mean

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities for raw features (a single sigmoid output means two classes).

        Parameters
        ----------
        X : array-like, shape (samples, features)

        Returns
        -------
        numpy.ndarray
            Shape (samples, classes), columns in the order of :attr:`classes`.

        Raises
        ------
        ValueError
            For a regressor.
        """
        if not self.classification:
            raise ValueError("predict_proba applies to classifiers; this model is a regressor")
        return probabilities(self.outputs(X))

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (classifier) or values in target units (regressor) for raw features.

        Parameters
        ----------
        X : array-like, shape (samples, features)

        Returns
        -------
        numpy.ndarray
            Labels from :attr:`classes`, shape (samples,); or values, shape (samples,) for one
            output, else (samples, outputs).
        """
        out = self.outputs(X)
        if self.classification:
            return np.asarray(self.classes)[predicted_indices(out)]
        return out[:, 0] if out.shape[1] == 1 else out

    def class_indices(self, y: Any) -> np.ndarray:
        """Labels ``y`` as indices into :attr:`classes` (matched as text, so 1 and "1.0" agree).

        Parameters
        ----------
        y : array-like, shape (samples,)

        Returns
        -------
        numpy.ndarray
            int64 indices.

        Raises
        ------
        ValueError
            For a label that is not one of the model's classes, naming it and its row.
        """
        lookup = {label_key(c): i for i, c in enumerate(self.classes)}
        y = np.asarray(y).reshape(-1)
        out = np.empty(len(y), dtype=np.int64)
        for n, v in enumerate(y):
            i = lookup.get(label_key(v))
            if i is None:
                raise ValueError(
                    f"label {plain_value(v)!r} (row {n + 1}) is not one of the model's classes {self.classes}"
                )
            out[n] = i
        return out

    def evaluate(self, X: Any, y: Any) -> dict[str, Any]:
        """Scores on labelled raw data, as ``gpumlp evaluate`` reports them.

        Parameters
        ----------
        X : array-like, shape (samples, features)
            Raw features.
        y : array-like
            Class labels (classifier) or values in target units, shape (samples,) or (samples, outputs).

        Returns
        -------
        dict
            ``samples``; a classifier's ``accuracy``, ``loss`` (its training loss, mean per sample),
            ``classes`` and ``confusion_matrix`` (rows: true class); a regressor's ``mse`` (mean over
            samples and outputs), ``r2`` (1 - SS_res / SS_tot over all outputs, NaN for constant
            targets) and ``loss`` (half the squared error, mean per sample).

        Raises
        ------
        ValueError
            For unknown labels or targets that are not numbers of the model's output width.
        """
        out = self.outputs(X)
        result: dict[str, Any] = {"samples": int(out.shape[0])}
        if self.classification:
            idx = self.class_indices(y)
            k, pred = len(self.classes), predicted_indices(out)
            confusion = np.zeros((k, k), dtype=np.int64)
            np.add.at(confusion, (idx, pred), 1)
            if self.model.output_activation == "softmax":
                T: np.ndarray = idx
            else:
                T = idx.astype(np.float64) if out.shape[1] == 1 else np.eye(k)[idx]
            Xs = self.network_input(X)
            result.update(
                accuracy=float(np.mean(pred == idx)),
                loss=self.model.loss(Xs, T),
                classes=self.classes,
                confusion_matrix=confusion.tolist(),
            )
            return result
        try:
            t = np.asarray(y, dtype=np.float64).reshape(out.shape)
        except ValueError:
            raise ValueError(f"targets must be numbers with {out.shape[1]} column(s) for this regressor") from None
        ss_res = float(((t - out) ** 2).sum())
        ss_tot = float(((t - t.mean(axis=0)) ** 2).sum())
        result.update(
            mse=ss_res / t.size,
            r2=1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
            loss=0.5 * ss_res / t.shape[0],
        )
        return result

    def score(self, X: Any, y: Any) -> float:
        """Accuracy (classifier) or R² (regressor) on labelled raw data, as scikit-learn's ``score``."""
        result = self.evaluate(X, y)
        return result["accuracy"] if self.classification else result["r2"]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model with its preprocessing and labels to ``path`` (gpumlp .npz, atomically).

        Parameters
        ----------
        path : str or os.PathLike
            The model file; :func:`load` reads it back as a Pipeline.
        """
        extra = {CLI_META: encode_meta(self.meta), CLI_MEAN: self.mean, CLI_SCALE: self.scale}
        if not self.classification:
            extra.update({CLI_Y_MEAN: self.y_mean, CLI_Y_SCALE: self.y_scale})
        save(self.model, path, extra=extra)

    def __repr__(self) -> str:
        what = f"classes={self.classes!r}" if self.classification else "regression"
        return f"Pipeline(standardise -> {self.model!r} -> {what})"


def load(path: str | os.PathLike[str], backend: str | Backend = "auto") -> Pipeline | MLP:
    """Read a model file: a :class:`Pipeline` when it carries preprocessing (``gpumlp train``), else an MLP.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``gpumlp train``, :meth:`Pipeline.save`, :meth:`MLP.save` or a checkpoint.
    backend : str or Backend
        As for :class:`~gpumlp.network.MLP`.

    Returns
    -------
    Pipeline or MLP
        A Pipeline (predict takes raw features and returns labels or values, as ``gpumlp predict``)
        for a file with the CLI's preprocessing; the bare network for one saved from the Python API.

    Raises
    ------
    FileNotFoundError
        When there is no file at ``path``.
    ValueError
        When the file is not a readable, consistent gpumlp model file.
    """
    backend = get_backend(backend)
    meta, arrays = read_npz(path)
    try:
        model = MLP.from_arrays(meta, arrays, backend)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{os.fspath(path)!r} holds an inconsistent gpumlp model: {exc}") from None
    if CLI_META not in arrays:
        return model
    keys = (CLI_META, CLI_MEAN, CLI_SCALE, CLI_Y_MEAN, CLI_Y_SCALE)
    return Pipeline(model, *decode_cli_meta(os.fspath(path), arrays, model, keys))


def probabilities(out: np.ndarray) -> np.ndarray:
    """Per-class probabilities from a classifier's outputs (one sigmoid output: two classes).

    Parameters
    ----------
    out : numpy.ndarray
        Shape (samples, outputs).

    Returns
    -------
    numpy.ndarray
        Shape (samples, classes).
    """
    return np.column_stack([1 - out[:, 0], out[:, 0]]) if out.shape[1] == 1 else out


def predicted_indices(out: np.ndarray) -> np.ndarray:
    """The predicted class index of each sample: one sigmoid output above 0.5, else the largest output.

    Parameters
    ----------
    out : numpy.ndarray
        A classifier's outputs, shape (samples, outputs).

    Returns
    -------
    numpy.ndarray
        int64 indices, shape (samples,).
    """
    return (out[:, 0] > 0.5).astype(np.int64) if out.shape[1] == 1 else np.argmax(out, axis=1).astype(np.int64)


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


def label_key(v: Any) -> str:
    """How labels are matched: as stripped text of their plain value (so 1, 1.0 and "1" agree)."""
    return str(plain_value(v)).strip()
