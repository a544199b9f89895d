"""Hostile input to the `gpumlp` command (issue 12): hand-edited or foreign model metadata, duplicate and
ragged CSV columns, missing-value markers in the target, empty --hidden widths, values beyond float32 and
feature scales whose squares overflow. Each is one `gpumlp: error:` line naming the file and what is
wrong, with exit status 2, or (for the scales) a correct result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gpumlp.cli.bundle import CLI_MEAN, CLI_META, CLI_SCALE

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
        (None, {CLI_SCALE: np.ones(3)}, f"{CLI_SCALE!r} must be 4 numbers"),
        (None, {CLI_SCALE: np.zeros(4)}, "must be positive"),
        (None, {CLI_MEAN: np.full(4, np.nan)}, "NaN or infinite"),
        (None, {CLI_MEAN: np.array(["a"] * 4)}, f"{CLI_MEAN!r} must be 4 numbers"),
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
