"""The compiled epoch: one numba function runs every step of an epoch of a small network on the CPU.

The CPU counterpart of the CUDA device loop (:mod:`.cuda_graph`), and plugged into the same slot
(``Trainer.device_loop``). On a small network a NumPy step is ~90 µs of Python around microseconds
of arithmetic; :func:`gpumlp.backends._numba_kernels.run_epoch` does the gather, forward, loss sum
(float64), output delta, backward, L2, global-norm clipping and the SGD / momentum / Nesterov / Adam
update of every batch in compiled loops, with NumpyOps' formulas and order of operations, so the
weights equal the step-by-step path's to rounding. The permutation is drawn from the same host RNG
as the eager loop's (the same batches), Adam's bias-corrected step sizes η_t are computed on the
host for the epoch's steps, and the optimizer's step count advances as it would.

Parameters and optimizer state are copied into one flat buffer each (W row-major) before the
epoch and back after it (microseconds at these sizes), so the model, callbacks, checkpoints and
the divergence check see them as usual. Ctrl-C is honoured between epochs.

When fit uses it (``compiled="auto"``, :func:`compiled_loop`): numba is installed and not turned
off (``GPUMLP_JIT=0``), the run is one process on NumPy with gpumlp's own SGD or Adam, batch_size ×
n_params ≤ :data:`MAX_WORK` (above that, BLAS GEMMs beat the compiled loops: measured on 2 cores),
and loading numba pays back: ``GPUMLP_JIT=1``, or the plain loop would take :data:`PAYBACK_S` seconds or
more (numba's import and cache load cost 1–2 s in a fresh process). Whether numba happens to be loaded
already does not count: the same fit takes the same path in any process.
The same estimate loads NumbaOps' kernels for bigger fits of :data:`KERNELS_PAYBACK_S` seconds or
more (they gain 10–35 % of a step, so the fit must be longer to win the start-up back).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import numba_ops
from ..backends.numpy_ops import NumpyOps
from ..install_hint import install_hint
from ..optimizers import SGD, Adam
from ..validation import check_bool

COMPILED_CHOICES = (False, True, "auto")
MAX_WORK = 150_000  # batch_size × n_params up to which the compiled loops beat a NumPy step
PAYBACK_S = 2.0  # estimated seconds of plain loop from which "auto" loads numba for the compiled epoch
KERNELS_PAYBACK_S = 10.0  # ... and from which fit loads the NumbaOps kernels
_STEP_S = 80e-6  # Python's cost of one NumPy step (measured 60-160 µs on 2 cores)
_FLOP_S = 1e-10  # seconds per flop of a step's GEMMs (10 GFLOP/s, 2 cores)
_ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "softmax")  # what run_epoch knows (its ACT codes)
_LOSSES = ("mse", "binary_cross_entropy", "cross_entropy")


def n_params(model: Any) -> int:
    """The model's number of weights and biases."""
    return sum(int(np.prod(p.shape)) for p in model.params)


