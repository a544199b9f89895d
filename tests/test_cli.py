"""The `gpumlp` command end to end: train on a CSV the test writes, predict, evaluate, plot, info,
bench; and bad input giving one clear line on stderr with exit status 2, never a traceback."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpumlp as gm
from gpumlp import cli
from gpumlp.cli import main
from gpumlp.progress import ProgressBar
from test_distributed import LAUNCHER, launch

ROOT = Path(__file__).resolve().parents[1]
LABELS = np.array(["setosa", "versicolor", "virginica"])


def _write_csv(path: Path, n: int = 150, seed: int = 0, label_col: bool = True) -> tuple[np.ndarray, np.ndarray]:
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


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_train_predict_evaluate_plot_end_to_end(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    X, labels = _write_csv(workdir / "iris.csv")
    rc, out, err = _run(
        capsys, "train", "iris.csv", "--target", "species", "--hidden", "16,16", "--epochs", "30",
        "--val-split", "0.2", "--out", "model.npz", "--plot", "loss.png",
        "--backend", "numpy", "--no-progress",
    )
    assert rc == 0, err
    assert "val accuracy" in out and "saved model to model.npz" in out and err == ""
    png = (workdir / "loss.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = pytest.importorskip("matplotlib.image").imread(workdir / "loss.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100

    # Predict labels from the same CSV: the training target column is dropped by name.
    rc, out, err = _run(capsys, "predict", "model.npz", "iris.csv", "--out", "pred.csv")
    assert rc == 0, err
    with open(workdir / "pred.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["species"] and len(rows) == 151
    predicted = np.array([r[0] for r in rows[1:]])
    assert set(predicted) <= set(LABELS) and np.mean(predicted == labels) > 0.9

    rc, out, err = _run(capsys, "predict", "model.npz", "iris.csv", "--proba", "--out", "proba.npy")
    assert rc == 0, err
    proba = np.load(workdir / "proba.npy")
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)

    rc, out, err = _run(capsys, "predict", "model.npz", "iris.csv")  # CSV on stdout
    assert rc == 0 and out.splitlines()[0] == "species" and len(out.splitlines()) == 151

    rc, out, err = _run(capsys, "evaluate", "model.npz", "iris.csv")
    assert rc == 0, err
    assert "accuracy" in out and "confusion matrix" in out and "virginica" in out
    rc, out, err = _run(capsys, "evaluate", "model.npz", "iris.csv", "--json")
    report = json.loads(out)
    assert report["accuracy"] > 0.9 and report["classes"] == list(LABELS)
    assert np.sum(report["confusion_matrix"]) == 150 and np.isfinite(report["loss"])

    rc, out, err = _run(capsys, "info", "--backend", "numpy")
    assert rc == 0 and "backend" in out and "numpy" in out
    rc, out, err = _run(capsys, "info", "--json", "--backend", "numpy")
    assert json.loads(out)["backend"] == "numpy"


def test_regression_npz_and_builtin_dataset(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    np.savez(workdir / "reg.npz", X=X, y=X @ [1.0, -2.0, 0.5] + 3.0)
    rc, out, err = _run(
        capsys, "train", "reg.npz", "--epochs", "40", "--lr", "0.01", "--out", "reg_model.npz", "--no-progress"
    )
    assert rc == 0, err
    assert "identity output, mse" in out
    rc, out, err = _run(capsys, "evaluate", "reg_model.npz", "reg.npz", "--json")
    assert rc == 0 and json.loads(out)["r2"] > 0.9
    rc, out, err = _run(capsys, "predict", "reg_model.npz", "reg.npz", "--out", "values.npy")
    assert rc == 0 and np.load(workdir / "values.npy").shape == (200,)
    rc, out, err = _run(capsys, "train", "xor", "--hidden", "4", "--epochs", "2", "--out", "xor.npz", "--no-progress")
    assert rc == 0, err


def test_bench_runs_the_benchmark_script_with_its_arguments(
    workdir: Path, capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = workdir / "bench_train.py"
    script.write_text("import sys\nprint('bench args', sys.argv[1:])\nsys.exit(3)\n")
    monkeypatch.setattr(cli, "_bench_script", lambda: script)
    assert main(["bench", "--quick", "--configs", "tiny"]) == 3  # the script's own exit status
    assert "bench args ['--quick', '--configs', 'tiny']" in capfd.readouterr().out
    monkeypatch.setattr(cli, "_bench_script", lambda: None)
    assert main(["bench"]) == 2
    assert "bench_train.py not found" in capfd.readouterr().err


@pytest.fixture
def trained(workdir: Path, capsys: pytest.CaptureFixture) -> Path:
    _write_csv(workdir / "iris.csv")
    argv = ["train", "iris.csv", "--target", "species", "--epochs", "2", "--out", "model.npz", "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    return workdir


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "missing.csv"], "no such file: 'missing.csv'"),
        (["train", "iris.csv", "--target", "colour"], "no column named 'colour'"),
        (["train", "iris.csv", "--target", "9"], "column 9 is out of range"),
        (["train", "iris.csv", "--hidden", "64,x"], "comma-separated layer widths"),
        (["train", "iris.csv", "--target", "species", "--lr", "-1"], "lr must be > 0"),
        (["train", "iris.csv", "--target", "species", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "iris.csv"], "'species' (column 2) has the non-numeric value"),
        (["train", "iris.csv", "--target", "sepal_len"], "'species' (column 2) has the non-numeric value"),
        (["train", "iris.csv", "--target", "species", "--val-split", "0.999"], "--val-split 0.999: test_size"),
        (["train", "iris.csv", "--target", "species", "--val-split", "0.001"], "leaves no test samples"),
        (["evaluate", "model.npz", "features_only.csv"], "'petal_wid' was taken as the target"),
        (["train", "notes.txt"], "unsupported data file type '.txt'"),
        (["train", "iris.csv", "--target", "species", "--plot", "loss.xyz"], "cannot save a plot as 'loss.xyz'"),
        (["train", "iris.csv", "--target", "species", "--plot", "nodir/loss.png"], "directory"),
        (["predict", "nomodel.npz", "iris.csv"], "no such model file"),
        (["predict", "model.npz", "narrow.csv"], "missing feature columns"),
        (["predict", "model.npz", "narrow_noheader.csv"], "3 feature columns, but the model expects 4"),
        (["predict", "iris.csv", "iris.csv"], "not a readable gpumlp model file"),
        (["evaluate", "model.npz", "other_labels.csv"], "is not one of the model's classes"),
        (["train", "iris.csv", "--target", "species", "--clip-norm", "0"], "--clip-norm: must be a positive"),
        (["train", "iris.csv", "--target", "species", "--divergence-threshold", "1"], "must be > 1"),
        (["train", "iris.csv", "--target", "species", "--checkpoint-every", "2"], "needs --checkpoint PATH"),
        (["train", "iris.csv", "--target", "species", "--checkpoint", "model.npz"], "both name 'model.npz'"),
        (["train", "iris.csv", "--target", "species", "--checkpoint", "nodir/ck.npz"], "does not exist"),
        (["train", "iris.csv", "--target", "species", "--resume", "absent.npz"], "no such checkpoint file"),
        (["train", "iris.csv", "--target", "species", "--resume", "model.npz"], "not a training checkpoint"),
        (["train", "iris.csv", "--target", "species", "--mpi-timeout", "5"], "--mpi-timeout applies to --distributed"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(
    trained: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    (trained / "notes.txt").write_text("hello\n")
    (trained / "narrow.csv").write_text("a,b,c\n1,2,3\n")
    (trained / "narrow_noheader.csv").write_text("1,2,3\n4,5,6\n")
    rows = (trained / "iris.csv").read_text().splitlines()
    (trained / "features_only.csv").write_text("".join(  # the species column (2) removed
        ",".join(c for i, c in enumerate(r.split(",")) if i != 2) + "\n" for r in rows))
    text = (trained / "iris.csv").read_text().replace("virginica", "rosa")
    (trained / "other_labels.csv").write_text(text)
    rc, out, err = _run(capsys, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpumlp: error: "), err
    assert message in lines[0]
    assert "Traceback" not in err


def test_csv_header_detection_missing_values_and_bom(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """A headerless CSV with text labels keeps its first row; a missing value, a header-only file
    and a text column right of the target are one line each; a spreadsheet's BOM is dropped."""
    rows = [f"{i % 3}.5,{i % 2}.25,{'cat' if i % 2 else 'dog'}" for i in range(12)]
    (workdir / "noheader.csv").write_text("\n".join(rows) + "\n")
    rc, out, err = _run(capsys, "train", "noheader.csv", "--epochs", "1", "--out", "m.npz", "--no-progress")
    assert rc == 0 and "12 training samples" in out, err
    rc, out, err = _run(capsys, "predict", "m.npz", "noheader.csv", "--target", "2")
    assert rc == 0 and len(out.splitlines()) == 13 and out.splitlines()[0] == "prediction", err
    (workdir / "numeric_names.csv").write_text("0,1,label\n" + "\n".join(rows) + "\n")  # pandas' default names
    rc, out, err = _run(capsys, "train", "numeric_names.csv", "--epochs", "1", "--out", "n.npz", "--no-progress")
    assert rc == 0 and "12 training samples" in out and "2-128-2" in out, err

    (workdir / "bom.csv").write_text("\ufeffa,b,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    rc, out, err = _run(capsys, "train", "bom.csv", "--target", "label", "--epochs", "1", "--out", "b.npz",
                        "--no-progress")
    assert rc == 0 and "12 training samples" in out, err
    rc, out, err = _run(capsys, "train", "bom.csv", "--target", "a", "--no-progress")
    assert rc == 2 and "'label' (column 2) has the non-numeric value 'dog'" in err, err

    (workdir / "header_only.csv").write_text("a,b,label\n")
    (workdir / "gap.csv").write_text("a,b,label\n1,2,cat\n3,,dog\n")
    (workdir / "no_label.csv").write_text("a,b,label\n1,2,cat\n3,4,\n")
    for argv, message in (
        (["train", "header_only.csv"], "header_only.csv: no data rows"),
        (["train", "gap.csv"], "gap.csv: line 3: 'b' (column 1) is empty (a missing value)"),
        (["train", "no_label.csv"], "no_label.csv: line 3: the target 'label' (column 2) is empty"),
        (["evaluate", "b.npz", "no_label.csv"], "line 3: the target 'label' (column 2) is empty"),
    ):
        rc, out, err = _run(capsys, *argv)
        assert rc == 2 and err.count("\n") == 1 and err.startswith("gpumlp: error: ") and message in err, err
    rc, out, err = _run(capsys, "predict", "b.npz", "no_label.csv")  # predict ignores the target column
    assert rc == 0 and len(out.splitlines()) == 3, err


