"""Built-in datasets and small data helpers (host NumPy arrays; fit moves them to the device)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .install_hint import install_hint
from .validation import check_number

DATASETS = ("xor", "digits", "spirals", "classification", "regression")


def xor() -> tuple[np.ndarray, np.ndarray]:
    """The four XOR points of the seeds: X (4, 2) and targets (4,) in {0, 1}."""
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return X, np.array([0.0, 1.0, 1.0, 0.0])


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 handwritten digits: X (1797, 64) scaled to [0, 1], labels 0-9."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the digits dataset ships with scikit-learn, which is not installed: "
            + install_hint("scikit-learn", "sklearn")
        ) from None
    d = load_digits()
    return d.data / 16.0, d.target.astype(np.int64)


def spirals(
    n_samples: int = 1000, noise: float = 0.1, turns: float = 1.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals in the plane (a classic non-linear problem), labels 0/1."""
    n_samples = check_number(n_samples, "n_samples", integer=True)
    noise = check_number(noise, "noise", allow_zero=True)
    rng = np.random.default_rng(seed)
    half = n_samples // 2
    t = np.sqrt(rng.uniform(0.0, 1.0, n_samples)) * turns * 2 * np.pi
    label = (np.arange(n_samples) >= half).astype(np.int64)
    sign = np.where(label == 0, 1.0, -1.0)
    X = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], axis=1) / (turns * 2 * np.pi)
    X += rng.normal(0.0, noise, X.shape)
    return X, label


def classification(
    n_samples: int = 1000, n_features: int = 20, n_classes: int = 3, separation: float = 2.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters, one per class around random centres ``separation`` apart on average."""
    n_samples = check_number(n_samples, "n_samples", integer=True)
    n_features = check_number(n_features, "n_features", integer=True)
    n_classes = check_number(n_classes, "n_classes", integer=True)
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2; got {n_classes}")
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, separation / np.sqrt(2.0), (n_classes, n_features))
    y = rng.integers(0, n_classes, n_samples)
    return centres[y] + rng.normal(0.0, 1.0, (n_samples, n_features)), y.astype(np.int64)


def regression(
    n_samples: int = 1000, n_features: int = 10, noise: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth non-linear target y = sin(X w₁) + (X w₂)²/4 + noise, a single output."""
    n_samples = check_number(n_samples, "n_samples", integer=True)
    n_features = check_number(n_features, "n_features", integer=True)
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 1.0, (n_samples, n_features))
    w1, w2 = rng.normal(0.0, 1.0 / np.sqrt(n_features), (2, n_features))
    y = np.sin(X @ w1) + 0.25 * (X @ w2) ** 2 + rng.normal(0.0, noise, n_samples)
    return X, y


def load_dataset(name: str, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of the built-in dataset ``name``: one of :data:`DATASETS`."""
    loaders = {
        "xor": xor,
        "digits": digits,
        "spirals": spirals,
        "classification": classification,
        "regression": regression,
    }
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; built-in datasets are {DATASETS}")
    return loaders[name](**kwargs)


def one_hot(y: Any, n_classes: int | None = None, dtype: str = "float32") -> np.ndarray:
    """Integer labels (n,) as one-hot rows (n, n_classes)."""
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"y must be a 1-D array of integer labels; got dtype {y.dtype} shape {y.shape}")
    if y.size == 0:
        raise ValueError("y is empty; expected at least one integer label")
    k = int(y.max()) + 1 if n_classes is None else check_number(n_classes, "n_classes", integer=True)
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"y labels must lie in [0, {k - 1}]; got [{y.min()}, {y.max()}]")
    out = np.zeros((y.shape[0], k), dtype=dtype)
    out[np.arange(y.shape[0]), y] = 1
    return out


def train_test_split(
    X: Any, y: Any, test_size: float = 0.2, seed: int = 0, stratify: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle and split into (X_train, X_test, y_train, y_test), like scikit-learn's order.

    ``stratify=True`` keeps each class's share of ``y`` in both parts (integer labels).
    """
    X, y = np.asarray(X), np.asarray(y)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X and y have different lengths: {X.shape[0]} and {y.shape[0]}")
    test_size = check_number(test_size, "test_size", upper=1.0)
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    if stratify:
        test = np.concatenate(
            [
                idx[: int(round(test_size * idx.size))]
                for idx in (rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y))
            ]
        )
        mask = np.zeros(n, dtype=bool)
        mask[test] = True
        train, test = rng.permutation(np.flatnonzero(~mask)), rng.permutation(test)
        if train.size == 0 or test.size == 0:
            part = "training" if train.size == 0 else "test"
            raise ValueError(f"test_size={test_size} with stratify=True leaves no {part} samples out of {n}")
    else:
        perm = rng.permutation(n)
        n_test = max(1, int(round(test_size * n)))
        if n_test >= n:
            raise ValueError(f"test_size={test_size} leaves no training samples out of {n}")
        test, train = perm[:n_test], perm[n_test:]
    return X[train], X[test], y[train], y[test]