def estimated_seconds(model: Any, batch_size: int, n: int, epochs: int) -> float:
    """A rough time of ``epochs`` epochs of the plain NumPy loop: Python per step + 6·B·P flops."""
    steps = epochs * -(-n // batch_size)
    return steps * (_STEP_S + 6.0 * batch_size * n_params(model) * _FLOP_S)


def compiled_unsupported(trainer: Any, loss: str) -> str | None:
    """Why the compiled epoch cannot run ``trainer``'s epochs; None when it can."""
    model = trainer.model
    if not isinstance(model.ops, NumpyOps) or model.backend.xp is not np:
        return f"needs backend='numpy'; this model runs on {model.backend.name!r} with {type(model.ops).__name__}"
    if np.dtype(model.xp_dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        return f"needs float32 or float64; this model is {model.dtype}"
    if getattr(trainer.reducer, "size", 1) != 1:
        return "does not support distributed training (comm=...)"
    if trainer.weights is not None or trainer.sparse_input or (trainer.l2_per_sample and trainer.config.l2):
        return "does not support sample_weight, sparse X or l2_per_sample (the step-by-step loop does)"
    if type(trainer.optimizer) not in (SGD, Adam):
        return f"supports the built-in optimizers 'sgd' and 'adam' only; got {type(trainer.optimizer).__name__}"
    unknown = [a for a in model.activations if a not in _ACTIVATIONS] + ([loss] if loss not in _LOSSES else [])
    if unknown:
        return f"does not know {', '.join(map(repr, unknown))}"
    if numba_ops.numba_version() is None:
        return "needs numba: " + install_hint("numba", "fast")
    if numba_ops.jit_setting() == "0":
        return f"is turned off by {numba_ops.ENV_JIT}=0"
    return None


def compiled_loop(trainer: Any, compiled: bool | str, n: int, epochs: int) -> CompiledLoop | None:
    """The :class:`CompiledLoop` that ``fit(compiled=...)`` asks for, or None for the plain loop.

    Parameters
    ----------
    trainer : Trainer
        The fit's trainer (model, optimizer, batch size, loss, L2, clipping).
    compiled : bool or "auto"
        True: the compiled epoch, or ValueError where it cannot run. False: never. "auto": where
        it can run, the network is small and loading numba pays back (module docstring).
    n, epochs : int
        Rows of training data and epochs still to run (for the pay-back estimate).

    Also loads NumbaOps' kernels when the fit is long enough to pay for them (or ``GPUMLP_JIT=1``).
    """
    if isinstance(compiled, str):
        if compiled != "auto":
            raise ValueError(f"compiled must be True, False or 'auto'; got {compiled!r}")
    else:
        compiled = check_bool(compiled, "compiled")
    model, config = trainer.model, trainer.config
    seconds = estimated_seconds(model, trainer.batch_size, n, epochs)
    forced = numba_ops.jit_setting() == "1"
    if isinstance(model.ops, numba_ops.NumbaOps) and (forced or seconds >= KERNELS_PAYBACK_S):
        numba_ops.load_kernels()
    if not compiled:
        return None
    why = compiled_unsupported(trainer, config.loss)
    if why is None and compiled == "auto":
        if trainer.batch_size * n_params(model) > MAX_WORK:
            return None
        if not (forced or seconds >= PAYBACK_S):  # not "numba happens to be loaded": the choice is per fit
            return None
    if why is None and numba_ops.load_kernels() is None:
        why = f"could not load numba ({numba_ops.jit_info()})"
    if why:
        if compiled is True:
            raise ValueError(f"compiled=True {why}")
        return None
    return CompiledLoop(trainer)


class CompiledLoop:
    """Runs a trainer's epochs through the compiled :func:`run_epoch` (``Trainer.device_loop``)."""

    name = "compiled"

    def __init__(self, trainer: Any) -> None:
        k = numba_ops.load_kernels()
        if k is None:
            raise RuntimeError(f"the compiled epoch needs numba's kernels: {numba_ops.jit_info()}")
        self.k, self.trainer = k, trainer
        model, opt, config = trainer.model, trainer.optimizer, trainer.config
        dtype = np.dtype(model.xp_dtype)
        self.dtype = dtype
        self.sizes = np.array(model.sizes, dtype=np.int64)
        self.acts = np.array([k.ACT[a] for a in model.activations], dtype=np.int64)
        self.loss_code = k.LOSS[config.loss]
        params = model.params
        offs = np.cumsum([0] + [p.size for p in params[:-1]]).astype(np.int64)
        total = sum(p.size for p in params)
        self.offs = offs
        self.theta, self.grad = np.empty(total, dtype), np.zeros(total, dtype)
        self.views = [self.theta[o : o + p.size].reshape(p.shape) for o, p in zip(offs, params)]
        self.states = [np.zeros(total if i < len(opt.state_names) else 1, dtype) for i in range(2)]
        self.state_views = [
            [s[o : o + p.size].reshape(p.shape) for o, p in zip(offs, params)]
            for s in self.states[: len(opt.state_names)]
        ]
        self.clip = -1.0 if config.clip_norm is None else float(config.clip_norm)
        rows = trainer.batch_size
        self.zbuf = np.empty(rows * int(self.sizes.sum()), dtype)
        self.dbuf = np.empty(rows * int(self.sizes[1:].sum()), dtype)
        self.tbuf = np.empty(rows * int(self.sizes[-1]), dtype)
        self._no_schedule = np.zeros(1, dtype)
        self._data: tuple[Any, Any, Any, Any] | None = None  # (X, T) as given and as C-contiguous copies

    def _hyper(self) -> tuple[int, Any]:
        """The optimizer's code and scalars now (a callback may change them between epochs), in the dtype."""
        opt, k, l2 = self.trainer.optimizer, self.k, self.trainer.config.l2
        if isinstance(opt, Adam):
            code = k.OPT["adam"]
            hyper = [0.0, 0.0, opt.beta1, 1.0 - opt.beta1, opt.beta2, 1.0 - opt.beta2, opt.eps, l2]
        else:
            code = k.OPT["nesterov" if opt.nesterov else ("momentum" if opt.momentum else "sgd")]
            hyper = [-opt.lr, opt.momentum, 0.0, 0.0, 0.0, 0.0, 0.0, l2]
        Ty = self.dtype.type
        return code, np.array([Ty(h) for h in hyper], dtype=self.dtype)  # each cast as NumpyOps' in-place ops do

    def _contiguous(self, X: Any, T: Any) -> tuple[Any, Any]:
        if self._data is None or self._data[0] is not X or self._data[1] is not T:
            self._data = (X, T, np.ascontiguousarray(X), np.ascontiguousarray(T))
        return self._data[2], self._data[3]

    def run_epoch(self, X: Any, T: Any) -> float:
        """One epoch over (X, T), on the host; returns the mean training loss with the L2 term."""
        trainer, opt, model = self.trainer, self.trainer.optimizer, self.trainer.model
        n = X.shape[0]
        order = trainer.rng.permutation(n) if trainer.shuffle else np.arange(n)
        Xc, Tc = self._contiguous(X, T)
        opt.bind(model.params, model.ops)
        for v, p in zip(self.views, model.params):
            np.copyto(v, p)
        for views, name in zip(self.state_views, opt.state_names):
            for v, a in zip(views, opt.state[name]):
                np.copyto(v, a)
        steps = -(-n // trainer.batch_size)
        code, hyper = self._hyper()
        schedule = self._no_schedule
        if isinstance(opt, Adam):
            schedule = np.array([-opt.step_size(t) for t in range(opt.t + 1, opt.t + steps + 1)], dtype=self.dtype)
        total = self.k.run_epoch(
            Xc, Tc, order.astype(np.int64, copy=False), trainer.batch_size, self.sizes, self.acts, self.loss_code,
            self.theta, self.offs, self.grad, self.states[0], self.states[1], code, hyper, schedule,
            self.clip, self.zbuf, self.dbuf, self.tbuf,
        )  # fmt: skip
        opt.t += steps
        for v, p in zip(self.views, model.params):
            np.copyto(p, v)
        for views, name in zip(self.state_views, opt.state_names):
            for v, a in zip(views, opt.state[name]):
                np.copyto(a, v)
        return float(total) / n + model.l2_penalty(trainer.config.l2)
