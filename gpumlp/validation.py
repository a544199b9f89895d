"""Input checks shared by every public entry point.

Each check raises ``ValueError`` or ``TypeError`` whose message names the argument, says
what was wrong and what was expected. Arrays are checked where they live (NumPy on the
host, CuPy on the device) and never copied to a wider dtype to be checked.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from .backends import backend_of, is_sparse, to_numpy

_FINITE_CHUNK = 1 << 20  # elements per isfinite() pass on the host: bounded temporary memory


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """``value`` must be one of the strings in ``choices``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {tuple(choices)}; got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {value!r}")
    return value


def check_number(
    value: Any,
    name: str,
    *,
    integer: bool = False,
    positive: bool = True,
    allow_zero: bool = False,
    upper: float | None = None,
    upper_inclusive: bool = False,
) -> Any:
    """A finite real (or integer) number with the given bounds, returned as a Python float (or int).

    ``integer=True`` accepts any integer: int, a NumPy integer, or an object with ``__index__``;
    bools and floats with integral values are refused.
    """
    kind = "an integer" if integer else "a real number"
    if isinstance(value, (bool, np.bool_)) or not (_is_integer(value) if integer else isinstance(value, numbers.Real)):
        raise TypeError(f"{name} must be {kind}; got {type(value).__name__} {value!r}")
    if integer:
        value = operator.index(value)  # NumPy integers (and anything with __index__) become int
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite; got {value!r}")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}; got {value!r}")
    if upper is not None and (value > upper or (value == upper and not upper_inclusive)):
        raise ValueError(f"{name} must be {'<=' if upper_inclusive else '<'} {upper}; got {value!r}")
    return int(value) if integer else float(value)


