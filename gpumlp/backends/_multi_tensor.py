"""Multi-tensor apply for :class:`~gpumlp.backends.cupy_ops.CupyOps`: one kernel launch updates every parameter.

The parameters stay separate arrays (the model's layout is unchanged); a small uint64 device table,
built on the host once per binding and uploaded before any capture, holds the prefix sums of the
tensors' sizes and, per tensor, the device addresses of its parameter, gradient and optimizer
states. The kernels (kernels.cu, "Multi-tensor apply") find each element's tensor by a binary
search of those sums and apply the per-element arithmetic of the per-parameter kernels, so the
results are the same bits. Also here: the gradient-norm clip factor of every gradient in two launches
(its scale goes into the update), the bias gradient + plain-SGD bias update in one, and the output
layer's bias + activation deferred into the one-block output-delta + loss kernel.
This module never imports CuPy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._cuda_source import CUDA_DERIVATIVE


class MultiTensorMixin:
    """The multi-tensor methods of CupyOps; it provides ``xp``, ``_fits``, ``_elementwise``,
    ``_kernel``, ``_clip_partials``, ``_clip_buffers``, ``_BLOCK`` and ``_CLIP_BLOCKS``."""

    xp: Any
    _bias_fold: tuple[Any, float, bool] | None = None  # (b, alpha, assign) for the next delta + loss kernel
    bias_folded = False  # whether that kernel made the bias update (output_delta_add_bias)
    _forward_target: Any = None  # the output array whose bias + activation the next affine_activate defers
    _pending_forward: tuple[Any, Any, str] | None = None  # (Z, b, activation) deferred, not yet made
    _clip_buffers: dict[tuple[str, Any], tuple[Any, Any]]
    _FUSED_LOSS_MAX: int
    _BLOCK: int
    _CLIP_BLOCKS: int

    @staticmethod
    def _address(a: Any) -> int:
        """The device address of an array's first element (CuPy: ``data.ptr``; the emulator's NumPy arrays)."""
        return int(a.data.ptr if hasattr(a.data, "ptr") else a.ctypes.data)

    def tensor_table(self, *groups: list[Any]) -> Any | None:
        """The pointer table of kernels.cu's multi-tensor kernels for ``groups`` (parameters,
        gradients, states...: lists of equally many arrays, the k-th of each of one size): count + 1
        prefix sums of the sizes, then the k-th array of every group, as a uint64 device array.

        Built on the host and uploaded: call it outside capture (once per binding) and keep the
        table alive as long as a graph may use it. None when an array does not fit the kernels
        (strided, mixed dtypes, empty): then update tensor by tensor.
        """
        arrays = [a for group in groups for a in group]
        if not arrays or not self._fits(*arrays) or any(len(g) != len(groups[0]) for g in groups):
            return None
        sizes = [int(a.size) for a in groups[0]]
        if any(int(a.size) != n for group in groups for a, n in zip(group, sizes)) or 0 in sizes:
            return None
        offsets = [0]
        for n in sizes:
            offsets.append(offsets[-1] + n)
        pointers = [self._address(g[k]) for k in range(len(sizes)) for g in groups]
        return self.xp.asarray(np.asarray(offsets + pointers, dtype=np.uint64))

    def _multi(self, name: str, table: Any, grads: list[Any], *args: Any, scale: Any = None) -> None:
        total, dtype = sum(int(g.size) for g in grads), grads[0].dtype
        flag = self.xp.int32(scale is not None)
        if scale is None:
            scale = self._unit(dtype)
        self._elementwise(name, dtype, total, table, self.xp.int32(len(grads)), *args, scale, flag)

    def _unit(self, dtype: Any) -> Any:
        """A 1-element device array of ``dtype`` (an unused scale or counter argument), made on first use."""
        key = ("unit", str(np.dtype(dtype)))
        if key not in self._clip_buffers:
            self._clip_buffers[key] = (self.xp.ones((1,), dtype=dtype), None)
        return self._clip_buffers[key][0]

    def multi_sgd_update(
        self, table: Any, grads: list[Any], velocity: bool, lr: float, momentum: float, nesterov: bool,
        scale: Any = None,
    ) -> None:  # fmt: skip
        """:meth:`sgd_update` of every tensor of ``table`` (``tensor_table(params, grads[, velocities])``)
        in one launch; ``scale``: a 1-element device factor the gradients are multiplied by first."""
        s = grads[0].dtype.type
        if velocity:
            nest = self.xp.int32(bool(nesterov))
            self._multi("multi_sgd_momentum", table, grads, s(lr), s(momentum), nest, scale=scale)
        else:
            self._multi("multi_sgd", table, grads, s(lr), scale=scale)

    def multi_adam_update_scheduled(
        self, table: Any, grads: list[Any], lr_schedule: Any, step: Any, beta1: float, beta2: float, eps: float,
        scale: Any = None, offset: int = 0,
    ) -> None:  # fmt: skip
        """:meth:`adam_update_scheduled` of every tensor of ``table`` (``tensor_table(params, grads, m, v)``)
        in one launch, η_t = lr_schedule[step[0] + offset]; ``scale`` as in :meth:`multi_sgd_update`."""
        s = grads[0].dtype.type
        args = (lr_schedule, step, self.xp.int32(offset), s(beta1), s(1.0 - beta1), s(beta2), s(1.0 - beta2), s(eps))
        self._multi("multi_adam", table, grads, *args, scale=scale)

    def multi_clip_factor(self, table: Any, grads: list[Any], max_norm: float) -> Any:
        """The factor min(1, c/‖g‖) of :meth:`clip_global_norm` for the gradients of ``table``
        (``tensor_table(grads)``), as a 1-element device array, in two launches; the gradients
        are not scaled (the multi-tensor update takes the factor)."""
        dtype, blocks = grads[0].dtype, self._CLIP_BLOCKS
        partial, factor = self._clip_partials(dtype, len(grads))
        args = (table, self.xp.int32(len(grads)), self.xp.int32(blocks), partial)
        self._kernel("multi_sq_partial", dtype)((len(grads) * blocks,), (self._BLOCK,), args)
        clip_args = (partial, self.xp.int64(partial.size), dtype.type(max_norm), factor)
        self._kernel("clip_factor", dtype)((1,), (self._BLOCK,), clip_args)
        return factor

    def add_column_sums(self, b: Any, D: Any, alpha: float = 1.0) -> bool:
        """b ← b + alpha·Σ_r D[r, :] in one launch (the bias gradient and the plain-SGD bias update);
        False, having done nothing, where the kernel cannot take the arrays."""
        if D.ndim != 2 or b.shape != D.shape[1:] or not self._fits(b, D):
            return False
        rows, cols = D.shape
        args = (D, b, b.dtype.type(alpha), self.xp.int64(rows), self.xp.int64(cols))
        self._kernel("col_sum_axpy", D.dtype)((-(-cols // 32),), (32, 8), args)
        return True

    def backprop_add_bias(
        self, activation: str, Z: Any, D: Any, b: Any, alpha: float = 1.0, assign: bool = False
    ) -> bool:
        """D ← D ⊙ g'(A) from the layer output Z (:meth:`backprop_activation`), then b ← b + alpha·1ᵀD
        (``assign``: b ← 1ᵀD, the bias gradient), in one launch; False, having done nothing, where
        the kernels cannot take the arrays."""
        if activation not in CUDA_DERIVATIVE or D.ndim != 2 or Z.shape != D.shape or b.shape != D.shape[1:]:
            return False
        if not self._fits(D, Z, b):
            return False
        if activation == "identity":  # g' = 1: D stays as it is (no multiply by 1, which flushes subnormals)
            if assign:
                self.sum_rows(D, out=b)
                return True
            return self.add_column_sums(b, D, alpha)
        rows, cols = D.shape
        args = (D, Z, b, b.dtype.type(alpha), self.xp.int64(rows), self.xp.int64(cols), self.xp.int32(assign))
        self._kernel(f"backprop_bias_{activation}", D.dtype)((-(-cols // 32),), (32, 8), args)
        return True

    def output_delta_add_bias(
        self, activation: str, loss: str, Y: Any, T: Any, scale: float, out: Any, b: Any, alpha: float = 1.0,
        assign: bool = False,
    ) -> tuple[Any, bool]:  # fmt: skip
        """:meth:`output_delta`; where the one-block delta + loss kernel makes it (a loss sum deferred by
        ``defer_loss_sum``), that kernel also adds alpha·1ᵀD to ``b`` (``assign``: b ← 1ᵀD). Returns
        (D, whether it did)."""
        fits = Y.ndim == 2 and b.shape == Y.shape[1:] and self._fits(b) and b.dtype == Y.dtype
        self._bias_fold, self.bias_folded = ((b, alpha, assign) if fits else None), False
        try:
            out = self.output_delta(activation, loss, Y, T, scale, out)
        finally:
            self._bias_fold = None
        folded, self.bias_folded = self.bias_folded, False
        return out, folded

    def _bias_args(self, Y: Any) -> tuple[Any, ...]:
        """The bias arguments of the delta + loss kernel for the (rows, cols) output Y."""
        b, alpha, assign = self._bias_fold if self._bias_fold is not None else (self._unit(Y.dtype), 0.0, False)
        rows, cols = Y.shape
        flag = self.xp.int32(0 if self._bias_fold is None else 2 if assign else 1)
        return (b, Y.dtype.type(alpha), self.xp.int64(rows), self.xp.int64(cols), flag)

    # ----- the output layer's bias + activation, made by the delta + loss kernel -------------------
    def defer_output_activation(self, Z: Any) -> None:
        """The next ``affine_activate(..., out=Z)`` (the output layer of a device-loop step) makes
        only the GEMM where the one-block delta + loss kernel can take Z; that kernel then makes
        Z ← g(Z + b) first (the same bits as the bias + activation kernel), one launch fewer. Any
        other op that reads Z first launches the bias + activation on its own (:meth:`flush_forward`).
        ``None``: defer nothing, and drop what is deferred (a step that failed half-way)."""
        self._forward_target, self._pending_forward = Z, None

    def _defers(self, out: Any, b: Any, activation: str) -> bool:
        """Whether ``affine_activate`` into ``out`` leaves its bias + activation to the delta kernel
        (then it is recorded as pending)."""
        if out is None or out is not self._forward_target:
            return False
        self._forward_target = None
        fits = out.ndim == 2 and 0 < out.size <= self._FUSED_LOSS_MAX and b.shape == out.shape[1:]
        if not (fits and self._fits(out, b)):
            return False
        self._pending_forward = (out, b, activation)
        return True

    def _take_forward(self, Y: Any, activation: str) -> tuple[Any, Any, str] | None:
        """The deferred bias + activation of ``Y`` (taken: the caller makes it), or None (anything
        else deferred is launched first)."""
        pending = self._pending_forward
        if pending is not None and (pending[0] is not Y or pending[2] != activation):
            self.flush_forward()
            return None
        self._pending_forward = None
        return pending

    def flush_forward(self, pending: tuple[Any, Any, str] | None = None) -> None:
        """Launch the deferred bias + activation (``pending``, else the one still deferred) on its own."""
        if pending is None:
            pending, self._pending_forward = self._pending_forward, None
        if pending is None:
            return
        Z, b, activation = pending
        rows, cols = Z.shape
        i64 = self.xp.int64
        if activation == "softmax":
            self._rowwise("bias_softmax", Z.dtype, rows, Z, b, i64(rows), i64(cols))
        else:
            self._elementwise(f"bias_act_{activation}", Z.dtype, Z.size, Z, b, i64(Z.size), i64(cols))

    def _forward_args(self, Y: Any, pending: tuple[Any, Any, str] | None) -> tuple[Any, ...]:
        """The forward arguments of the delta + loss kernel: (bias, 1) for a deferred bias + activation."""
        if pending is None:
            return (self._unit(Y.dtype), self.xp.int32(0))
        return (pending[1], self.xp.int32(1))
