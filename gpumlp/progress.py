"""Epoch progress bar for ``fit(progress=True)`` and the CLI: a tqdm bar used as a callback.

One tick per epoch; the postfix shows the epoch's loss, validation loss (when there is
one) and throughput in samples/s. By default the bar draws only when stderr is a terminal,
so logs, CI and pipes stay clean.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from tqdm import tqdm


class ProgressBar:
    """A tqdm bar advanced once per epoch by the training loop's ``cb(model, epoch, logs)``.

    ``disable=None`` draws only on a terminal; ``True`` never draws, ``False`` always does.
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
    ) -> None:
        self.n_samples = int(n_samples)
        out = sys.stderr if file is None else file
        if disable is None:
            disable = not (hasattr(out, "isatty") and out.isatty())
        self._bar = tqdm(
            total=int(total_epochs),
            desc=desc,
            unit="epoch",
            disable=disable,
            file=out,
            dynamic_ncols=True,
            leave=True,
        )
        self._last = time.perf_counter()

    def __call__(self, model: Any, epoch: int, logs: Mapping[str, Any]) -> None:
        """Advance one epoch and show the epoch's loss, val loss and samples/s."""
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        postfix: dict[str, str] = {}
        if logs.get("loss") is not None:
            postfix["loss"] = f"{float(logs['loss']):.4g}"
        if logs.get("val_loss") is not None:
            postfix["val_loss"] = f"{float(logs['val_loss']):.4g}"
        if elapsed > 0:
            postfix["samples/s"] = f"{self.n_samples / elapsed:,.0f}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)

    @property
    def n(self) -> int:
        """Epochs shown so far."""
        return int(self._bar.n)

    def close(self) -> None:
        """Finish the bar (safe to call twice)."""
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
