"""`gpumlp train` beyond one plain run: checkpoints and --resume, Ctrl-C, --clip-norm, divergence, the plot
check before training, and --distributed (without mpi4py, and on 2 MPI ranks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpumlp as gm
from gpumlp.pipeline import CLI_MEAN, CLI_META, CLI_SCALE
from gpumlp.progress import ProgressBar

from cli_support import IRIS, ROOT, run, write_csv
from mpi_launch import LAUNCHER, launch


def test_resume_continues_exactly_with_the_same_scaling_and_classes(
    workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    write_csv(workdir / "iris.csv")
    rc, out, err = run(capsys, "train", *IRIS, "--epochs", "4", "--out", "unbroken.npz")
    assert rc == 0, err
    rc, out, err = run(capsys, "train", *IRIS, "--epochs", "2", "--out", "half.npz", "--checkpoint", "ck.npz")
    assert rc == 0 and "saved checkpoint to ck.npz" in out, err
    assert gm.load_checkpoint(workdir / "ck.npz").epoch == 2
    rc, out, err = run(capsys, "train", *IRIS, "--epochs", "4", "--out", "resumed.npz", "--resume", "ck.npz")
    assert rc == 0 and "error" not in err, err  # a ConvergenceWarning only: 4 epochs end still improving
    assert "4 epochs (resumed after epoch 2 from ck.npz)" in out

    unbroken, resumed = np.load(workdir / "unbroken.npz"), np.load(workdir / "resumed.npz")
    for key in (CLI_META, CLI_MEAN, CLI_SCALE):  # standardisation, classes, feature names
        np.testing.assert_array_equal(resumed[key], unbroken[key])
    assert not np.array_equal(np.load(workdir / "half.npz")["W0"], unbroken["W0"])  # 2 more epochs moved it
    for model in ("unbroken.npz", "resumed.npz"):
        assert run(capsys, "predict", model, "iris.csv", "--proba", "--out", model + ".npy")[0] == 0
    np.testing.assert_array_equal(np.load(workdir / "resumed.npz.npy"), np.load(workdir / "unbroken.npz.npy"))

    rc, out, err = run(capsys, "train", *IRIS, "--hidden", "32", "--epochs", "4", "--resume", "ck.npz")
    assert rc == 2 and "the checkpoint holds a 4-16-3 network, this run builds 4-32-3" in err
    rc, out, err = run(capsys, "predict", "ck.npz", "iris.csv")
    assert rc == 2 and "is a training checkpoint" in err and "--resume ck.npz --out" in err


def test_ctrl_c_rolls_back_checkpoints_and_exits_130(
    workdir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_csv(workdir / "iris.csv")
    tick = ProgressBar.__call__

    def interrupt_in_epoch_3(bar: ProgressBar, model: gm.MLP, epoch: int, logs: dict) -> None:
        tick(bar, model, epoch, logs)
        if epoch == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressBar, "__call__", interrupt_in_epoch_3)
    rc, out, err = run(capsys, "train", *IRIS, "--epochs", "5", "--out", "m.npz", "--checkpoint", "ck.npz")
    assert rc == 130 and out == ""
    assert err == (
        "gpumlp: interrupted; the model was rolled back to epoch 2; "
        "checkpoint in ck.npz (continue with --resume ck.npz)\n"
    )
    assert gm.load_checkpoint(workdir / "ck.npz").epoch == 2 and not (workdir / "m.npz").exists()


def test_clip_norm_bounds_the_step(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """One full-batch SGD step without momentum moves the weights by lr * min(C, ||g||) in global norm."""
    start = gm.MLP([2, 4, 2], hidden_activation="relu", output_activation="softmax", dtype="float64", seed=0)
    argv = [
        "train",
        "xor",
        "--hidden",
        "4",
        "--optimizer",
        "sgd",
        "--lr",
        "0.1",
        "--batch-size",
        "full",
        "--epochs",
        "1",
        "--dtype",
        "float64",
        "--backend",
        "numpy",
        "--val-split",
        "0",
        "--no-progress",
    ]
    steps = {}
    for clip in (None, "0.01"):
        rc, out, err = run(capsys, *argv, "--out", f"clip{clip}.npz", *(["--clip-norm", clip] if clip else []))
        assert rc == 0, err
        moved = [
            a - b
            for new, old in zip(gm.load(f"clip{clip}.npz").model.get_weights(), start.get_weights())
            for a, b in zip(new, old)
        ]
        steps[clip] = np.sqrt(sum(float(np.sum(d * d)) for d in moved))
    assert steps[None] > 0.1 * 0.01  # the gradient norm exceeds C, so the clip is active
    np.testing.assert_allclose(steps["0.01"], 0.1 * 0.01, rtol=1e-9)


def test_divergence_is_one_line_and_exit_1(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    np.savez(workdir / "reg.npz", X=X, y=X @ [1.0, -2.0, 0.5] + 3.0)
    argv = [
        "train",
        "reg.npz",
        "--optimizer",
        "sgd",
        "--lr",
        "1e6",
        "--scale",
        "none",
        "--batch-size",
        "64",
        "--val-split",
        "0",
        "--out",
        "m.npz",
        "--no-progress",
    ]
    rc, out, err = run(capsys, *argv, "--checkpoint", "ck.npz")
    assert rc == 1 and out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpumlp: error: training diverged in epoch 1"), err
    assert "lower --lr (this run: 1e+06)" in lines[0] and "--clip-norm 1.0" in lines[0] and "clip_norm=" not in lines[0]
    assert "checkpoint 'ck.npz' holds them" in lines[0]
    assert not (workdir / "m.npz").exists() and gm.load_checkpoint(workdir / "ck.npz").epoch == 0


def test_plot_without_matplotlib_fails_before_training(
    trained: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    rc, out, err = run(capsys, "train", "iris.csv", "--target", "species", "--plot", "loss.png", "--out", "new.npz")
    assert rc == 2 and "pip install matplotlib" in err and "pip install gpumlp[" not in err and out == ""
    assert not (trained / "new.npz").exists()


def test_distributed_without_mpi4py_is_one_line_and_exit_2(
    workdir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_csv(workdir / "iris.csv")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if it were not installed
    rc, out, err = run(capsys, "train", *IRIS, "--epochs", "2", "--distributed")
    assert rc == 2 and out == "" and not (workdir / "model.npz").exists()
    assert err.startswith(
        "gpumlp: error: --distributed: distributed training needs mpi4py and an MPI library: pip install mpi4py mpich"
    )
    assert err.endswith("then launch with mpiexec -n N\n") and len(err.splitlines()) == 1


@pytest.mark.mpi
@pytest.mark.skipif(isinstance(LAUNCHER, str), reason=str(LAUNCHER))
def test_bad_mpi_timeout_variable_is_named(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GPUMLP_MPI_TIMEOUT": "soon"}
    proc = subprocess.run(
        [sys.executable, "-m", "gpumlp", "train", "xor", "--distributed", "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr == (
        "gpumlp: error: $GPUMLP_MPI_TIMEOUT must be a number of seconds; got 'soon'\n"
    ), proc.stderr


@pytest.mark.mpi
@pytest.mark.skipif(isinstance(LAUNCHER, str), reason=str(LAUNCHER))
def test_distributed_two_ranks_equal_one_process(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    write_csv(workdir / "iris.csv")
    argv = ["train", *IRIS, "--epochs", "3", "--dtype", "float64"]
    code, log, _ = launch(
        *argv, "--distributed", "--out", "two.npz", program=("-m", "gpumlp"), env={"PYTHONPATH": str(ROOT)}
    )
    assert code == 0, log
    assert log.count("trained a") == 1 and "on numpy x 2 MPI processes: 3 epochs" in log  # rank 0 reports
    assert run(capsys, *argv, "--out", "one.npz")[0] == 0
    two, one = gm.load(workdir / "two.npz").model, gm.load(workdir / "one.npz").model
    for (W2, b2), (W1, b1) in zip(two.get_weights(), one.get_weights()):
        np.testing.assert_allclose(W2, W1, rtol=0, atol=1e-10)
        np.testing.assert_allclose(b2, b1, rtol=0, atol=1e-10)
