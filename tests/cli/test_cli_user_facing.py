"""What a new user of `gpumlp` sees on scikit-learn's datasets exported to CSV: the Python object of a
CLI model file gives the command's answers, every guess is printed and can be overridden, the defaults
give a reasonable regressor, and the summary reports the epoch whose weights were kept."""

from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import gpumlp as gm
from gpumlp.modelfile import encode_meta
from gpumlp.network import save

from cli_support import run

datasets = pytest.importorskip("sklearn.datasets")


def _export(path: Path, X: np.ndarray, y: np.ndarray, names: list[str], target: str, sep: str = ",") -> None:
    """Write (X, y) as scikit-learn's users do: floats like 54.0 (Python's repr), a header row."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=sep)
        w.writerow([*names, target])
        for row, t in zip(X.tolist(), y.tolist()):
            w.writerow([*row, t])


def _iris(workdir: Path, sep: str = ",") -> tuple[np.ndarray, np.ndarray]:
    data = datasets.load_iris()
    labels = np.asarray(data.target_names)[data.target]
    _export(workdir / "iris.csv", data.data, labels, list(data.feature_names), "species", sep)
    return data.data, labels


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    return 1.0 - float(((y - p) ** 2).sum()) / float(((y - y.mean()) ** 2).sum())


def test_iris_round_trip_python_object_equals_gpumlp_evaluate(workdir: Path, capsys: pytest.CaptureFixture):
    X, labels = _iris(workdir)
    rc, out, err = run(capsys, "train", "iris.csv", "--backend", "numpy", "--no-progress", "--out", "m.npz")
    assert rc == 0, err
    rc, out, err = run(capsys, "evaluate", "m.npz", "iris.csv", "--json", "--backend", "numpy")
    cli = json.loads(out)["accuracy"]
    pipe = gm.load("m.npz", backend="numpy")
    assert isinstance(pipe, gm.Pipeline)  # before: a bare MLP, 0.33 on raw features
    python = float(np.mean(pipe.predict(X) == labels))
    assert python == cli == pipe.score(X, labels) and cli > 0.9
    proba = pipe.predict_proba(X)
    assert proba.shape == (150, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert list(np.asarray(pipe.classes)[proba.argmax(axis=1)]) == list(pipe.predict(X))
    rc, out, err = run(capsys, "predict", "m.npz", "iris.csv", "--backend", "numpy")
    assert [r[0] for r in csv.reader(out.splitlines()[1:])] == list(pipe.predict(X))
    print(f"iris: gpumlp evaluate accuracy {cli:.4f}, gm.load(path).predict accuracy {python:.4f}")


def test_the_bare_network_loader_warns_on_a_cli_file(trained: Path):
    with pytest.warns(UserWarning, match="gpumlp.load"):
        gm.network.load("model.npz", backend="numpy")


def test_files_written_by_the_old_cli_load_as_pipelines(workdir: Path):
    """The format before target scaling: weights + __cli__, __cli_mean__, __cli_scale__ only."""
    model = gm.MLP([2, 1], output_activation="identity", backend="numpy", seed=0)
    model.set_weights([(np.array([[1.0], [2.0]], dtype=np.float32), np.array([3.0], dtype=np.float32))])
    meta = {"task": "regression", "loss": "mse", "classes": [], "features": ["a", "b"], "target": "y"}
    mean, scale = np.array([10.0, 20.0]), np.array([2.0, 4.0])
    save(model, workdir / "old.npz", extra={"__cli__": encode_meta(meta), "__cli_mean__": mean, "__cli_scale__": scale})
    pipe = gm.load(workdir / "old.npz", backend="numpy")
    X = np.array([[12.0, 24.0], [10.0, 20.0]])
    np.testing.assert_allclose(pipe.predict(X), [1.0 * 1 + 2.0 * 1 + 3.0, 3.0], rtol=1e-6)


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([f"{v}.0" for v in np.arange(40) % 7 + 50], "regression"),  # 54.0: a number, not a class
        ([str(v) for v in np.arange(40) % 7 + 50], "classification"),  # 54: up to 100 values, a class
        ([str(v) for v in np.arange(40) * 3], "classification"),  # 40 distinct whole numbers still a class
    ],
)
def test_task_guess_is_printed_and_follows_how_values_are_written(workdir, capsys, values, task):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    _export(workdir / "d.csv", X, np.array(values), ["a", "b", "c"], "t")
    rc, out, err = run(capsys, "train", "d.csv", "--epochs", "2", "--no-progress", "--out", "m.npz")
    assert rc == 0, err
    other = "classification" if task == "regression" else "regression"
    assert re.search(rf"^task: {task}.*guessed: .*override with --task {other}", out, re.M), out
    assert "target: column 't'" in out and "scaling: features standardised" in out
    rc, out, err = run(capsys, "train", "d.csv", "--task", other, "--epochs", "2", "--no-progress", "--out", "o.npz")
    assert rc == 0 and re.search(rf"^task: {other}", out, re.M), err
    assert gm.load("o.npz").meta["task"] == other


def test_many_whole_numbers_are_regression_and_say_so(workdir, capsys):
    X = np.random.default_rng(0).normal(size=(300, 2))
    _export(workdir / "d.csv", X, np.arange(300), ["a", "b"], "t")
    rc, out, err = run(capsys, "train", "d.csv", "--epochs", "1", "--no-progress", "--out", "m.npz")
    assert rc == 0 and "task: regression (guessed: the target holds 300 distinct whole numbers" in out, err


def test_diabetes_at_cli_defaults_is_a_reasonable_regressor(workdir: Path, capsys: pytest.CaptureFixture):
    """Held-out R² of `gpumlp train` at its defaults beside a least-squares linear regression's on the same split."""
    data = datasets.load_diabetes()
    X, y = data.data, data.target
    order = np.random.default_rng(0).permutation(len(y))
    test, train = order[:88], order[88:]
    names = list(data.feature_names)
    _export(workdir / "train.csv", X[train], y[train], names, "progression")
    _export(workdir / "test.csv", X[test], y[test], names, "progression")
    rc, out, err = run(capsys, "train", "train.csv", "--backend", "numpy", "--no-progress", "--out", "m.npz")
    assert rc == 0 and "task: regression" in out, err
    rc, out, err = run(capsys, "evaluate", "m.npz", "test.csv", "--json", "--backend", "numpy")
    r2 = json.loads(out)["r2"]
    A = np.column_stack([X[train], np.ones(len(train))])
    coef = np.linalg.lstsq(A, y[train], rcond=None)[0]
    r2_linear = _r2(y[test], np.column_stack([X[test], np.ones(len(test))]) @ coef)
    print(f"diabetes held-out R2: gpumlp train defaults {r2:.3f}, numpy lstsq linear regression {r2_linear:.3f}")
    assert r2 > 0.3 and r2 > r2_linear - 0.1  # before: R2 -4.0 (unscaled targets, 20 epochs)
    pipe = gm.load("m.npz", backend="numpy")
    np.testing.assert_allclose(pipe.score(X[test], y[test]), r2, rtol=1e-6)
    assert abs(float(np.mean(pipe.predict(X[test]))) - float(np.mean(y[test]))) < 30  # in target units


