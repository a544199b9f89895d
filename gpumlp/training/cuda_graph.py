"""CUDA graphs: train steps captured once per batch shape, up to 32 steps a graph, replayed for whole epochs.

On a small network a Python loop that launches ~20 kernels per step costs more than the
kernels. Here a step is recorded once with stream capture (``stream.begin_capture()`` …
``stream.end_capture()``) and every later step of that shape is one ``graph.launch()``.
A replay repeats the recorded launches with the recorded arguments, so whatever changes
from step to step lives in device memory at fixed addresses:

- X and the targets: on the device for the whole fit;
- the epoch's permutation: a device buffer refreshed in place once per epoch from the
  model's seeded host RNG (the same draws as the eager loop: every backend sees the same
  batches);
- the batch number: a device int32 that each step reads (the gather offset, Adam's η_t)
  and increments;
- Adam's bias-corrected step sizes η_t for the epoch's steps: filled once per epoch;
- the epoch loss: a device scalar the steps add to, read once at the end of the epoch.

Nothing may be allocated while capturing: a pool block freed after capture could go to
another array while the graph still writes into it. Every buffer exists before capture, a
memory hook counts allocations during it, and a capture that allocates or fails in any way
is dropped with a warning; training then goes on with the same step launched eagerly. The
first step of each shape runs eagerly (compiling kernels, loading cuBLAS code, filling
caches) before that shape is captured.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np

from ..backends.cupy_ops import CupyOps
from ..optimizers import SGD, Adam, Optimizer
from ..validation import check_bool
from .capture import GraphCaptureError, capture, capture_unsupported
from .step import StepConfig, train_step

CUDA_GRAPH_CHOICES = (False, True, "auto")


def epoch_plan(n: int, batch_size: int) -> list[tuple[int, int]]:
    """The batch shapes of one epoch as (rows, count): the full batches, then the remainder."""
    full, rest = divmod(n, batch_size)
    return [(rows, count) for rows, count in ((batch_size, full), (rest, 1 if rest else 0)) if count]


def loop_unsupported(trainer: Any) -> str | None:
    """Why :class:`DeviceLoop` cannot run ``trainer``'s epochs; None when it can."""
    model = trainer.model
    if not isinstance(model.ops, CupyOps):
        return (
            f"needs backend='cupy' (a CUDA GPU with CuPy); this model runs on {model.backend.name!r} "
            f"with {type(model.ops).__name__}"
        )
    if getattr(trainer.reducer, "size", 1) != 1:
        return "does not support distributed training (comm=...) yet"
    if type(trainer.optimizer) not in (SGD, Adam):
        return f"supports the built-in optimizers 'sgd' and 'adam' only; got {type(trainer.optimizer).__name__}"
    return None


def device_loop(trainer: Any, cuda_graph: bool | str = False, allow_tf32: bool = False) -> DeviceLoop | None:
    """The :class:`DeviceLoop` that ``fit(cuda_graph=..., allow_tf32=...)`` asks for, or None
    for the plain loop.

    ``cuda_graph=True`` and ``allow_tf32=True`` raise ValueError where they cannot apply (NumPy,
    distributed training, a custom optimizer); ``"auto"`` uses graphs where they can apply and
    quietly does nothing elsewhere. Where stream capture itself is unavailable, graphs are
    turned off with a warning.
    """
    if isinstance(cuda_graph, str):
        if cuda_graph != "auto":
            raise ValueError(f"cuda_graph must be True, False or 'auto'; got {cuda_graph!r}")
    else:
        cuda_graph = check_bool(cuda_graph, "cuda_graph")
    allow_tf32 = check_bool(allow_tf32, "allow_tf32")
    if not cuda_graph and not allow_tf32:
        return None
    why = loop_unsupported(trainer)
    if why:
        for name, value in (("cuda_graph", cuda_graph), ("allow_tf32", allow_tf32)):
            if value is True:
                raise ValueError(f"{name}=True {why}")
        return None
    graphs = bool(cuda_graph)
    reason = capture_unsupported(trainer.model.backend.xp) if graphs else None
    if reason:
        if cuda_graph is True:
            warnings.warn(f"cuda_graph=True: {reason}; training runs without CUDA graphs", RuntimeWarning, stacklevel=3)
        graphs = False
        if not allow_tf32:
            return None
    return DeviceLoop(trainer, graphs=graphs, allow_tf32=allow_tf32)


