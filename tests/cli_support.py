"""What the tests of the `gpumlp` command share: an iris-like CSV, running the command in-process,
and the training flags of the checkpoint and resume tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from gpumlp.cli import main

ROOT = Path(__file__).resolve().parents[1]
LABELS = np.array(["setosa", "versicolor", "virginica"])
IRIS = [
    "iris.csv",
    "--target",
    "species",
    "--hidden",
    "16",
    "--val-split",
    "0.2",
    "--batch-size",
    "16",
    "--backend",
    "numpy",
    "--no-progress",
]


def write_csv(path: Path, n: int = 150, seed: int = 0, label_col: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Three separable Gaussian classes with text labels, header row, label column in the middle."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.normal(0.0, 1.0, (n, 4)) + 4.0 * np.eye(3, 4)[y] + 10.0
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sepal_len", "sepal_wid", "species", "petal_len", "petal_wid"] if label_col else ["a", "b", "c"])
        for row, label in zip(X, y):
            w.writerow([*row[:2], LABELS[label], *row[2:]] if label_col else row[:3])
    return X, LABELS[y]


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """``gpumlp *argv`` in this process: (exit status, stdout, stderr)."""
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err