def test_training_that_ends_still_improving_warns(workdir: Path, capsys: pytest.CaptureFixture):
    _iris(workdir)
    rc, out, err = run(capsys, "train", "iris.csv", "--epochs", "3", "--no-progress", "--out", "m.npz")
    assert rc == 0 and "gpumlp: warning: training stopped at its limit of 3 epochs while the validation loss" in err
    with warnings.catch_warnings():
        warnings.simplefilter("error", gm.ConvergenceWarning)
        rc, out, err = run(capsys, "train", "iris.csv", "--epochs", "3", "--no-early-stopping", "--no-progress")
    assert rc == 0 and "warning" not in err


def test_summary_reports_the_epoch_whose_weights_were_kept(workdir: Path, capsys: pytest.CaptureFixture):
    _iris(workdir)
    argv = ["train", "iris.csv", "--lr", "0.05", "--patience", "3", "--no-progress", "--checkpoint", "ck.npz"]
    rc, out, err = run(capsys, *argv, "--out", "m.npz")
    assert rc == 0, err
    history = gm.load_checkpoint("ck.npz").history
    kept = int(np.argmin(history["val_loss"])) + 1
    assert len(history["val_loss"]) > kept  # it early-stopped after its best epoch
    line = next(s for s in out.splitlines() if "(kept)" in s)
    assert line.startswith(f"epoch {kept} (kept): loss {history['loss'][kept - 1]:.4f}")
    assert f"val_loss {history['val_loss'][kept - 1]:.4f}" in line
    assert f"kept the weights of epoch {kept}" in out