class DeviceBatches:
    """The device loop's batch source: rows perm[step[0]·batch_size + r] of (X, T), gathered on
    the device, and step[0] += 1 once the step is done; ``perm`` and ``step`` are device arrays."""

    def __init__(self, ops: CupyOps, X: Any, T: Any, perm: Any, step: Any, batch_size: int, dtype: Any) -> None:
        self.ops, self.X, self.T, self.perm, self.step = ops, X, T, perm, step
        self.batch_size, self.dtype = batch_size, dtype

    def fill(self, ws: Any) -> None:
        self.ops.advanced = None
        self.ops.gather_batch(self.X, self.T, self.perm, self.step, self.batch_size, ws.Z[0], ws.T)
        self.ops.defer_output_activation(ws.Z[-1])  # the output delta + loss kernel makes Ŷ = g(A_L + b_L)

    def advance(self) -> None:
        """step[0] += 1: done already by the output delta + loss kernel where it ran (no launch of
        its own: ``ops.advanced``), else by the ``advance`` kernel."""
        self.ops.flush_loss_sum()  # normally made already, with the output delta
        if self.ops.advanced is not self.step:
            self.ops.advance(self.step, self.dtype)
        self.ops.advanced = None


class DeviceLossTotal:
    """The device loop's loss sum: each batch's Σ_n ℓ_n is added into the float64 ``total`` by the
    output-delta kernel itself (CupyOps.defer_loss_sum; no kernel of its own, no temporary), which
    also advances the batch counter ``step`` (the gather has read it by then)."""

    def __init__(self, ops: CupyOps, total: Any, step: Any) -> None:
        self.ops, self.total, self.step = ops, total, step

    def add(self, loss: str, Y: Any, T: Any) -> None:
        self.ops.defer_loss_sum(loss, Y, T, self.total, self.step)


