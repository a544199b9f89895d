"""Data sources of the `gpumlp` command: CSV header sniffing, missing values and a BOM, .npz arrays and a
built-in dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli_support import run


def test_csv_header_detection_missing_values_and_bom(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """A headerless CSV with text labels keeps its first row; a missing value, a header-only file
    and a text column right of the target are one line each; a spreadsheet's BOM is dropped."""
    rows = [f"{i % 3}.5,{i % 2}.25,{'cat' if i % 2 else 'dog'}" for i in range(12)]
    (workdir / "noheader.csv").write_text("\n".join(rows) + "\n")
    rc, out, err = run(
        capsys, "train", "noheader.csv", "--epochs", "1", "--val-split", "0", "--out", "m.npz", "--no-progress"
    )
    assert rc == 0 and "12 training samples" in out, err
    rc, out, err = run(capsys, "predict", "m.npz", "noheader.csv", "--target", "2")
    assert rc == 0 and len(out.splitlines()) == 13 and out.splitlines()[0] == "prediction", err
    (workdir / "numeric_names.csv").write_text("0,1,label\n" + "\n".join(rows) + "\n")  # pandas' default names
    rc, out, err = run(
        capsys, "train", "numeric_names.csv", "--epochs", "1", "--val-split", "0", "--out", "n.npz", "--no-progress"
    )
    assert rc == 0 and "12 training samples" in out and "2-100-2" in out, err

    (workdir / "bom.csv").write_text("\ufeffa,b,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    rc, out, err = run(
        capsys,
        "train",
        "bom.csv",
        "--target",
        "label",
        "--epochs",
        "1",
        "--val-split",
        "0",
        "--out",
        "b.npz",
        "--no-progress",
    )
    assert rc == 0 and "12 training samples" in out, err
    rc, out, err = run(capsys, "train", "bom.csv", "--target", "a", "--no-progress")
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
        rc, out, err = run(capsys, *argv)
        assert rc == 2 and err.count("\n") == 1 and err.startswith("gpumlp: error: ") and message in err, err
    rc, out, err = run(capsys, "predict", "b.npz", "no_label.csv")  # predict ignores the target column
    assert rc == 0 and len(out.splitlines()) == 3, err


def test_regression_npz_and_builtin_dataset(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    np.savez(workdir / "reg.npz", X=X, y=X @ [1.0, -2.0, 0.5] + 3.0)
    rc, out, err = run(
        capsys, "train", "reg.npz", "--epochs", "40", "--lr", "0.01", "--out", "reg_model.npz", "--no-progress"
    )
    assert rc == 0, err
    assert "identity output, mse" in out
    rc, out, err = run(capsys, "evaluate", "reg_model.npz", "reg.npz", "--json")
    assert rc == 0 and json.loads(out)["r2"] > 0.9
    rc, out, err = run(capsys, "predict", "reg_model.npz", "reg.npz", "--out", "values.npy")
    assert rc == 0 and np.load(workdir / "values.npy").shape == (200,)
    rc, out, err = run(capsys, "train", "xor", "--hidden", "4", "--epochs", "2", "--out", "xor.npz", "--no-progress")
    assert rc == 0, err