def test_drop_delimiter_singular_and_batch_clip(workdir: Path, capsys: pytest.CaptureFixture):
    X, labels = _iris(workdir, sep=";")
    rc, out, err = run(capsys, "train", "iris.csv", "--epochs", "1", "--no-progress", "--out", "m.npz")
    assert rc == 0 and "4-100-3" in out and ": 1 epoch in" in out, err  # sniffed ';'; not "1 epochs"
    (workdir / "tab.csv").write_text((workdir / "iris.csv").read_text().replace(";", "\t"))
    rc, out, err = run(capsys, "train", "tab.csv", "--delimiter", "tab", "--epochs", "1", "--no-progress")
    assert rc == 0 and "4-100-3" in out, err
    with open(workdir / "ids.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "a", "b", "label"])
        for i, (row, label) in enumerate(zip(X, labels)):
            w.writerow([1000 + i, row[0], row[2], label])
    rc, out, err = run(capsys, "train", "ids.csv", "--drop", "id", "--epochs", "1", "--no-progress", "--out", "d.npz")
    assert rc == 0 and "2-100-3" in out, err
    assert gm.load("d.npz").features == ["a", "b"]
    rc, out, err = run(capsys, "evaluate", "d.npz", "ids.csv", "--drop", "id")
    assert rc == 0 and "accuracy" in out, err
    rc, out, err = run(capsys, "train", "ids.csv", "--drop", "nope", "--epochs", "1", "--no-progress")
    assert rc == 2 and "--drop: no column named 'nope'" in err
    rc, out, err = run(capsys, "train", "ids.csv", "--batch-size", "5000", "--val-split", "0", "--epochs", "1")
    assert rc == 0 and "gpumlp: warning: --batch-size 5000 is larger than the 150 training samples; using 150" in err


def test_resuming_a_finished_cli_run_changes_nothing(workdir: Path, capsys: pytest.CaptureFixture):
    _iris(workdir)
    argv = ["train", "iris.csv", "--lr", "0.05", "--patience", "3", "--backend", "numpy", "--no-progress"]
    rc, out, err = run(capsys, *argv, "--checkpoint", "ck.npz", "--out", "a.npz")
    assert rc == 0 and "early stopping" in out, err
    epochs = len(gm.load_checkpoint("ck.npz").history["loss"])
    rc, out, err = run(capsys, *argv, "--resume", "ck.npz", "--out", "b.npz")
    assert rc == 0, err
    assert f": {epochs} epochs (resumed after epoch {epochs}" in out  # before: one more epoch
    a, b = gm.load("a.npz").model, gm.load("b.npz").model
    for (Wa, ba), (Wb, bb) in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)


def test_progress_lines_when_stderr_is_not_a_terminal(workdir: Path, capsys: pytest.CaptureFixture):
    _iris(workdir)
    rc, out, err = run(capsys, "train", "iris.csv", "--epochs", "3", "--no-early-stopping", "--out", "m.npz")
    assert rc == 0 and "train: epoch 1/3" in err and "train: epoch 3/3" in err, err  # before: nothing
    assert "loss" in err and "samples/s" in err and "elapsed" in err
