"""Loss-curve plots (train and validation loss per epoch), saved as image files.

matplotlib is optional (the ``plot`` extra) and imported only when a plot is made. The figure is
drawn without pyplot, so it works on servers and in CI and leaves the caller's pyplot backend
and open figures (a notebook's inline plots, say) alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .install_hint import install_hint


def _figure_class() -> Any:
    """matplotlib's Figure (no pyplot, no global backend switch), or an ImportError naming the ``plot`` extra."""
    try:
        import matplotlib  # noqa: F401  (the package itself, even when matplotlib.figure is already loaded)
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            f"plotting needs matplotlib, which is not installed: {install_hint('matplotlib', 'plot')}"
        ) from exc
    return Figure


def check_plot_path(path: str | os.PathLike[str]) -> None:
    """Fail early (before a long training run) if ``path`` cannot be plotted to.

    Raises ImportError when matplotlib is missing, ValueError for an image format it cannot
    write, FileNotFoundError when the directory does not exist.
    """
    _figure_class()
    from matplotlib.backend_bases import FigureCanvasBase

    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext not in formats:
        raise ValueError(f"cannot save a plot as {path!r}: use one of the extensions {', '.join(sorted(formats))}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save a plot as {path!r}: directory {directory!r} does not exist")


def _curves(history: Any) -> tuple[Sequence[float], Sequence[float] | None]:
    """(train, validation) loss lists from a fit history dict or a fitted gpumlp estimator."""
    if isinstance(history, Mapping):
        train, val = history.get("loss"), history.get("val_loss")
    elif hasattr(history, "loss_curve_"):
        train, val = history.loss_curve_, getattr(history, "validation_loss_curve_", None)
    else:
        raise TypeError(
            "history must be the dict returned by fit (with a 'loss' list) or a fitted "
            f"gpumlp estimator; got {type(history).__name__}"
        )
    if train is None or len(train) == 0:
        raise ValueError("history has no training loss to plot (its 'loss' list is empty)")
    return list(train), (list(val) if val else None)


def plot_history(
    history: Any,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    logy: bool | None = None,
    dpi: int = 120,
) -> str:
    """Plot train (and validation, when present) loss per epoch and save it to ``path``.

    ``history`` is the dict from ``MLP.fit`` or a fitted ``gpumlp.sklearn`` estimator.
    ``logy=None`` picks a log scale when the loss spans more than two decades. A dotted line
    marks the epoch with the lowest validation loss.
    The format follows the file extension (PNG, SVG, PDF). Returns the path written.
    """
    train, val = _curves(history)
    fig = _figure_class()(figsize=(6.4, 4.0))
    ax = fig.subplots()
    epochs = range(1, len(train) + 1)
    ax.plot(epochs, train, label="train loss", color="tab:blue", linewidth=1.8)
    if val is not None:
        ax.plot(range(1, len(val) + 1), val, label="validation loss", color="tab:orange", linewidth=1.8)
        finite = [(v, i) for i, v in enumerate(val, 1) if math.isfinite(v)]
        if finite:
            best = min(finite)[1]
            label = f"lowest validation loss (epoch {best})"
            ax.axvline(best, color="tab:orange", linestyle=":", alpha=0.7, label=label)
    values = [v for v in list(train) + list(val or []) if math.isfinite(v) and v > 0]
    if logy is None:
        logy = bool(values) and max(values) / min(values) > 100
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (log scale)" if logy else "loss")
    ax.set_title(title or "Loss per epoch")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = os.fspath(path)
    fig.savefig(out, dpi=dpi)
    return out
