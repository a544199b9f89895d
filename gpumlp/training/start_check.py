"""The start of a distributed fit on a rank whose own checks failed, and what identifies a resumed run.

``fit`` marks the rank as owing the start check (:func:`begin_start`, no collective); if it fails
before taking part (bad data, a bad checkpoint, a bad setting), :func:`refuse_start` takes part
for it, saying it failed, so the other ranks raise instead of waiting in the check, or in a later
collective, forever. See :meth:`gpumlp.training.distributed.Group.agree`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from .distributed import DistributedError, Group, Reducer, _group


def begin_start(comm: Any) -> Group | None:
    """At the start of fit: the Group of ``comm`` (None without one, or for a bad ``comm``, which fit
    reports itself), marked as owing the start check. No collective."""
    if comm is None or isinstance(comm, Reducer):
        return None
    try:
        group = _group(comm)
    except (TypeError, ValueError, ImportError):
        return None
    group.awaiting_start = group.size > 1
    return group


def refuse_start(group: Group | None, error: BaseException) -> None:
    """A fit that failed on this rank before the start check: tell the other ranks there (they raise
    instead of waiting); the caller then raises ``error``. Nothing when the check already took place."""
    if group is None or not group.awaiting_start:
        return
    try:
        group.agree(error)
    except DistributedError:
        pass  # the others are gone too; this rank's own error is the one to report


def resume_identity(ck: Any) -> str | None:
    """A digest of everything a resumed checkpoint restores (epoch, history, weights, optimizer state,
    early stopping): ranks resuming from different checkpoints, or only some ranks resuming, differ."""
    if ck is None:
        return None
    h = hashlib.sha256(repr((ck.epoch, ck.history, ck.best_loss, ck.waited, ck.optimizer.get("t"))).encode())
    arrays = [a for pair in ck.weights for a in pair] + list(ck.best_weights or [])
    arrays += [a for values in ck.optimizer.get("state", {}).values() for a in values]
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return f"epoch {ck.epoch}, digest {h.hexdigest()[:16]}"


def tell_other_ranks_of_early_failure(fit: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``fit`` so that its failure before the start check is told to the other ranks of its
    ``comm`` (:func:`begin_start`, :func:`refuse_start`); the signature stays ``fit``'s.

    Parameters
    ----------
    fit : callable
        ``fit(model, X, Y, *, comm, ...)``.

    Returns
    -------
    callable
        The wrapped ``fit``.
    """

    @functools.wraps(fit)
    def wrapper(model: Any, X: Any, Y: Any, **settings: Any) -> Any:
        group = begin_start(settings.get("comm"))
        try:
            return fit(model, X, Y, **settings)
        except BaseException as exc:
            refuse_start(group, exc)
            raise

    return wrapper
