"""Fixtures of the `gpumlp` command tests: a working directory, and one with a trained model."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpumlp.cli import main

from cli_support import write_csv


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def trained(workdir: Path, capsys: pytest.CaptureFixture) -> Path:
    write_csv(workdir / "iris.csv")
    argv = ["train", "iris.csv", "--target", "species", "--epochs", "2", "--out", "model.npz", "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    return workdir
