"""What a divergence or a Ctrl-C returns to: the training state at the end of the last good epoch,
and the guard that keeps the return whole when a second Ctrl-C (or SIGTERM) follows the first."""

from __future__ import annotations

import functools
import math
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..checkpoint import restore_rng, save_checkpoint

if TYPE_CHECKING:
    from ..network import MLP
    from ..optimizers import Optimizer


_F = TypeVar("_F", bound=Callable[..., Any])
_TRAINING: set[int] = set()  # id() of every model a fit is running on, in any thread
_TRAINING_LOCK = threading.Lock()


def one_fit_at_a_time(fit: _F) -> _F:
    """Wrap ``fit(model, ...)`` so a second call on the same model while one runs raises RuntimeError.

    Two fits on one model (two threads, or a callback that calls fit) would interleave their
    steps and histories; the second is refused at once, before it changes anything.
    """

    @functools.wraps(fit)
    def guarded(model: Any, *args: Any, **kwargs: Any) -> Any:
        with _TRAINING_LOCK:
            if id(model) in _TRAINING:
                raise RuntimeError(
                    "fit is already running on this model (in another thread, or a callback called fit): "
                    "one model trains one run at a time; train a copy (save it and load it) instead"
                )
            _TRAINING.add(id(model))
        try:
            return fit(model, *args, **kwargs)
        finally:
            with _TRAINING_LOCK:
                _TRAINING.discard(id(model))

    return guarded  # type: ignore[return-value]


STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


class SignalGuard:
    """Holds back stop signals while an interrupted or diverged fit rolls back.

    :meth:`install` wraps the Python handlers of SIGINT, SIGTERM and SIGHUP (only those that run
    Python code: ``SIG_DFL`` and ``SIG_IGN`` are left alone) on the main thread. The first signal
    runs its handler, which raises (KeyboardInterrupt); from that moment, and once :meth:`hold` was
    called, further signals are recorded instead of run, so the rollback cannot be cut in half (a
    second Ctrl-C a few ms after the first used to leave layers from two epochs). :meth:`release`
    puts the handlers back and delivers the first recorded signal. Off the main thread Python
    delivers no signals, and nothing is installed.
    """

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.holding = False
        self.pending: list[int] = []

    def install(self) -> None:
        """Wrap the stop signals' Python handlers (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in STOP_SIGNALS:
            handler = signal.getsignal(sig)
            if callable(handler):
                self.previous[sig] = handler
                signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.holding:
            self.pending.append(signum)
            return
        self.holding = True  # a second signal before the rollback begins must wait for it too
        self.previous[signum](signum, frame)  # raises KeyboardInterrupt (or the CLI's Terminated)
        self.holding = False  # a handler that returned: training goes on

    def hold(self) -> None:
        """From now until :meth:`release`, stop signals are recorded, not run."""
        self.holding = True

    def release(self) -> None:
        """Put the handlers back; deliver the first signal held back (its handler raises here)."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
        pending, self.pending, self.holding = self.pending, [], False
        if pending:
            signal.raise_signal(pending[0])


class EpochState:
    """The training state at the end of one epoch, kept in reused device buffers.

    :meth:`capture` copies the weights, the optimizer's state and step count, the RNG state and
    early stopping's counters; :meth:`restore` puts them back. ``fit`` captures after every good
    epoch, so a divergence or Ctrl-C can return the model to the last complete, finite epoch.
    """

    def __init__(self, model: MLP, optimizer: Optimizer) -> None:
        self.model, self.optimizer = model, optimizer
        self.epoch = 0
        self.t = 0
        self.rng_state: dict[str, Any] = {}
        self.params: list[Any] = []
        self.opt_state: dict[str, list[Any]] = {}
        self.best_loss: float = math.inf
        self.waited = 0
        self.best_weights: list[Any] | None = None
        self.complete = True
        self.signals = SignalGuard()  # fit installs it for its loop; a rollback holds signals back

    def capture(
        self, epoch: int, best_loss: float = math.inf, waited: int = 0, best_weights: list[Any] | None = None
    ) -> None:
        """Copy the current training state into this object's buffers."""
        self.complete = False  # a Ctrl-C during the copies leaves the live state, which is this epoch's
        self.epoch, self.t, self.rng_state = epoch, self.optimizer.t, self.model.rng.bit_generator.state
        self.best_loss, self.waited, self.best_weights = best_loss, waited, best_weights
        ops = self.model.ops
        if not self.params:
            self.params = self.model.snapshot()
            self.opt_state = {k: [ops.copy(a) for a in v] for k, v in self.optimizer.state.items()}
        else:
            for dst, src in zip(self.params, self.model.params):
                ops.assign(dst, src)
            for k, arrays in self.opt_state.items():
                for dst, src in zip(arrays, self.optimizer.state[k]):
                    ops.assign(dst, src)
        self.complete = True

    def restore(self) -> None:
        """Put the captured weights, optimizer state and RNG state back (arrays keep their addresses)."""
        if not self.complete:  # interrupted mid-capture: the model still holds exactly this state
            self.complete = True
            return
        ops = self.model.ops
        self.model.restore(self.params)
        for k, arrays in self.opt_state.items():
            for dst, src in zip(self.optimizer.state[k], arrays):
                ops.assign(dst, src)
        self.optimizer.t = self.t
        restore_rng(self.model, self.rng_state)

    def save(self, path: str, history: dict[str, list[float]], config: dict[str, Any]) -> None:
        """Write this state as a checkpoint; the model and optimizer must hold it (just captured or restored)."""
        save_checkpoint(
            path,
            self.model,
            self.optimizer,
            self.epoch,
            history,
            config=config,
            best_loss=self.best_loss,
            waited=self.waited,
            best_weights=self.best_weights,
        )

    def rollback(self, history: dict[str, list[float]], path: str | None, config: dict[str, Any]) -> None:
        """:meth:`restore`, cut ``history`` back to this epoch (also as the model's history), and
        checkpoint it to ``path`` if given; stop signals wait until ``fit`` ends (see :class:`SignalGuard`)."""
        self.signals.hold()
        self.restore()
        for values in history.values():
            del values[self.epoch :]
        self.model.history = history
        if path is not None:
            self.save(path, history, config)
