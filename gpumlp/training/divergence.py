"""Divergence: what counts as a diverged epoch, and the error ``fit`` raises after rolling back."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..network import MLP
    from .state import EpochState


class DivergenceError(FloatingPointError):
    """Training diverged (a NaN/inf or exploding epoch loss, or non-finite weights).

    Raised by :func:`fit`, which first puts back the weights, optimizer state and RNG state of
    the last good epoch. ``epoch`` is where it was detected, ``loss`` that epoch's loss,
    ``last_good_epoch`` / ``last_good_loss`` the epoch the model now holds and its loss.
    """

    def __init__(
        self,
        message: str,
        epoch: int = 0,
        loss: float = math.nan,
        last_good_epoch: int = 0,
        last_good_loss: float | None = None,
    ) -> None:
        super().__init__(message)
        self.epoch, self.loss = epoch, loss
        self.last_good_epoch, self.last_good_loss = last_good_epoch, last_good_loss


def diverged(model: MLP, loss: float, losses: list[float], threshold: float | None) -> str | None:
    """Why an epoch that ended with mean loss ``loss`` counts as diverged; None when it does not.

    One device read besides the loss: the sum of all weights, NaN/inf when any weight is.
    """
    if not math.isfinite(loss):
        return f"the epoch's loss is {loss}"
    if threshold is not None and losses and loss > threshold * max(1.0, losses[0]):
        return (
            f"the epoch's loss {loss:.6g} is over divergence_threshold={threshold:g} times "
            f"max(1, first epoch's loss {losses[0]:.6g})"
        )
    if not math.isfinite(float(model.ops.total(model.params))):
        return "a weight became NaN or infinite"
    return None


def divergence_error(
    epoch: int,
    steps: str,
    why: str,
    loss: float,
    good: EpochState,
    history: dict[str, list[float]],
    lr: float,
    path: str | None,
) -> DivergenceError:
    last = history["loss"][-1] if history["loss"] else None
    kept = f"the end of epoch {good.epoch} (loss {last:.6g})" if last is not None else "the start of training"
    saved = f" and checkpoint {path!r} holds them" if path is not None else ""
    return DivergenceError(
        f"training diverged in epoch {epoch} ({steps}): {why}. The model keeps its weights from {kept}{saved}. "
        f"To fix: lower lr (this run: {lr:g}), clip gradients (e.g. clip_norm=1.0), or standardise X and the targets.",
        epoch=epoch,
        loss=loss,
        last_good_epoch=good.epoch,
        last_good_loss=last,
    )
