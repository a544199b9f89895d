"""Epoch progress for ``fit(progress=True)`` and the CLI: a tqdm bar, or plain lines for logs.

One tick per epoch showing the epoch's loss, validation loss (when there is one) and throughput in
samples/s. On a terminal or in a notebook it is a tqdm bar (``tqdm.auto``: the notebook widget
where one applies). Elsewhere (a pipe, a log file, a ``nohup`` job) it prints one plain line per
epoch, at most one per ``every`` seconds plus the first and the last, so a long run shows its
progress as it goes without flooding the log.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from tqdm import std
from tqdm.auto import tqdm as auto_tqdm

LINE_EVERY_S = 2.0  # plain-line mode: at most one line per this many seconds (plus the first and last epoch)


def _in_notebook() -> bool:
    """Whether tqdm.auto chose its notebook widget (a Jupyter kernel with ipywidgets)."""
    return any(cls.__module__ == "tqdm.notebook" for cls in auto_tqdm.__mro__)


class ProgressBar:
    """Progress advanced once per epoch by the training loop's ``cb(model, epoch, logs)``.

    Parameters
    ----------
    total_epochs : int
        The epochs this run will train at most.
    n_samples : int
        Training samples per epoch, for the samples/s figure.
    disable : bool or None
        None: a bar on a terminal or in a notebook, plain lines elsewhere; True: nothing; False:
        always a bar.
    desc : str
        The label in front of the bar or lines.
    file : IO[str], optional
        Where to write (default stderr).
    every : float
        Plain-line mode: the fewest seconds between two lines (the first and last epoch always print).

    Notes
    -----
    Call :meth:`close` (or use it as a context manager) when training ends, early or not.
    """

    def __init__(
        self,
        total_epochs: int,
        n_samples: int,
        *,
        disable: bool | None = None,
        desc: str = "fit",
        file: IO[str] | None = None,
        every: float = LINE_EVERY_S,
    ) -> None:
        self.n_samples, self.total, self.desc, self.every = int(n_samples), int(total_epochs), desc, float(every)
        self.out = sys.stderr if file is None else file
        self.epochs_seen = 0
        self.lines = False
        if disable is None:
            terminal = hasattr(self.out, "isatty") and self.out.isatty()
            self.lines = not terminal and not _in_notebook()
            disable = self.lines
        bar = auto_tqdm if file is None else std.tqdm  # a notebook widget only for the default output
        self._bar = bar(
            total=self.total, desc=desc, unit="epoch", disable=disable, file=self.out, dynamic_ncols=True, leave=True
        )
        self._start = self._last = time.perf_counter()
        self._printed = -math.inf
        self._pending: str | None = None

    def __call__(self, model: Any, epoch: int, logs: Mapping[str, Any]) -> None:
        """Advance one epoch and show the epoch's loss, val loss and samples/s."""
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        self.epochs_seen += 1
        postfix: dict[str, str] = {}
        if logs.get("loss") is not None:
            postfix["loss"] = f"{float(logs['loss']):.4g}"
        if logs.get("val_loss") is not None:
            postfix["val_loss"] = f"{float(logs['val_loss']):.4g}"
        if elapsed > 0:
            postfix["samples/s"] = f"{self.n_samples / elapsed:,.0f}"
        if self.lines:
            parts = "  ".join(f"{k} {v}" for k, v in postfix.items())
            line = f"{self.desc}: epoch {epoch}/{self.total}  {parts}  elapsed {now - self._start:.1f}s"
            if self.epochs_seen == 1 or now - self._printed >= self.every:
                self._write(line, now)
            else:
                self._pending = line
            return
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)

    def _write(self, line: str, now: float) -> None:
        print(line, file=self.out, flush=True)
        self._printed, self._pending = now, None

    @property
    def n(self) -> int:
        """Epochs shown so far."""
        return self.epochs_seen

    def close(self) -> None:
        """Finish the bar, or print the last epoch's line if it was held back (safe to call twice)."""
        if self._pending is not None:
            self._write(self._pending, time.perf_counter())
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