class ScheduledUpdate:
    """The device loop's update rule: each parameter's update with nothing counted on the host
    (the loop adds the epoch's steps to ``optimizer.t``), Adam's η_t read from ``lr_schedule`` at
    the device batch number ``step[0]``: a replay must not reuse the captured step's η_t.

    It offers the optimizer's side of the fused step too (:func:`~gpumlp.training.fused.backward_update`:
    ``prescale``, ``begin_step``, ``update``, ``apply_prescaled``), so the device loop takes the
    path the eager loop takes on this Ops (plain SGD inside the weight-gradient GEMM)."""

    def __init__(
        self,
        optimizer: Optimizer,
        ops: CupyOps,
        lr_schedule: Any,
        step: Any,
        clip_norm: float | None = None,
        params: list[Any] | None = None,
    ) -> None:
        self.optimizer, self.ops, self.lr_schedule, self.step_counter = optimizer, ops, lr_schedule, step
        self.clip_norm = clip_norm  # the global-norm clip, made here when config.clip_norm is left to us
        self._tables: dict[tuple[int, ...], Any] = {}  # array addresses -> pointer table (lives with the binding)
        # with params: the fused step hands each whole gradient to update(), which collects them and,
        # once it has one per parameter, clips and updates them all (step): one launch
        self.params = params
        self._collected: dict[int, Any] = {}

    @property
    def collects_grads(self) -> bool:
        """True when :func:`~gpumlp.training.fused.backward_update` is to hand over whole gradients
        (in the workspace's gradient buffers) for one update of every parameter at the end."""
        return self.params is not None

    @property
    def prescale(self) -> float | None:
        return None if self.collects_grads else self.optimizer.prescale

    def begin_step(self) -> None:
        """No step count (the loop counts an epoch's steps on the host once, after it); drops what a
        step that failed half-way (a failed capture) may have collected."""
        self._collected.clear()

    def update(self, i: int, p: Any, g: Any, rows: slice | None = None) -> None:
        opt = self.optimizer
        if self.params is not None and rows is None:
            self._collected[i] = g
            if len(self._collected) == len(self.params):
                grads = [self._collected[k] for k in range(len(self.params))]
                self._collected.clear()
                self.step(self.params, grads)
            return
        if isinstance(opt, Adam):
            m, v = opt.state["m"][i], opt.state["v"][i]
            if rows is not None:
                m, v = m[rows], v[rows]
            args = (self.lr_schedule, self.step_counter, opt.beta1, opt.beta2, opt.eps, self._offset())
            self.ops.adam_update_scheduled(p, g, m, v, *args)
        else:
            opt.update(i, p, g, rows)

    def _offset(self) -> int:
        """Where η_t of this step is in the schedule relative to step[0]: −1 once this step's
        output delta + loss kernel has advanced step[0] (DeviceBatches.advance), else 0."""
        return -1 if self.ops.advanced is self.step_counter else 0

    def apply_prescaled(self, i: int, p: Any, g: Any, rows: slice | None = None) -> None:
        self.optimizer.apply_prescaled(i, p, g, rows)

    def _table(self, *groups: list[Any]) -> Any:
        """The multi-tensor pointer table of ``groups``, made on first use (an eager step: the
        first step of every batch shape runs eagerly) and kept for the binding's graphs."""
        key = tuple(CupyOps._address(a) for group in groups for a in group)
        if key not in self._tables:
            self._tables[key] = self.ops.tensor_table(*groups)
        return self._tables[key]

    def step(self, params: list[Any], grads: list[Any]) -> None:
        """Clip (when :attr:`clip_norm`) and update every parameter: one multi-tensor launch for
        the update and two for the clip factor, or tensor by tensor where the kernels cannot."""
        opt, ops = self.optimizer, self.ops
        state = [opt.state[name] for name in opt.state_names]
        table = self._table(params, grads, *state)
        grad_table = self._table(grads) if self.clip_norm is not None else None
        if table is None or (self.clip_norm is not None and grad_table is None):
            if self.clip_norm is not None:
                grads = ops.clip_global_norm(grads, self.clip_norm)
            for i, (p, g) in enumerate(zip(params, grads)):
                self.update(i, p, g)
            return
        scale = None if grad_table is None else ops.multi_clip_factor(grad_table, grads, self.clip_norm)
        if isinstance(opt, Adam):
            args = (self.lr_schedule, self.step_counter, opt.beta1, opt.beta2, opt.eps)
            ops.multi_adam_update_scheduled(table, grads, *args, scale=scale, offset=self._offset())
        else:
            ops.multi_sgd_update(table, grads, bool(state), opt.lr, opt.momentum, opt.nesterov, scale=scale)


