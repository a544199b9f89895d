"""Hostile input to the `gpumlp` command (issue 12): hand-edited or foreign model metadata, duplicate and
ragged CSV columns, missing-value markers in the target, empty --hidden widths, values beyond float32 and
feature scales whose squares overflow. Each is one `gpumlp: error:` line naming the file and what is
wrong, with exit status 2, or (for the scales) a correct result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gpumlp.pipeline import CLI_MEAN, CLI_META, CLI_SCALE

from cli_support import run


def _one_error_line(rc: int, err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("gpumlp: error: "), err
    assert "Traceback" not in err
    for part in parts:
        assert part in lines[0], err


def _edit_model(path: Path, out: Path, meta_change: dict | None = None, arrays: dict | None = None) -> None:
    with np.load(path) as z:
        stored = {k: z[k] for k in z.files}
    if meta_change is not None:
        meta = json.loads(stored[CLI_META].tobytes())
        for key, value in meta_change.items():
            if value is _DROP:
                meta.pop(key)
            else:
                meta[key] = value
        stored[CLI_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    for key, value in (arrays or {}).items():
        if value is _DROP:
            stored.pop(key)
        else:
            stored[key] = value
    np.savez(out, **stored)


_DROP = object()


@pytest.mark.parametrize(
    "meta_change, arrays, field",
    [
        ({"task": _DROP}, None, "'task'"),
        ({"task": "ranking"}, None, "'task'"),
        ({"classes": _DROP}, None, "'classes'"),
        ({"classes": "abc"}, None, "'classes'"),
        ({"classes": ["a", "b"]}, None, "'classes': the network has 3 output(s)"),
        ({"classes": ["a", "b", "c", "d"]}, None, "'classes'"),
        ({"classes": [["a"], "b", "c"]}, None, "'classes': labels must be strings or finite numbers"),
        ({"classes": ["a", "a", "b"]}, None, "labels must be unique"),
        ({"loss": "hinge"}, None, "'loss'"),
        ({"loss": "mse"}, None, "'loss'"),
        ({"features": 5}, None, "'features'"),
        ({"features": ["a", "b"]}, None, "'features': 2 names for a network of 4 inputs"),
        ({"target": ["x"]}, None, "'target'"),
        (None, {CLI_META: np.frombuffer(b"[1, 2]", dtype=np.uint8)}, "expected a JSON object"),
        (None, {CLI_META: np.frombuffer(b"{oops", dtype=np.uint8)}, "corrupted CLI metadata"),
        (None, {CLI_MEAN: _DROP}, f"no {CLI_MEAN!r} array"),
        (None, {CLI_SCALE: np.ones(3)}, f"{CLI_SCALE} must have shape (4,)"),
        (None, {CLI_SCALE: np.zeros(4)}, "must be positive"),
        (None, {CLI_MEAN: np.full(4, np.nan)}, "NaN or infinite"),
        (None, {CLI_MEAN: np.array(["a"] * 4)}, f"non-float arrays where weights belong: {CLI_MEAN}"),
    ],
)
def test_edited_cli_metadata_is_one_line_naming_the_field(
    trained: Path, capsys: pytest.CaptureFixture, meta_change: dict | None, arrays: dict | None, field: str
) -> None:
    _edit_model(trained / "model.npz", trained / "edited.npz", meta_change, arrays)
    for command in ("predict", "evaluate"):
        rc, out, err = run(capsys, command, "edited.npz", "iris.csv")
        _one_error_line(rc, err, "edited.npz", field)


def test_duplicate_header_names_are_refused(trained: Path, capsys: pytest.CaptureFixture) -> None:
    text = (trained / "iris.csv").read_text()
    (trained / "dup.csv").write_text(text.replace("sepal_wid", "sepal_len", 1))
    for argv in (["train", "dup.csv", "--target", "species"], ["predict", "model.npz", "dup.csv"]):
        rc, out, err = run(capsys, *argv)
        _one_error_line(rc, err, "dup.csv", "names column 'sepal_len' twice (columns 0 and 1)")
    rc, out, err = run(capsys, "evaluate", "model.npz", "dup.csv")
    _one_error_line(rc, err, "names column 'sepal_len' twice")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda cells: cells[:3], "line 5 has 3 cells, but the header has 5 (a missing cell"),
        (lambda cells: [*cells, "7.5"], "line 5 has 6 cells, but the header has 5 (an extra cell"),
        (lambda cells: [*cells, ""], "line 5 has 6 cells"),
    ],
)
def test_ragged_rows_are_reported_with_their_line(
    trained: Path, capsys: pytest.CaptureFixture, edit, message: str
) -> None:
    lines = (trained / "iris.csv").read_text().splitlines()
    lines[4] = ",".join(edit(lines[4].split(",")))
    (trained / "ragged.csv").write_text("\n".join(lines) + "\n")
    for argv in (["train", "ragged.csv", "--target", "species"], ["predict", "model.npz", "ragged.csv"]):
        rc, out, err = run(capsys, *argv)
        _one_error_line(rc, err, "ragged.csv", message)


@pytest.mark.parametrize("marker", ["NA", "N/A", "nan", "NaN", "null", "None", "?", "inf"])
def test_a_missing_value_marker_in_the_target_is_not_a_class(
    workdir: Path, capsys: pytest.CaptureFixture, marker: str
) -> None:
    rng = np.random.default_rng(0)
    rows = [f"{a:.3f},{b:.3f},{int(a > 0)}" for a, b in rng.normal(size=(30, 2))]
    rows[6] = rows[6].rsplit(",", 1)[0] + "," + marker
    (workdir / "na.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    rc, out, err = run(capsys, "train", "na.csv", "--epochs", "1", "--no-progress")
    _one_error_line(rc, err, "na.csv: line 8: the target 'label' (column 2) is")
    assert repr(marker) in err
    assert not (workdir / "model.npz").exists()


def test_a_missing_target_column_lists_a_few_names(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    names = [f"f{i}" for i in range(5000)]
    (workdir / "wide.csv").write_text(",".join(names) + "\n" + ",".join(["1"] * 5000) + "\n")
    rc, out, err = run(capsys, "train", "wide.csv", "--target", "label")
    _one_error_line(rc, err, "no column named 'label'; columns are f0, f1,", "f9 ... and 4990 more")
    assert len(err) < 300


@pytest.mark.parametrize("hidden", ["10,,10", "", ",", "10,", ",10", " "])
def test_empty_hidden_widths_are_refused(trained: Path, capsys: pytest.CaptureFixture, hidden: str) -> None:
    rc, out, err = run(capsys, "train", "iris.csv", "--target", "species", "--hidden", hidden)
    _one_error_line(rc, err, "argument --hidden: expected comma-separated layer widths", repr(hidden))


def _two_blobs(path: Path, n: int = 60, column_scale: float = 1.0, odd: str | None = None) -> np.ndarray:
    """Two classes told apart by feature 0, which is multiplied by ``column_scale``; row 3's first cell
    replaced by ``odd``. Returns the features as written."""
    rng = np.random.default_rng(3)
    y = np.arange(n) % 2
    X = rng.normal(size=(n, 3)) + 3.0 * y[:, None] * np.array([1.0, 0.0, 0.0])
    X[:, 0] *= column_scale
    rows = [",".join([repr(float(v)) for v in x] + [str(t)]) for x, t in zip(X, y)]
    if odd is not None:
        rows[2] = odd + rows[2][rows[2].index(",") :]
    path.write_text("a,b,c,label\n" + "\n".join(rows) + "\n")
    return X


def test_scaling_statistics_of_a_huge_feature_do_not_overflow(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """A feature of ~1e154 squares past float64's range: its std must still be right, not inf (which zeroed it)."""
    import statistics

    X = _two_blobs(workdir / "huge.csv", column_scale=1e154)
    rc, out, err = run(
        capsys,
        "train",
        "huge.csv",
        "--epochs",
        "60",
        "--hidden",
        "8",
        "--lr",
        "0.01",
        "--no-progress",
        "--val-split",
        "0",
    )
    assert rc == 0, err
    with np.load(workdir / "model.npz") as z:
        mean, scale = z[CLI_MEAN], z[CLI_SCALE]
    for j in range(3):  # statistics works in exact fractions: an independent reference
        np.testing.assert_allclose(mean[j], statistics.fmean(X[:, j]), rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(scale[j], statistics.pstdev(X[:, j]), rtol=1e-12)
    assert 1e153 < scale[0] < 1e155
    rc, out, err = run(capsys, "evaluate", "model.npz", "huge.csv", "--json")
    assert rc == 0 and json.loads(out)["accuracy"] > 0.9, (out, err)  # the huge column carries the label


def test_values_beyond_float32_are_named_not_nan(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    _two_blobs(workdir / "plain.csv")
    assert run(capsys, "train", "plain.csv", "--epochs", "1", "--out", "m.npz", "--no-progress")[0] == 0
    _two_blobs(workdir / "over.csv", odd="1e39")
    for argv in (["predict", "m.npz", "over.csv"], ["evaluate", "m.npz", "over.csv"]):
        rc, out, err = run(capsys, *argv)
        _one_error_line(
            rc, err, "over.csv: a standardised feature holds the value", "overflows the model's dtype float32"
        )
        assert out == ""
    rc, out, err = run(capsys, "train", "over.csv", "--scale", "none", "--no-progress")
    _one_error_line(rc, err, "over.csv: a feature holds the value 1e+39, which overflows the model's dtype float32")
    rc, out, err = run(
        capsys, "train", "over.csv", "--scale", "none", "--dtype", "float64", "--epochs", "1", "--no-progress"
    )
    assert rc == 0, err
    np.savez(workdir / "reg.npz", X=np.ones((4, 2)), y=np.array([1.0, 2.0, 1e300, 3.0]))
    rc, out, err = run(capsys, "train", "reg.npz", "--loss", "mse", "--no-progress")
    _one_error_line(rc, err, "reg.npz: a standardised target holds the value", "which overflows")


@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_sigterm_and_sighup_roll_back_checkpoint_and_exit_128_plus_n(tmp_path: Path, signame: str, code: int) -> None:
    """`kill` (SIGTERM) or a closed terminal (SIGHUP) during training: as Ctrl-C, the model rolls back, the
    checkpoint holds the last complete epoch, one line says so, and the status is 128 + the signal."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from cli_support import ROOT, write_csv

    write_csv(tmp_path / "iris.csv", n=600)
    argv = ["train", "iris.csv", "--target", "species", "--epochs", "100000", "--batch-size", "4"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpumlp", *argv, "--checkpoint", "ck.npz", "--backend", "numpy", "--no-progress"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "ck.npz").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)  # a few more epochs
        proc.send_signal(getattr(signal, signame))
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gpumlp: terminated by {signame}; the model was rolled back"), err
    import re

    import gpumlp as gm

    epoch = int(re.search(r"rolled back to epoch (\d+)", err).group(1))
    ck = gm.load_checkpoint(tmp_path / "ck.npz")
    assert epoch >= 1 and ck.epoch == epoch and len(ck.history["loss"]) == epoch
    assert "continue with --resume ck.npz" in err


def test_predict_into_head_ends_quietly_with_141(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """`gpumlp predict ... | head -1`: the reader leaves after one line; no error, the status of SIGPIPE (141)."""
    import os
    import subprocess
    import sys

    from cli_support import ROOT

    _two_blobs(workdir / "small.csv")
    assert run(capsys, "train", "small.csv", "--epochs", "1", "--out", "m.npz", "--no-progress")[0] == 0
    rng = np.random.default_rng(0)
    np.savetxt(
        workdir / "many.csv", rng.normal(size=(100_000, 3)), delimiter=",", header="a,b,c", comments="", fmt="%.3f"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpumlp", "predict", "m.npz", "many.csv"],  # ~200 KB of output: beyond a pipe's 64 KB
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.readline() == b"label\n"
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == b""


@pytest.mark.mpi
@pytest.mark.parametrize(
    "rank1_args, message",
    [
        (["missing.csv"], "no such file: 'missing.csv'"),
        (["iris.csv", "--hidden", "0"], "argument --hidden: layer widths must be positive"),
        (["iris.csv", "--clip-norm", "1"], "clip_norm: rank 0 has None, rank 1 has 1.0"),
    ],
)
def test_distributed_train_where_one_rank_fails_early_ends_the_job(
    workdir: Path, rank1_args: list[str], message: str
) -> None:
    """`mpiexec -n 1 gpumlp train ... : -n 1 gpumlp train <bad> ...`: the job ends with status 2 at once."""
    import os

    from cli_support import ROOT, write_csv
    from mpi_launch import LAUNCHER, launch_ranks

    if isinstance(LAUNCHER, str):
        pytest.skip(LAUNCHER)
    write_csv(workdir / "iris.csv")
    common = ["-m", "gpumlp", "train", "--target", "species", "--epochs", "2", "--distributed", "--no-progress"]
    env = {"PYTHONPATH": str(ROOT), "GPUMLP_MPI_TIMEOUT": "30"}
    code, log, seconds = launch_ranks([*common, "iris.csv"], [*common, *rank1_args], env=env)
    assert code == 2, log[-4000:]
    assert message in log and "Traceback" not in log, log[-4000:]
    assert seconds < 30 and not os.path.exists(workdir / "model.npz")
