"""Progress outside a terminal: plain lines (epoch, loss, val loss, samples/s, elapsed), rate-limited."""

from __future__ import annotations

import io

import numpy as np

import gpumlp as gm
from gpumlp.progress import ProgressBar


def _run(bar: ProgressBar, epochs: int) -> None:
    for epoch in range(1, epochs + 1):
        bar(None, epoch, {"loss": 1.0 / epoch, "val_loss": 2.0 / epoch})
    bar.close()


def test_one_line_per_epoch_when_not_a_terminal():
    out = io.StringIO()  # not a terminal: before, the bar drew nothing at all
    _run(ProgressBar(5, 100, file=out, desc="fit", every=0.0), 5)
    lines = out.getvalue().splitlines()
    assert [line.split("  ")[0] for line in lines] == [f"fit: epoch {e}/5" for e in range(1, 6)]
    assert "loss 0.2" in lines[-1] and "val_loss 0.4" in lines[-1] and "elapsed" in lines[-1]


def test_lines_are_rate_limited_but_the_first_and_last_epoch_always_print():
    out = io.StringIO()
    _run(ProgressBar(50, 100, file=out, every=3600.0), 50)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "epoch 1/50" in lines[0] and "epoch 50/50" in lines[1]


def test_fit_progress_prints_lines_to_a_non_terminal_stderr(capsys):
    X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    gm.MLP([3, 4, 2], backend="numpy", seed=0).fit(X, (X[:, 0] > 0).astype(int), epochs=3, progress=True)
    err = capsys.readouterr().err
    assert "fit: epoch 1/3" in err and "fit: epoch 3/3" in err


def test_disabled_prints_nothing():
    out = io.StringIO()
    _run(ProgressBar(3, 10, file=out, disable=True), 3)
    assert out.getvalue() == ""