class DeviceLoop:
    """Runs a :class:`~gpumlp.training.fit.Trainer`'s epochs on a CuPy stream of its own, the batch
    number and step sizes in device memory; each step is replayed from a CUDA graph
    (``graphs=True``, after one eager step per shape) or launched eagerly.

    Every step is :func:`~gpumlp.training.step.train_step`, the eager loop's own, given the device
    batch source, loss total and update rule above; so it computes what ``Trainer.run_epoch``
    computes, step for step (same permutation draws, same kernels, same order), and keeps
    ``optimizer.t`` in step.
    """

    def __init__(self, trainer: Any, graphs: bool, allow_tf32: bool) -> None:
        self.trainer = trainer
        self.model = trainer.model
        self.ops: CupyOps = self.model.ops
        self.xp = self.model.backend.xp
        self.graphs = graphs
        self.allow_tf32 = allow_tf32
        self.stream = self.xp.cuda.Stream(non_blocking=True)
        self.step = self.xp.zeros((1,), dtype=self.xp.int32)  # the batch number within the epoch
        self.total = self.ops.alloc((), self.xp.float64)  # Σ_n ℓ_n over the epoch so far, summed in float64
        self.losses = DeviceLossTotal(self.ops, self.total, self.step)
        self.captured: dict[tuple[int, int], Any] = {}  # (batch rows, steps k) -> graph of k steps
        self.steps_per_graph = 32  # most steps one graph launch runs
        self._warm: set[int] = set()  # batch shapes that have run one eager step since the last _bind
        self._bound: tuple[list[Any], tuple[Any, ...]] | None = None
        self.batches: DeviceBatches | None = None
        self.update: ScheduledUpdate | None = None
        self.lr_schedule: Any = None
        self.epoch_steps = 0  # steps of the epoch the buffers (permutation, step sizes) are filled for
        self.steps_done = 0  # steps enqueued or replayed since step[0] was set to 0: the host's copy of step[0]

    @property
    def config(self) -> StepConfig:
        """The trainer's step settings, except where the device loop does better: an update that
        is not plain SGD folded into the GEMMs (momentum, Adam) or that is clipped takes the fused
        backward pass too, which hands :class:`ScheduledUpdate` each whole gradient; it applies them
        all after the last as ONE multi-tensor launch and makes the clip itself (its factor goes
        into that launch instead of a scale launch per gradient)."""
        config = self.trainer.config
        if config.fused and self.trainer.optimizer.prescale is not None:
            return config
        return replace(config, fused=True, clip_norm=None)  # ScheduledUpdate collects the gradients

    # ----- what the graphs depend on ------------------------------------------------------
    def _bind(self, X: Any, T: Any, plan: list[tuple[int, int]]) -> None:
        """Point the loop at (X, T) and the current parameters; drop the graphs when anything a
        graph baked in (an array's address, a hyperparameter) has changed since capture."""
        tr, model, opt, config = self.trainer, self.model, self.trainer.optimizer, self.trainer.config
        workspaces = [model.workspace(rows) for rows, _ in plan]  # allocated here, never under capture
        arrays = [X, T, *model.params, *(a for state in opt.state.values() for a in state)]
        for ws in workspaces:
            arrays += [*ws.Z, *ws.D[1:], ws.T, *ws.flat_grad_list()]
        hyper = tuple(sorted(opt.hyper().items()))
        values = (X.shape, T.shape, config.loss, config.l2, config.clip_norm, tr.batch_size, opt.name, hyper)
        old = self._bound
        if (
            old is not None
            and old[1] == values
            and len(old[0]) == len(arrays)
            and all(a is b for a, b in zip(old[0], arrays))
        ):
            return
        self.captured.clear()
        self._warm.clear()
        self._bound = (arrays, values)
        X, T = (a if a.flags.c_contiguous else self.xp.ascontiguousarray(a) for a in (X, T))
        steps = sum(count for _, count in plan)
        perm = self.xp.zeros((X.shape[0],), dtype=self.xp.int64)
        self.batches = DeviceBatches(self.ops, X, T, perm, self.step, tr.batch_size, T.dtype)
        self.lr_schedule = self.ops.alloc((steps,), model.xp_dtype)
        collect = not (config.fused and opt.prescale is not None)  # as self.config decides
        params = list(model.params) if collect else None
        self.update = ScheduledUpdate(opt, self.ops, self.lr_schedule, self.step, config.clip_norm, params)

    # ----- one step, on whatever stream is current ----------------------------------------------
    def rewind(self, steps: int) -> None:
        """Make the next step the first of an epoch of ``steps`` steps (step[0] = 0 on the device)."""
        self.step.fill(0)
        self.epoch_steps, self.steps_done = steps, 0

    def _claim_step(self, k: int = 1) -> None:
        """Count ``k`` more steps of the epoch, refusing (on the host, before anything is launched)
        a step that would read past the permutation and step-size buffers: on a GPU that read is
        an illegal address, which poisons the CUDA context."""
        if self.steps_done + k > self.epoch_steps:
            raise RuntimeError(
                f"the device loop would run step {self.steps_done + k} of an epoch past the {self.epoch_steps} "
                "steps of the epoch, reading past its permutation and step-size buffers; rewind() first"
            )
        self.steps_done += k

    def _record_step(self, rows: int) -> None:
        """Batch number step[0], through the one train_step; nothing here reads the device."""
        model = self.model
        try:
            train_step(model, model.workspace(rows), self.batches, self.losses, self.update, self.config, rows)
        except BaseException:
            self.ops.defer_output_activation(None)  # nothing deferred outlives a failed step
            raise

    def _enqueue_step(self, rows: int) -> None:
        """One step launched from Python (checked against the epoch's length first)."""
        self._claim_step()
        self._record_step(rows)

    def _capture(self, rows: int, k: int) -> Any:
        """The graph of ``k`` consecutive steps of ``rows`` rows (captured now if it is not yet), or
        None when capture failed (then graphs are off for this loop, with a warning)."""
        graph = self.captured.get((rows, k))
        if graph is not None:
            return graph
        try:
            graph = capture(self.xp, self.stream, lambda: [self._record_step(rows) for _ in range(k)])
        except GraphCaptureError as exc:
            warnings.warn(
                f"CUDA graph capture failed: {exc}. Training goes on without CUDA graphs.", RuntimeWarning, stacklevel=4
            )
            self.graphs = False
            return None
        self.captured[(rows, k)] = graph
        return graph

    def _run(self, rows: int, count: int) -> None:
        """``count`` steps of ``rows`` rows: the first of a new shape eagerly (warm-up: kernels
        compiled, cuBLAS handle made), then graphs of up to :attr:`steps_per_graph` steps each, so
        that Python launches one graph per that many steps."""
        if self.graphs and count and rows not in self._warm:
            self._enqueue_step(rows)  # warm-up, and a real step of the epoch
            self._warm.add(rows)
            count -= 1
        while count and self.graphs:
            k = min(count, self.steps_per_graph)
            graph = self._capture(rows, k)
            if graph is None:
                break
            self._claim_step(k)
            graph.launch(stream=self.stream)
            count -= k
        for _ in range(count):
            self._enqueue_step(rows)

    # ----- an epoch -------------------------------------------------------------------------------
    def run_epoch(self, X: Any, T: Any) -> float:
        """One pass over (X, T), already on the device; returns the mean training loss (with the
        L2 term), as ``Trainer.run_epoch`` does. The host waits for the device once, at the end."""
        tr, model, ops, xp = self.trainer, self.model, self.ops, self.xp
        n = X.shape[0]
        plan = epoch_plan(n, tr.batch_size)
        order = tr.rng.permutation(n) if tr.shuffle else np.arange(n)
        self._bind(X, T, plan)
        opt = tr.optimizer
        steps = sum(count for _, count in plan)
        caller = xp.cuda.get_current_stream()
        with self.stream, ops.matmul_precision(self.allow_tf32):
            self.stream.wait_event(caller.record())  # the caller's queued work (restores, copies) first
            ops.assign(self.batches.perm, model.backend.asarray(order.astype(np.int64, copy=False)))
            if isinstance(opt, Adam):
                sizes = [opt.step_size(opt.t + i) for i in range(1, steps + 1)]
                ops.assign(self.lr_schedule, model.backend.asarray(np.asarray(sizes), dtype=model.xp_dtype))
            self.rewind(steps)
            self.total.fill(0)
            for rows, count in plan:
                self._run(rows, count)
            opt.t += steps
            total = float(self.total)
        return total / n + model.l2_penalty(self.config.l2)
