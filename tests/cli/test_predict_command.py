"""`gpumlp train`, `predict`, `evaluate` and `info` end to end on a CSV the test writes: labels, probabilities,
CSV on stdout, the confusion matrix, JSON reports and the loss-curve plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cli_support import LABELS, run, write_csv


def test_train_predict_evaluate_plot_end_to_end(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    X, labels = write_csv(workdir / "iris.csv")
    rc, out, err = run(
        capsys,
        "train",
        "iris.csv",
        "--target",
        "species",
        "--hidden",
        "16,16",
        "--val-split",
        "0.2",
        "--out",
        "model.npz",
        "--plot",
        "loss.png",
        "--backend",
        "numpy",
        "--no-progress",
    )
    assert rc == 0, err
    assert "val accuracy" in out and "saved model to model.npz" in out and "error" not in err
    png = (workdir / "loss.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = pytest.importorskip("matplotlib.image").imread(workdir / "loss.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100

    # Predict labels from the same CSV: the training target column is dropped by name.
    rc, out, err = run(capsys, "predict", "model.npz", "iris.csv", "--out", "pred.csv")
    assert rc == 0, err
    with open(workdir / "pred.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["species"] and len(rows) == 151
    predicted = np.array([r[0] for r in rows[1:]])
    assert set(predicted) <= set(LABELS) and np.mean(predicted == labels) > 0.9

    rc, out, err = run(capsys, "predict", "model.npz", "iris.csv", "--proba", "--out", "proba.npy")
    assert rc == 0, err
    proba = np.load(workdir / "proba.npy")
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)

    rc, out, err = run(capsys, "predict", "model.npz", "iris.csv")  # CSV on stdout
    assert rc == 0 and out.splitlines()[0] == "species" and len(out.splitlines()) == 151

    rc, out, err = run(capsys, "evaluate", "model.npz", "iris.csv")
    assert rc == 0, err
    assert "accuracy" in out and "confusion matrix" in out and "virginica" in out
    rc, out, err = run(capsys, "evaluate", "model.npz", "iris.csv", "--json")
    report = json.loads(out)
    assert report["accuracy"] > 0.9 and report["classes"] == list(LABELS)
    assert np.sum(report["confusion_matrix"]) == 150 and np.isfinite(report["loss"])

    rc, out, err = run(capsys, "info", "--backend", "numpy")
    assert rc == 0 and "backend" in out and "numpy" in out
    rc, out, err = run(capsys, "info", "--json", "--backend", "numpy")
    assert json.loads(out)["backend"] == "numpy"
