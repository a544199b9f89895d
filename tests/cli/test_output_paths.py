"""The command's output files: never one of its inputs, checked before any work, written atomically,
and a model too large for memory refused with exit 2 and both numbers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import gpumlp.memory as memory

from cli_support import run, write_csv


def test_train_refuses_to_write_the_model_over_its_data(workdir, capsys):
    write_csv(workdir / "iris.csv")
    data = (workdir / "iris.csv").read_bytes()
    rc, out, err = run(capsys, "train", "iris.csv", "--target", "species", "--out", "iris.csv", "--no-progress")
    assert rc == 2 and "--out='iris.csv' is the same file as the data file 'iris.csv'" in err
    assert (workdir / "iris.csv").read_bytes() == data


def test_the_same_file_under_another_name_or_through_a_link_is_refused(workdir, capsys):
    write_csv(workdir / "iris.csv")
    os.link(workdir / "iris.csv", workdir / "hard.csv")
    (workdir / "soft.csv").symlink_to(workdir / "iris.csv")
    data = (workdir / "iris.csv").read_bytes()
    for data_arg, out_arg in (("hard.csv", "iris.csv"), ("iris.csv", "soft.csv"), ("./iris.csv", "sub/../iris.csv")):
        (workdir / "sub").mkdir(exist_ok=True)
        rc, out, err = run(capsys, "train", data_arg, "--target", "species", "--out", out_arg, "--no-progress")
        assert rc == 2 and "is the same file as the data file" in err, (data_arg, out_arg, err)
    assert (workdir / "iris.csv").read_bytes() == data


def test_predict_refuses_to_write_over_its_model_or_data(trained, capsys):
    model, data = (trained / "model.npz").read_bytes(), (trained / "iris.csv").read_bytes()
    (trained / "pred.npy").symlink_to(trained / "model.npz")
    rc, out, err = run(capsys, "predict", "model.npz", "iris.csv", "--out", "iris.csv")
    assert rc == 2 and "is the same file as the data file" in err
    rc, out, err = run(capsys, "predict", "model.npz", "iris.csv", "--out", "pred.npy")
    assert rc == 2 and "is the same file as the model file 'model.npz'" in err
    assert (trained / "model.npz").read_bytes() == model and (trained / "iris.csv").read_bytes() == data


def test_resume_and_checkpoint_may_be_the_same_file(trained, capsys):
    argv = ["train", "iris.csv", "--target", "species", "--no-progress", "--checkpoint", "ck.npz", "--out", "m2.npz"]
    assert run(capsys, *argv, "--epochs", "1")[0] == 0
    rc, out, err = run(capsys, *argv, "--epochs", "2", "--resume", "ck.npz")
    assert rc == 0, err


def test_output_paths_are_checked_before_training(workdir, capsys):
    write_csv(workdir / "iris.csv")
    os.mkfifo(workdir / "pipe.npz")
    (workdir / "ro.npz").write_bytes(b"keep")
    os.chmod(workdir / "ro.npz", 0o444)
    long_name = "a" * 300 + ".npz"
    cases = [
        ("--out", "pipe.npz", "--out='pipe.npz' is a FIFO"),
        ("--checkpoint", "pipe.npz", "--checkpoint='pipe.npz' is a FIFO"),
        ("--out", "ro.npz", "--out='ro.npz' is read-only"),
        ("--out", long_name, "the file name is 304 bytes long"),
        ("--checkpoint", long_name, "the file name is 304 bytes long"),
    ]
    for flag, path, message in cases:
        rc, out, err = run(capsys, "train", "iris.csv", "--target", "species", flag, path, "--no-progress")
        assert rc == 2 and message in err and "trained" not in out, (flag, path, err)
    assert stat.S_ISFIFO(os.stat(workdir / "pipe.npz").st_mode) and (workdir / "ro.npz").read_bytes() == b"keep"


def test_predict_out_is_checked_before_the_model_is_read(trained, capsys):
    os.mkfifo(trained / "pipe.csv")
    rc, out, err = run(capsys, "predict", "missing-model.npz", "iris.csv", "--out", "pipe.csv")
    assert rc == 2 and "--out='pipe.csv' is a FIFO" in err


@pytest.mark.parametrize("name", ["pred.csv", "pred.npy"])
def test_predict_out_is_written_atomically(trained, capsys, monkeypatch, name):
    old = b"previous predictions\n"
    (trained / name).write_bytes(old)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    rc, out, err = run(capsys, "predict", "model.npz", "iris.csv", "--out", name)
    assert rc == 2 and f"cannot write '{name}': No space left on device" in err and ".tmp-" not in err
    assert (trained / name).read_bytes() == old
    assert sorted(p.name for p in Path(trained).iterdir() if p.name.startswith(".tmp-")) == []


def test_a_model_too_large_for_memory_is_exit_2_with_both_numbers(workdir, capsys, monkeypatch):
    write_csv(workdir / "iris.csv")
    monkeypatch.setattr(memory, "host_available", lambda: 10**9)
    rc, out, err = run(capsys, "train", "iris.csv", "--target", "species", "--hidden", "100000000", "--no-progress")
    assert rc == 2 and err.count("\n") == 1
    assert "training a 4-100000000-3 MLP needs about" in err and "but only 1 GB is available on the host" in err
    needed = float(err.split("needs about ")[1].split(" GB")[0])
    assert needed > 3.2  # the float32 weights and biases alone: (4 + 1 + 3) x 10^8 x 4 bytes = 3.2 GB


def test_an_unestimated_memory_error_is_one_line_and_exit_2(workdir, capsys, monkeypatch):
    import gpumlp.cli.train as train

    write_csv(workdir / "iris.csv")

    def out_of_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 7.28 TiB for an array with shape (1000000, 1000000)")

    monkeypatch.setattr(train, "MLP", out_of_memory)
    rc, out, err = run(capsys, "train", "iris.csv", "--target", "species", "--no-progress")
    assert rc == 2 and err == "gpumlp: error: Unable to allocate 7.28 TiB for an array with shape (1000000, 1000000)\n"
