"""Checks of the preprocessing a model file carries (:mod:`gpumlp.pipeline`), field by field.

A model file may have been written by another program or edited by hand: every field a
:class:`~gpumlp.pipeline.Pipeline` uses is checked against the network it came with before it is
used, so a bad field is one ValueError naming the file and the field (the CLI prints it as one
line with exit status 2), never a KeyError or IndexError later.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .losses import LOSSES
from .modelfile import decode_json

TASKS = ("classification", "regression")


def _label_ok(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, float):
        return math.isfinite(v)
    return isinstance(v, (str, int))


def _field(path: str, name: str, problem: str) -> ValueError:
    return ValueError(f"{path}: bad CLI metadata field {name!r}: {problem} (was the file edited or written elsewhere?)")


def _check_classes(path: str, meta: dict[str, Any], model: Any) -> None:
    classes, n_out = meta.get("classes"), model.n_outputs
    if not isinstance(classes, list):
        raise _field(path, "classes", f"expected a list of class labels; got {type(classes).__name__}")
    if meta["task"] == "regression":
        if classes:
            raise _field(path, "classes", f"a regressor has no classes; got {len(classes)}")
        if model.output_activation != "identity" or meta["loss"] != "mse":
            raise _field(
                path,
                "task",
                f"'regression' needs an identity output and mse; the network has "
                f"{model.output_activation!r} and the loss is {meta['loss']!r}",
            )
        return
    odd = [c for c in classes if not _label_ok(c)]
    if odd:
        raise _field(path, "classes", f"labels must be strings or finite numbers; got {odd[0]!r}")
    if len({str(c).strip() for c in classes}) != len(classes):
        raise _field(path, "classes", f"labels must be unique; got {classes[:10]}")
    if model.output_activation not in ("softmax", "sigmoid"):
        raise _field(path, "task", "'classification' needs a softmax or sigmoid output; the network's is identity")
    expected = {2, n_out} if model.output_activation == "sigmoid" and n_out == 1 else {n_out}
    if len(classes) not in expected or len(classes) < 2:
        raise _field(
            path,
            "classes",
            f"the network has {n_out} output(s), which fits {max(expected)} classes; got {len(classes)}",
        )
    if meta["loss"] not in ("cross_entropy", "binary_cross_entropy"):
        raise _field(
            path, "loss", f"a classifier's loss is cross_entropy or binary_cross_entropy; got {meta['loss']!r}"
        )


def _check_names(path: str, meta: dict[str, Any], n_features: int) -> None:
    features = meta.get("features")
    if features is not None:
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise _field(path, "features", "expected a list of column names or null")
        if len(features) != n_features:
            raise _field(path, "features", f"{len(features)} names for a network of {n_features} inputs")
        if len(set(features)) != len(features):
            raise _field(path, "features", "column names must be unique")
    for key in ("target", "data", "scale"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise _field(path, key, f"expected a string or null; got {type(meta[key]).__name__}")


def _standardisation(path: str, arrays: dict[str, np.ndarray], key: str, n_features: int) -> np.ndarray:
    if key not in arrays:
        raise ValueError(f"{path}: the CLI metadata has no {key!r} array (the standardisation)")
    a = arrays[key]
    if a.dtype.kind not in "fiu" or a.shape != (n_features,):
        raise ValueError(f"{path}: array {key!r} must be {n_features} numbers; got {a.dtype} of shape {a.shape}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{path}: array {key!r} holds NaN or infinite values")
    return a


def decode_cli_meta(
    path: str, arrays: dict[str, np.ndarray], model: Any, keys: tuple[str, ...]
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The CLI metadata and standardisation stored in a model file, each field checked against ``model``.

    Parameters
    ----------
    path : str
        The model file, for messages.
    arrays : dict of str to numpy.ndarray
        Its arrays (from :func:`gpumlp.modelfile.read_npz`).
    model : MLP
        The network loaded from the same file.
    keys : tuple of str
        The names of the metadata, feature mean, feature scale, target mean and target scale arrays
        (the target scaling is optional: files of older versions have none).

    Returns
    -------
    tuple
        The metadata (``task``, ``classes``, ``loss``, ``features``, ``target`` valid), the feature
        mean and scale (float64, one per input, finite, scale > 0), and the target mean and scale
        (one per output, or None when the file has none).

    Raises
    ------
    ValueError
        Naming the file and the field that is missing, of the wrong type, or does not fit the network.
    """
    meta_key, mean_key, scale_key, y_mean_key, y_scale_key = keys
    try:
        meta = decode_json(arrays[meta_key], path, "CLI metadata")
    except RecursionError:
        raise ValueError(f"{path}: corrupted CLI metadata (JSON nested too deep)") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: corrupted CLI metadata: expected a JSON object; got {type(meta).__name__}")
    if meta.get("task") not in TASKS:
        raise _field(path, "task", f"expected one of {TASKS}; got {meta.get('task')!r}")
    if meta.get("loss") not in LOSSES:
        raise _field(path, "loss", f"expected one of {tuple(LOSSES)}; got {meta.get('loss')!r}")
    _check_classes(path, meta, model)
    _check_names(path, meta, model.n_features)
    scaled = []
    for key, n in (
        (mean_key, model.n_features),
        (scale_key, model.n_features),
        (y_mean_key, model.n_outputs),
        (y_scale_key, model.n_outputs),
    ):
        optional = key in (y_mean_key, y_scale_key)
        scaled.append(None if optional and key not in arrays else _standardisation(path, arrays, key, n))
    for key, scale in ((scale_key, scaled[1]), (y_scale_key, scaled[3])):
        if scale is not None and not (scale > 0).all():
            raise ValueError(f"{path}: array {key!r} must be positive (values are divided by it)")
    mean, scale, y_mean, y_scale = scaled
    return meta, mean, scale, y_mean, y_scale
