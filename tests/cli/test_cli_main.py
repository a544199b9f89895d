"""The `gpumlp` entry points (`gpumlp.cli:main`, `python -m gpumlp`) and how the command ends: bad input is
one clear line on stderr with exit status 2, never a traceback; a closed output pipe ends quietly; `bench`
hands its arguments to the benchmark script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpumlp.cli import EXIT_BROKEN_PIPE, bench, main

from cli_support import ROOT, run


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
        (
            ["train", "iris.csv", "--target", "species", "--resume", "model.npz", "--out", "m2.npz"],
            "not a training checkpoint",
        ),
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
    (trained / "features_only.csv").write_text(
        "".join(  # the species column (2) removed
            ",".join(c for i, c in enumerate(r.split(",")) if i != 2) + "\n" for r in rows
        )
    )
    text = (trained / "iris.csv").read_text().replace("virginica", "rosa")
    (trained / "other_labels.csv").write_text(text)
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpumlp: error: "), err
    assert message in lines[0]
    assert "Traceback" not in err


def test_closed_output_pipe_ends_quietly(tmp_path: Path) -> None:
    """`gpumlp ... | head`: the reader is gone; no error line, the status of a SIGPIPE death."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gpumlp", "info", "--backend", "numpy"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=tmp_path,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == EXIT_BROKEN_PIPE and proc.stderr == ""


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


def test_bench_runs_the_benchmark_script_with_its_arguments(
    workdir: Path, capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = workdir / "bench_train.py"
    script.write_text("import sys\nprint('bench args', sys.argv[1:])\nsys.exit(3)\n")
    monkeypatch.setattr(bench, "_bench_script", lambda: script)
    assert main(["bench", "--quick", "--configs", "tiny"]) == 3  # the script's own exit status
    assert "bench args ['--quick', '--configs', 'tiny']" in capfd.readouterr().out
    monkeypatch.setattr(bench, "_bench_script", lambda: None)
    assert main(["bench"]) == 2
    assert "bench_train.py not found" in capfd.readouterr().err