def _is_integer(value: Any) -> bool:
    """True for an int, a NumPy integer, or anything else ``operator.index`` accepts."""
    if isinstance(value, numbers.Integral):
        return True
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def check_bool(value: Any, name: str) -> bool:
    """``value`` must be True or False (a NumPy bool too): a string like "no" is refused, not read as True."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} {value!r}")
    return bool(value)


def check_sizes(sizes: Any) -> tuple[int, ...]:
    """Layer sizes: at least [n_inputs, n_outputs], each a positive integer."""
    if isinstance(sizes, np.ndarray) and sizes.ndim == 1:
        sizes = sizes.tolist()
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise TypeError(f"sizes must be a list of layer widths like [784, 256, 10]; got {type(sizes).__name__}")
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output width; got {list(sizes)}")
    return tuple(check_number(s, f"sizes[{i}]", integer=True) for i, s in enumerate(sizes))


def _is_host(a: Any) -> bool:
    return isinstance(a, np.ndarray)


def as_array(a: Any, name: str) -> Any:
    """``a`` as an array of its own backend (lists and scalars become NumPy), numeric only."""
    if a is None:
        raise TypeError(f"{name} must be an array; got None")
    if hasattr(a, "toarray") and hasattr(a, "nnz"):
        raise TypeError(f"{name} is a sparse matrix; only X (the inputs) may be sparse: pass {name}.toarray()")
    if backend_of(a) is None:
        try:
            a = np.asarray(a)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} must be a numeric array; could not convert it ({exc})") from None
    kind = getattr(a.dtype, "kind", "f")  # array_api_strict dtypes are numeric by construction
    if kind not in "biuf":
        raise TypeError(f"{name} must hold numbers (bool, int or float); got dtype {a.dtype}")
    return a


def all_finite(a: Any) -> bool:
    """True when every element is finite; chunked on the host so no large temporary is made."""
    if _is_host(a):
        if a.dtype.kind not in "fc":
            return True
        flat = a.reshape(-1)
        return all(bool(np.isfinite(flat[i : i + _FINITE_CHUNK]).all()) for i in range(0, flat.size, _FINITE_CHUNK))
    xp = backend_of(a).xp
    if not xp.isdtype(a.dtype, "real floating"):  # ints and bools are always finite
        return True
    return bool(xp.all(xp.isfinite(a)))


def check_weights(pairs: list[tuple[Any, Any]], sizes: tuple[int, ...]) -> list[tuple[Any, Any]]:
    """``pairs`` [(W_1, b_1), ...] checked against layer ``sizes``: W_l (n_{l-1}, n_l), b_l (n_l,), finite."""
    for i, ((W, b), n_in, n_out) in enumerate(zip(pairs, sizes[:-1], sizes[1:])):
        for a, shape, what in ((W, (n_in, n_out), "W"), (b, (n_out,), "b")):
            if tuple(as_array(a, f"weights[{i}] {what}").shape) != shape:
                raise ValueError(f"weights[{i}] {what} must have shape {shape}; got {tuple(a.shape)}")
        if not (all_finite(W) and all_finite(b)):
            raise ValueError(f"weights[{i}] contains NaN or infinite values")
    return pairs


def _abs_max(a: Any) -> float:
    """max |a| over a float array, chunked on the host (bounded temporaries)."""
    if _is_host(a):
        flat = a.reshape(-1)
        return max(float(np.abs(flat[i : i + _FINITE_CHUNK]).max()) for i in range(0, flat.size, _FINITE_CHUNK))
    xp = backend_of(a).xp
    return float(xp.max(xp.abs(a)))


def check_fits_dtype(a: Any, dtype: Any, name: str = "X", hint: str | None = None) -> Any:
    """Finite values must stay finite in ``dtype``: 1e39 is finite in float64 but inf in float32.

    Parameters
    ----------
    a : array
        A finite numeric array (NumPy, CuPy or another array-API array, or a scipy/cupyx sparse matrix).
    dtype : str or dtype
        The dtype ``a`` will be cast to (the model's).
    name : str
        The argument's name, for the message.
    hint : str, optional
        What to do instead, for the message (default: scale ``name`` down or use dtype='float64').

    Returns
    -------
    array
        ``a`` itself.

    Raises
    ------
    ValueError
        When a value is beyond ``dtype``'s largest finite value (IEEE 754 overflow to inf), naming
        the largest value and the limit.
    """
    target = np.dtype(str(dtype)) if not isinstance(dtype, np.dtype) else dtype
    if is_sparse(a):  # the stored values are all there is to check
        check_fits_dtype(a.data if a.format in ("csr", "csc", "coo") else a.tocsr().data, target, name, hint)
        return a
    if _is_host(a):
        bits = 8 * a.dtype.itemsize if a.dtype.kind == "f" else 0
    else:
        xp = backend_of(a).xp
        bits = xp.finfo(a.dtype).bits if xp.isdtype(a.dtype, "real floating") else 0
    if target.kind != "f" or bits <= 8 * target.itemsize or a.size == 0:
        return a  # only a wider float can hold values the model's dtype cannot
    top = _abs_max(a)
    limit = float(np.finfo(target).max)
    if top > limit:
        hint = hint or f"scale {name} down (e.g. standardise it) or use dtype='float64'"
        raise ValueError(
            f"{name} holds the value {top:.6g}, which overflows the model's dtype {target.name} (its largest "
            f"finite value is {limit:.6g}); {hint}"
        )
    return a


def check_sparse_inputs(X: Any, n_features: int, name: str = "X") -> Any:
    """Sparse features (scipy.sparse or cupyx, any format): non-empty, ``n_features`` columns, numeric,
    no NaN/inf among the stored values. Returned as given (never densified)."""
    shape = tuple(X.shape)
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features); got shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"{name} is empty: got shape {shape}, expected at least one sample")
    if shape[1] != n_features:
        raise ValueError(f"{name} has {shape[1]} features per sample; the model expects {n_features}")
    if getattr(X.dtype, "kind", "f") not in "biuf":
        raise TypeError(f"{name} must hold numbers (bool, int or float); got dtype {X.dtype}")
    data = X.data if X.format in ("csr", "csc", "coo") else X.tocsr().data
    if not all_finite(data):
        raise ValueError(f"{name} contains NaN or infinite values; expected finite numbers")
    return X


def check_inputs(X: Any, n_features: int, name: str = "X", dtype: Any = None) -> Any:
    """Features: a non-empty 2-D numeric array with ``n_features`` columns and no NaN/inf, and
    (given ``dtype``, the model's) no value that overflows ``dtype`` (a sparse matrix goes to
    :func:`check_sparse_inputs`; its stored values are checked against ``dtype``)."""
    if is_sparse(X):
        X = check_sparse_inputs(X, n_features, name)
        return X if dtype is None else check_fits_dtype(X, dtype, name)
    X = as_array(X, name)
    if X.ndim != 2:
        hint = " (use X.reshape(-1, 1) for a single feature)" if X.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (n_samples, n_features); got shape {tuple(X.shape)}{hint}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: got shape {tuple(X.shape)}, expected at least one sample")
    if X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features per sample; the model expects {n_features}")
    if not all_finite(X):
        raise ValueError(f"{name} contains NaN or infinite values; expected finite numbers")
    if dtype is not None:
        check_fits_dtype(X, dtype, name)
    return X


def check_targets(Y: Any, n_samples: int, loss: str, n_outputs: int, name: str = "Y", dtype: Any = None) -> np.ndarray:
    """Targets for ``loss`` as a host (n_samples, n_outputs) array.

    cross_entropy takes integer labels in [0, n_outputs) or rows of class probabilities;
    binary_cross_entropy takes values in [0, 1]; mse takes any finite numbers. A 1-D target
    is accepted where there is a single output. Targets are small next to X, so they are
    checked and shaped on the host and uploaded with X.
    """
    Y = to_numpy(as_array(Y, name))
    if Y.ndim == 0 or Y.shape[0] != n_samples:
        got = f"{Y.shape[0]} samples" if Y.ndim else "a scalar"
        raise ValueError(f"X and {name} have different lengths: X has {n_samples} samples, {name} has {got}")
    if not all_finite(Y):
        raise ValueError(f"{name} contains NaN or infinite values; expected finite numbers")
    if dtype is not None:
        check_fits_dtype(Y, dtype, name)
    if loss == "cross_entropy" and Y.ndim == 1:
        return _labels_to_one_hot(Y, n_outputs, name)
    if Y.ndim == 1 and n_outputs == 1:
        Y = Y.reshape(n_samples, 1)
    if Y.ndim != 2 or Y.shape[1] != n_outputs:
        labels = " (or integer class labels of shape (n_samples,))" if loss == "cross_entropy" else ""
        raise ValueError(
            f"{name} must have shape ({n_samples}, {n_outputs}) to match the model's {n_outputs} outputs"
            f"{labels}; got shape {Y.shape}"
        )
    if loss in ("cross_entropy", "binary_cross_entropy"):
        lo, hi = float(Y.min()), float(Y.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"{name} for {loss} must lie in [0, 1]; got values in [{lo:g}, {hi:g}]")
    if loss == "cross_entropy":
        sums = Y.sum(axis=1, dtype=np.promote_types(Y.dtype, np.float32))  # (n,) temporaries only
        bad = np.flatnonzero((sums < 1.0 - 1e-3) | (sums > 1.0 + 1e-3))
        if bad.size:
            raise ValueError(
                f"{name} rows for cross_entropy must sum to 1 (one-hot or class probabilities); "
                f"row {int(bad[0])} sums to {float(sums[bad[0]]):g}"
            )
    return Y


def _labels_to_one_hot(y: np.ndarray, n_classes: int, name: str) -> np.ndarray:
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        raise ValueError(
            f"{name} class labels must be integers; got non-integer values such as {y[y != np.round(y)][0]!r}"
        )
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(
            f"{name} class labels must lie in [0, {n_classes - 1}] for a model with {n_classes} outputs; "
            f"got labels in [{lo}, {hi}]"
        )
    T = np.zeros((y.shape[0], n_classes), dtype=np.float32)
    T[np.arange(y.shape[0]), y.astype(np.intp)] = 1.0
    return T


def check_sample_weight(sample_weight: Any, n_samples: int, name: str = "sample_weight") -> np.ndarray | None:
    """Per-sample weights as a host float64 array of shape (n_samples,), or None for none.

    A number is every sample's weight. The weights must be finite and non-negative, and
    not all zero (nothing would be learned).

    Raises
    ------
    TypeError, ValueError
        For a non-numeric, wrongly shaped, non-finite, negative or all-zero ``sample_weight``.
    """
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Real) and not isinstance(sample_weight, bool):
        w = np.full(n_samples, float(sample_weight))
    else:
        w = to_numpy(as_array(sample_weight, name)).astype(np.float64)
    if w.shape != (n_samples,):
        raise ValueError(f"{name} must have shape ({n_samples},), one weight per sample; got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError(f"{name} contains NaN or infinite values; expected finite weights >= 0")
    if (w < 0).any():
        raise ValueError(f"{name} must be >= 0; got {float(w.min()):g} at sample {int(np.argmin(w))}")
    if not w.any():
        raise ValueError(f"{name} is all zero; at least one sample needs a positive weight")
    return w
