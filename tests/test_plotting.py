"""What a person sees while and after training: the loss-curve plot (gpumlp.plot_history) and
the tqdm progress bar (fit(progress=True), the CLI)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

import gpumlp as gm
from gpumlp.plotting import plot_history
from gpumlp.progress import ProgressBar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _valid_png(path: Path) -> np.ndarray:
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    image = pytest.importorskip("matplotlib.image").imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100
    return image


def test_plot_history_from_fit(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    X, y = gm.load_dataset("spirals", n_samples=200)
    model = gm.MLP([2, 16, 2], backend="numpy", seed=0)
    history = model.fit(X[:160], y[:160], optimizer="adam", lr=0.01, epochs=5, validation_data=(X[160:], y[160:]))
    out = plot_history(history, tmp_path / "loss.png")
    assert out == str(tmp_path / "loss.png")
    _valid_png(tmp_path / "loss.png")


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")
def test_plot_history_from_estimator_and_train_only(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    sk = pytest.importorskip("gpumlp.sklearn")
    X, y = gm.load_dataset("classification", n_samples=200, n_features=5)
    clf = sk.MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, early_stopping=True, random_state=0).fit(X, y)
    plot_history(clf, tmp_path / "est.png", title="estimator")
    plot_history({"loss": [1.0, 0.1, 0.001]}, tmp_path / "log.png")  # spans > 2 decades: log scale
    _valid_png(tmp_path / "est.png")
    _valid_png(tmp_path / "log.png")


def test_plot_history_leaves_the_callers_pyplot_alone(tmp_path: Path) -> None:
    """No switch to Agg: a notebook's inline backend and its open figures stay as they were."""
    matplotlib = pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    plt.switch_backend("svg")
    try:
        fig = plt.figure()
        plot_history({"loss": [1.0, 0.5], "val_loss": [1.2, 0.7]}, tmp_path / "loss.png")
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == [fig.number]
        _valid_png(tmp_path / "loss.png")
    finally:
        plt.close("all")
        plt.switch_backend(before)


def test_plot_history_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="no training loss"):
        plot_history({"loss": []}, tmp_path / "x.png")
    with pytest.raises(TypeError, match="history must be"):
        plot_history([1.0, 2.0], tmp_path / "x.png")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install matplotlib"):
        plot_history({"loss": [1.0]}, tmp_path / "x.png")


def test_progress_bar_shows_loss_val_loss_and_throughput() -> None:
    term = _Terminal()
    bar = ProgressBar(3, 1000, file=term, desc="fit")
    for epoch in (1, 2):
        bar(None, epoch, {"loss": 0.5 / epoch, "val_loss": 0.75})
    bar.close()
    text = term.getvalue()
    assert "fit" in text and "2/3" in text and "loss=0.25" in text and "val_loss=0.75" in text and "samples/s" in text
    assert bar.n == 2


def test_progress_off_a_terminal_is_plain_lines_and_silent_when_disabled() -> None:
    pipe, term = io.StringIO(), _Terminal()
    for bar in (ProgressBar(2, 10, file=pipe), ProgressBar(2, 10, file=term, disable=True)):
        bar(None, 1, {"loss": 1.0})
        bar.close()
    assert pipe.getvalue().startswith("fit: epoch 1/2  loss 1") and "\r" not in pipe.getvalue()
    assert term.getvalue() == ""


def test_fit_progress_true_prints_lines_when_stderr_is_not_a_terminal(capfd: pytest.CaptureFixture) -> None:
    X, y = gm.load_dataset("xor")
    gm.MLP([2, 4, 2], backend="numpy").fit(X, y, epochs=3, batch_size=4, progress=True)
    err = capfd.readouterr().err
    assert "fit: epoch 1/3" in err and "fit: epoch 3/3" in err and "\r" not in err