def test_closed_output_pipe_ends_quietly(tmp_path: Path) -> None:
    """`gpumlp ... | head`: the reader is gone; no error line, the status of a SIGPIPE death."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gpumlp", "info", "--backend", "numpy"], stdout=write_end, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == cli.EXIT_BROKEN_PIPE and proc.stderr == ""


def test_plot_without_matplotlib_fails_before_training(
    trained: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    rc, out, err = _run(capsys, "train", "iris.csv", "--target", "species", "--plot", "loss.png", "--out", "new.npz")
    assert rc == 2 and "gpumlp[plot]" in err and out == ""
    assert not (trained / "new.npz").exists()


def test_python_dash_m_entry_point_and_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(
        [sys.executable, "-m", "gpumlp", "info", "--backend", "numpy"], capture_output=True, text=True, env=env
    )
    assert ok.returncode == 0 and "backend" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "gpumlp", "train", str(tmp_path / "absent.csv")], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1 and "no such file" in bad.stderr


# ----- checkpoints, resume, clipping, divergence, Ctrl-C, --distributed ------------------------
IRIS = ["iris.csv", "--target", "species", "--hidden", "16", "--val-split", "0.2", "--batch-size", "16",
        "--backend", "numpy", "--no-progress"]


def test_resume_continues_exactly_with_the_same_scaling_and_classes(
    workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    _write_csv(workdir / "iris.csv")
    rc, out, err = _run(capsys, "train", *IRIS, "--epochs", "4", "--out", "unbroken.npz")
    assert rc == 0, err
    rc, out, err = _run(capsys, "train", *IRIS, "--epochs", "2", "--out", "half.npz", "--checkpoint", "ck.npz")
    assert rc == 0 and "saved checkpoint to ck.npz" in out, err
    assert gm.load_checkpoint(workdir / "ck.npz").epoch == 2
    rc, out, err = _run(capsys, "train", *IRIS, "--epochs", "4", "--out", "resumed.npz", "--resume", "ck.npz")
    assert rc == 0 and err == "", err
    assert "4 epochs (resumed after epoch 2 from ck.npz)" in out

    unbroken, resumed = np.load(workdir / "unbroken.npz"), np.load(workdir / "resumed.npz")
    for key in (cli.CLI_META, cli.CLI_MEAN, cli.CLI_SCALE):  # standardisation, classes, feature names
        np.testing.assert_array_equal(resumed[key], unbroken[key])
    assert not np.array_equal(np.load(workdir / "half.npz")["W0"], unbroken["W0"])  # 2 more epochs moved it
    for model in ("unbroken.npz", "resumed.npz"):
        assert _run(capsys, "predict", model, "iris.csv", "--proba", "--out", model + ".npy")[0] == 0
    np.testing.assert_array_equal(np.load(workdir / "resumed.npz.npy"), np.load(workdir / "unbroken.npz.npy"))

    rc, out, err = _run(capsys, "train", *IRIS, "--hidden", "32", "--epochs", "4", "--resume", "ck.npz")
    assert rc == 2 and "the checkpoint holds a 4-16-3 network, this run builds 4-32-3" in err
    rc, out, err = _run(capsys, "predict", "ck.npz", "iris.csv")
    assert rc == 2 and "is a training checkpoint" in err and "--resume ck.npz --out" in err


def test_ctrl_c_rolls_back_checkpoints_and_exits_130(
    workdir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_csv(workdir / "iris.csv")
    tick = ProgressBar.__call__

    def interrupt_in_epoch_3(bar: ProgressBar, model: gm.MLP, epoch: int, logs: dict) -> None:
        tick(bar, model, epoch, logs)
        if epoch == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressBar, "__call__", interrupt_in_epoch_3)
    rc, out, err = _run(capsys, "train", *IRIS, "--epochs", "5", "--out", "m.npz", "--checkpoint", "ck.npz")
    assert rc == 130 and out == ""
    assert err == (
        "gpumlp: interrupted; the model was rolled back to epoch 2; "
        "checkpoint in ck.npz (continue with --resume ck.npz)\n"
    )
    assert gm.load_checkpoint(workdir / "ck.npz").epoch == 2 and not (workdir / "m.npz").exists()


def test_clip_norm_bounds_the_step(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """One full-batch SGD step without momentum moves the weights by lr * min(C, ||g||) in global norm."""
    start = gm.MLP([2, 4, 2], hidden_activation="relu", output_activation="softmax", dtype="float64", seed=0)
    argv = ["train", "xor", "--hidden", "4", "--optimizer", "sgd", "--lr", "0.1", "--batch-size", "full",
            "--epochs", "1", "--dtype", "float64", "--backend", "numpy", "--no-progress"]
    steps = {}
    for clip in (None, "0.01"):
        rc, out, err = _run(capsys, *argv, "--out", f"clip{clip}.npz", *(["--clip-norm", clip] if clip else []))
        assert rc == 0, err
        moved = [a - b for new, old in zip(gm.load(f"clip{clip}.npz").get_weights(), start.get_weights())
                 for a, b in zip(new, old)]
        steps[clip] = np.sqrt(sum(float(np.sum(d * d)) for d in moved))
    assert steps[None] > 0.1 * 0.01  # the gradient norm exceeds C, so the clip is active
    np.testing.assert_allclose(steps["0.01"], 0.1 * 0.01, rtol=1e-9)


def test_divergence_is_one_line_and_exit_1(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    np.savez(workdir / "reg.npz", X=X, y=X @ [1.0, -2.0, 0.5] + 3.0)
    argv = ["train", "reg.npz", "--optimizer", "sgd", "--lr", "1e6", "--out", "m.npz", "--no-progress"]
    rc, out, err = _run(capsys, *argv, "--checkpoint", "ck.npz")
    assert rc == 1 and out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpumlp: error: training diverged in epoch 1"), err
    assert "lower lr (this run: 1e+06)" in lines[0] and "checkpoint 'ck.npz' holds them" in lines[0]
    assert not (workdir / "m.npz").exists() and gm.load_checkpoint(workdir / "ck.npz").epoch == 0


def test_distributed_without_mpi4py_is_one_line_and_exit_2(
    workdir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_csv(workdir / "iris.csv")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if it were not installed
    rc, out, err = _run(capsys, "train", *IRIS, "--epochs", "2", "--distributed")
    assert rc == 2 and out == "" and not (workdir / "model.npz").exists()
    assert err == (
        "gpumlp: error: --distributed: distributed training needs mpi4py and an MPI library: "
        "pip install 'gpumlp[mpi]' (mpi4py plus the mpich wheel), then launch with mpiexec -n N\n"
    )


@pytest.mark.mpi
@pytest.mark.skipif(isinstance(LAUNCHER, str), reason=str(LAUNCHER))
def test_bad_mpi_timeout_variable_is_named(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GPUMLP_MPI_TIMEOUT": "soon"}
    proc = subprocess.run([sys.executable, "-m", "gpumlp", "train", "xor", "--distributed", "--no-progress"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stderr == (
        "gpumlp: error: $GPUMLP_MPI_TIMEOUT must be a number of seconds; got 'soon'\n"), proc.stderr


@pytest.mark.mpi
@pytest.mark.skipif(isinstance(LAUNCHER, str), reason=str(LAUNCHER))
def test_distributed_two_ranks_equal_one_process(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    _write_csv(workdir / "iris.csv")
    argv = ["train", *IRIS, "--epochs", "3", "--dtype", "float64"]
    code, log, _ = launch(*argv, "--distributed", "--out", "two.npz", program=("-m", "gpumlp"),
                          env={"PYTHONPATH": str(ROOT)})
    assert code == 0, log
    assert log.count("trained a") == 1 and "on numpy x 2 MPI processes: 3 epochs" in log  # rank 0 reports
    assert _run(capsys, *argv, "--out", "one.npz")[0] == 0
    two, one = gm.load(workdir / "two.npz"), gm.load(workdir / "one.npz")
    for (W2, b2), (W1, b1) in zip(two.get_weights(), one.get_weights()):
        np.testing.assert_allclose(W2, W1, rtol=0, atol=1e-10)
        np.testing.assert_allclose(b2, b1, rtol=0, atol=1e-10)
