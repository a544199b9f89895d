"""CupyOps: the GPU fast path, fused CUDA kernels for the elementwise work of a step.

The kernels are the CUDA C++ of kernels.cu (expanded by :mod:`._cuda_source`), compiled once
per dtype with NVRTC through ``xp.RawModule`` on first use. Every GEMM of a step goes to cuBLAS
through :mod:`._cublas` (ctypes), on a handle of ours per stream whose stream and preallocated
workspace are set once, on first use, outside capture: CuPy's own cuBLAS calls (``matmul``) are
refused while a stream captures a CUDA graph, ours are legal, and eager steps take the same
path as captured ones, so the two agree bit for bit. Arrays the kernels cannot take go the way of
:class:`~gpumlp.backends.inplace_ops.InplaceOps`. The methods after the Ops interface keep the
batch number and Adam's step size in device memory, for the captured steps of
:mod:`gpumlp.cuda_graph`. This module never imports CuPy: it gets the namespace as ``xp``.
"""

from __future__ import annotations

from typing import Any

from ..losses import CANONICAL_PAIRS
from ._cublas import CublasHandle, load_library, recommended_workspace_bytes
from ._cuda_source import CUDA_DERIVATIVE, CUDA_FORWARD, CUDA_LOSS, CUDA_SCALAR, cuda_source
from ._multi_tensor import MultiTensorMixin
from .inplace_ops import InplaceOps


class _MatmulPrecision:
    """Context in which float32 GEMMs may use TF32 tensor cores: gpumlp's own (CupyOps.allow_tf32,
    the compute type of its cublasGemmEx calls) and CuPy's (process-wide CuPy state); both are
    restored on exit."""

    def __init__(self, ops: CupyOps, allow_tf32: bool) -> None:
        self._ops = ops
        self._linalg = getattr(getattr(ops.xp, "_core", None), "_routines_linalg", None)
        self._dtype = ops.xp.float32
        self._allow = allow_tf32
        self._before: Any = None
        self._ops_before = False

    def __enter__(self) -> _MatmulPrecision:
        if self._allow:
            self._ops_before, self._ops.allow_tf32 = self._ops.allow_tf32, True
            if self._linalg is not None:
                self._before = self._linalg.get_compute_type(self._dtype)
                self._linalg.set_compute_type(self._dtype, self._linalg.COMPUTE_TYPE_TF32)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._allow:
            self._ops.allow_tf32 = self._ops_before
        if self._before is not None:
            self._linalg.set_compute_type(self._dtype, self._before)
            self._before = None


class CupyOps(MultiTensorMixin, InplaceOps):
    """CuPy: fused CUDA kernels for the elementwise work of a step, cuBLAS GEMMs into ``out=``.

    Bias + activation, activation backward × delta, the output delta (softmax + cross-entropy
    collapses to (Ŷ − T)/B), the loss sum, the bias gradient and each optimizer update are one
    kernel launch apiece (the gradient-norm clip is two plus one per gradient); the multi-tensor
    methods (:class:`~gpumlp.backends._multi_tensor.MultiTensorMixin`) update every parameter in
    one launch, clip factor and bias update included. Nothing in a step waits for the device.
    Kernels are compiled on first use and cached per dtype; an array the kernels cannot take
    (strided, other dtype) goes the InplaceOps way. The methods after
    the Ops interface read the batch number and Adam's step size from device memory: that is
    what lets :mod:`gpumlp.cuda_graph` replay one captured step for a whole epoch.
    """

    fused_update = True  # the update rides in the backward pass; plain SGD in the weight-gradient GEMM (β = 1)
    _BLOCK = 256  # threads per block of every launch
    _MAX_GRID = 65535  # most blocks of a grid-stride launch
    _CLIP_BLOCKS = 128  # blocks per gradient in the norm's first pass
    _FUSED_LOSS_MAX = 1 << 16  # most output elements for the one-block delta + loss kernel
    _LOSS_BLOCKS = 128  # blocks of the first pass of the two-pass loss sum (larger outputs)

    def __init__(self, xp: Any, cublas_lib: Any = None) -> None:
        super().__init__(xp)
        self._modules: dict[str, Any] = {}
        self._kernels: dict[tuple[str, str], Any] = {}
        self._clip_buffers: dict[tuple[str, Any], tuple[Any, Any]] = {}
        self._cublas_lib = cublas_lib  # None: the libcublas CuPy loaded, found on first use
        self._handles: dict[int, tuple[CublasHandle, Any]] = {}  # stream pointer -> (handle, its workspace)
        self.allow_tf32 = False  # float32 GEMMs in TF32 (set by matmul_precision)
        self._pending_loss: tuple[str, Any, Any, Any, Any] | None = None  # (loss, Ŷ, T, total, counter)
        self.advanced: Any = None  # the counter the last fused delta + loss kernel advanced (defer_loss_sum)
        self._loss_partials: dict[str, Any] = {}  # dtype -> first-pass partial sums of the two-pass loss

    # ----- cuBLAS ----------------------------------------------------------------------------
    def cublas_handle(self) -> CublasHandle:
        """The cuBLAS handle of the current stream, made on first use: stream, THEN a workspace of
        our own (cublasSetStream resets the workspace), so cuBLAS allocates nothing later, under
        capture included. Must first be called outside capture (the eager warm-up step does)."""
        stream = int(self.xp.cuda.get_current_stream().ptr)
        entry = self._handles.get(stream)
        if entry is None:
            cc = str(getattr(self.xp.cuda.Device(), "compute_capability", "") or "")
            nbytes = recommended_workspace_bytes(int(cc[:-1]) if cc[:-1].isdigit() else None)
            buf = self.xp.empty((nbytes + 256,), dtype=self.xp.uint8)  # rounded up to 256 bytes below
            ptr = buf.data.ptr if hasattr(buf.data, "ptr") else buf.ctypes.data
            lib = self._cublas_lib if self._cublas_lib is not None else load_library()
            entry = self._handles[stream] = (CublasHandle(stream, -(-ptr // 256) * 256, nbytes, lib=lib), buf)
        return entry[0]

    @staticmethod
    def _gemmable(*arrays: Any) -> bool:
        dtype = arrays[0].dtype
        return str(dtype) in CUDA_SCALAR and all(
            a.ndim == 2 and a.dtype == dtype and a.flags.c_contiguous for a in arrays
        )

    def gemm(self, a: Any, b: Any, out: Any = None, trans_a: bool = False, trans_b: bool = False) -> Any:
        if out is None or not self._gemmable(a, b, out):
            return super().gemm(a, b, out, trans_a, trans_b)
        tf32 = self.allow_tf32 and str(out.dtype) == "float32"
        return self.cublas_handle().gemm_arrays(a, b, out, trans_a=trans_a, trans_b=trans_b, allow_tf32=tf32)

    def gemm_update(self, p: Any, a: Any, b: Any, alpha: float, beta: float = 1.0, trans_a: bool = False) -> bool:
        if not self._gemmable(p, a, b):
            return False
        tf32 = self.allow_tf32 and str(p.dtype) == "float32"
        self.cublas_handle().gemm_arrays(a, b, p, alpha=alpha, beta=beta, trans_a=trans_a, allow_tf32=tf32)
        return True

    # ----- kernel plumbing -------------------------------------------------------------
    def _kernel(self, name: str, dtype: Any) -> Any:
        key = (name, str(dtype))
        fn = self._kernels.get(key)
        if fn is None:
            module = self._modules.get(key[1])
            if module is None:
                source = cuda_source(key[1])
                module = self._modules[key[1]] = self.xp.RawModule(code=source, options=("--fmad=false",))
            fn = self._kernels[key] = module.get_function(name)
        return fn

    def _elementwise(self, name: str, dtype: Any, n: int, *args: Any) -> None:
        """Launch a grid-stride kernel over ``n`` elements."""
        grid = min(max(1, -(-n // self._BLOCK)), self._MAX_GRID)
        self._kernel(name, dtype)((grid,), (self._BLOCK,), args)

    def _rowwise(self, name: str, dtype: Any, rows: int, *args: Any) -> None:
        """Launch a kernel that gives each row one warp."""
        warps = self._BLOCK // 32
        self._kernel(name, dtype)((-(-rows // warps),), (self._BLOCK,), args)

    def _contiguous(self, a: Any, dtype: Any = None) -> Any:
        if dtype is not None and a.dtype != dtype:
            a = a.astype(dtype)
        return a if a.flags.c_contiguous else self.xp.ascontiguousarray(a)

    @staticmethod
    def _fits(*arrays: Any) -> bool:
        """All C-contiguous, of one float dtype the kernels are compiled for."""
        dtype = arrays[0].dtype
        return str(dtype) in CUDA_SCALAR and all(a.flags.c_contiguous and a.dtype == dtype for a in arrays)

    # ----- the Ops interface -----------------------------------------------------------
    def affine_activate(self, X: Any, W: Any, b: Any, activation: str, out: Any = None) -> Any:
        known = activation in CUDA_FORWARD or activation == "softmax"
        if not known or (out is not None and not self._fits(out)):
            return super().affine_activate(X, W, b, activation, out)
        if out is None:
            out = self.xp.empty((X.shape[0], W.shape[1]), dtype=self.xp.result_type(X, W))
        self.flush_forward()
        out = self.gemm(X, W, out=out)
        if not self._defers(out, b, activation):  # else made by the output-delta kernel (defer_output_activation)
            self.flush_forward((out, self._contiguous(b, out.dtype), activation))
        return out

    def backprop_activation(self, activation: str, Z: Any, D: Any, consume_z: bool = False) -> Any:
        if activation not in CUDA_DERIVATIVE or not self._fits(D):
            return super().backprop_activation(activation, Z, D, consume_z)
        if activation != "identity":
            Z = self._contiguous(Z, D.dtype)
            self._elementwise(f"backprop_{activation}", D.dtype, D.size, D, Z, self.xp.int64(D.size))
        return D

    def output_delta(self, activation: str, loss: str, Y: Any, T: Any, scale: float, out: Any = None) -> Any:
        pending, self._pending_loss = self._pending_loss, None
        forward = self._take_forward(Y, activation)  # Y's deferred bias + activation, or None
        known = loss in CUDA_LOSS and (activation in CUDA_DERIVATIVE or activation == "softmax")
        if not known or Y.ndim != 2 or (out is not None and not self._fits(out, Y)):
            self.flush_forward(forward)
            self._flush_loss(pending)
            return super().output_delta(activation, loss, Y, T, scale, out)
        Y = self._contiguous(Y)
        T = self._contiguous(T, Y.dtype)
        if out is None:
            out = self.xp.empty(Y.shape, dtype=Y.dtype)
        s, i64 = Y.dtype.type(scale), self.xp.int64
        name = f"delta_{activation}_{loss}"
        rowwise = activation == "softmax" and (activation, loss) not in CANONICAL_PAIRS
        if pending is not None and not rowwise and pending[:3] == (loss, Y, T) and Y.size <= self._FUSED_LOSS_MAX:
            counter = pending[4] if pending[4] is not None else self._unit(self.xp.int32)
            args = (out, Y, T, s, i64(Y.size), pending[3], counter, self.xp.int32(pending[4] is not None))
            args += self._bias_args(Y) + self._forward_args(Y, forward)
            self._kernel(f"delta_loss_{activation}_{loss}", Y.dtype)((1,), (self._BLOCK,), args)
            self.advanced, self.bias_folded = pending[4], self._bias_fold is not None
            return out
        self.flush_forward(forward)
        self._flush_loss(pending)
        if rowwise:
            self._rowwise(name, Y.dtype, Y.shape[0], out, Y, T, s, i64(Y.shape[0]), i64(Y.shape[1]))
        else:
            self._elementwise(name, Y.dtype, Y.size, out, Y, T, s, i64(Y.size))
        return out

    def loss_sum(self, loss: str, Y: Any, T: Any) -> Any:
        self.flush_forward()
        if loss not in CUDA_LOSS or str(Y.dtype) not in CUDA_SCALAR:
            return super().loss_sum(loss, Y, T)
        out = self.xp.empty((), dtype=Y.dtype)
        self._loss(loss, Y, T, out, accumulate=False)
        return out

    def sum_rows(self, D: Any, out: Any = None) -> Any:
        if D.ndim != 2 or str(D.dtype) not in CUDA_SCALAR or (out is not None and not self._fits(out, D)):
            return super().sum_rows(D, out)
        D = self._contiguous(D)
        rows, cols = D.shape
        if out is None:
            out = self.xp.empty((cols,), dtype=D.dtype)
        i64 = self.xp.int64
        self._kernel("col_sum", D.dtype)((-(-cols // 32),), (32, 8), (D, out, i64(rows), i64(cols)))
        return out

    def add_scaled(self, y: Any, alpha: float, x: Any) -> Any:
        if not self._fits(y, x):
            return super().add_scaled(y, alpha, x)
        self._elementwise("axpy", y.dtype, y.size, y, x, y.dtype.type(alpha), self.xp.int64(y.size))
        return y

    def sgd_update(self, p: Any, g: Any, v: Any, lr: float, momentum: float, nesterov: bool) -> None:
        if not self._fits(p, g, *(() if v is None else (v,))):
            return super().sgd_update(p, g, v, lr, momentum, nesterov)
        s, n = p.dtype.type, self.xp.int64(p.size)
        if v is None:
            self._elementwise("sgd", p.dtype, p.size, p, g, s(lr), n)
        else:
            nest = self.xp.int32(bool(nesterov))
            self._elementwise("sgd_momentum", p.dtype, p.size, p, g, v, s(lr), s(momentum), nest, n)

    def adam_update(self, p: Any, g: Any, m: Any, v: Any, lr_t: float, beta1: float, beta2: float, eps: float) -> None:
        if not self._fits(p, g, m, v):
            return super().adam_update(p, g, m, v, lr_t, beta1, beta2, eps)
        s = p.dtype.type
        betas = (s(beta1), s(1.0 - beta1), s(beta2), s(1.0 - beta2))
        self._elementwise("adam", p.dtype, p.size, p, g, m, v, s(lr_t), *betas, s(eps), self.xp.int64(p.size))

    def clip_global_norm(self, grads: list[Any], max_norm: float) -> list[Any]:
        if not all(self._fits(g) and g.dtype == grads[0].dtype for g in grads):
            return super().clip_global_norm(grads, max_norm)
        dtype, i64, blocks = grads[0].dtype, self.xp.int64, self._CLIP_BLOCKS
        partial, factor = self._clip_partials(dtype, len(grads))
        sq_partial = self._kernel("sq_partial", dtype)
        for j, g in enumerate(grads):
            sq_partial((blocks,), (self._BLOCK,), (g, i64(g.size), partial[j * blocks : (j + 1) * blocks]))
        clip_args = (partial, i64(partial.size), dtype.type(max_norm), factor)
        self._kernel("clip_factor", dtype)((1,), (self._BLOCK,), clip_args)
        for g in grads:
            self._elementwise("scale_by", dtype, g.size, g, factor, i64(g.size))
        return grads

    def _clip_partials(self, dtype: Any, count: int) -> tuple[Any, Any]:
        """The norm's partial sums and the factor, allocated on the first call and reused (fixed
        addresses) after; shared by every model of this dtype and depth: steps must not run
        concurrently from two threads."""
        key = (str(dtype), count)
        if key not in self._clip_buffers:
            self._clip_buffers[key] = (
                self.xp.empty((count * self._CLIP_BLOCKS,), dtype=dtype),
                self.xp.empty((1,), dtype=dtype),
            )
        return self._clip_buffers[key]

    # ----- device-resident counterparts, for captured steps (CUDA graphs) ------------------
    def _loss(self, loss: str, Y: Any, T: Any, out: Any, accumulate: bool) -> None:
        Y = self._contiguous(Y)
        T = self._contiguous(T, Y.dtype)
        args = (Y, T, self.xp.int64(Y.size), out, self.xp.int32(accumulate))
        self._kernel(f"loss_{loss}", Y.dtype)((1,), (self._BLOCK,), args)

    def add_loss_sum(self, loss: str, Y: Any, T: Any, total: Any) -> None:
        """total += Σ_n ℓ(Ŷ_n, T_n), in place on the 0-d device array ``total`` (float64: the
        batch's sum is made in Y's dtype, then added in float64)."""
        self.flush_forward()
        Y = self._contiguous(Y)
        T = self._contiguous(T, Y.dtype)
        if str(total.dtype) != "float64":
            raise TypeError(f"add_loss_sum adds into a float64 total, got {total.dtype}")
        n = self.xp.int64(Y.size)
        if Y.size <= self._FUSED_LOSS_MAX:  # one block: latency-bound only beyond this
            self._kernel(f"loss_total_{loss}", Y.dtype)((1,), (self._BLOCK,), (Y, T, n, total))
            return
        partial = self._loss_partials.get(str(Y.dtype))
        if partial is None:  # allocated on the first (eager) call, at a fixed address after
            partial = self._loss_partials[str(Y.dtype)] = self.xp.empty((self._LOSS_BLOCKS,), dtype=Y.dtype)
        self._kernel(f"loss_partial_{loss}", Y.dtype)((self._LOSS_BLOCKS,), (self._BLOCK,), (Y, T, n, partial))
        args = (partial, self.xp.int64(self._LOSS_BLOCKS), total)
        self._kernel("add_partials", Y.dtype)((1,), (self._BLOCK,), args)

    def defer_loss_sum(self, loss: str, Y: Any, T: Any, total: Any, counter: Any = None) -> None:
        """:meth:`add_loss_sum`, made by the next :meth:`output_delta` on the same Ŷ and T (one
        kernel for both, one pass over Ŷ), or at :meth:`flush_loss_sum` if that does not come.
        That kernel also adds 1 to the int32 device ``counter`` (the device loop's batch number)
        when one is given, and then sets :attr:`advanced` to it (else it stays as it was)."""
        self._flush_loss(self._pending_loss)
        if loss in CUDA_LOSS and self._fits(Y, T) and Y.ndim == 2:
            self._pending_loss = (loss, Y, T, total, counter)
        else:
            self.add_loss_sum(loss, Y, T, total)

    def flush_loss_sum(self) -> None:
        """Add a loss sum deferred by :meth:`defer_loss_sum` that no output delta has made yet (and
        a bias + activation deferred by :meth:`defer_output_activation`; that deferral ends here)."""
        pending, self._pending_loss = self._pending_loss, None
        self.flush_forward()
        self._forward_target = None
        self._flush_loss(pending)

    def _flush_loss(self, pending: tuple[str, Any, Any, Any, Any] | None) -> None:
        if pending is not None:
            self.add_loss_sum(*pending[:4])

    def gather_batch(self, X: Any, T: Any, perm: Any, step: Any, batch_size: int, X_out: Any, T_out: Any) -> None:
        """Rows perm[step[0]·batch_size + r] of X and T into X_out and T_out.

        ``step`` is a 1-element int32 device array and ``perm`` an int64 one, so the batch
        offset is read on the device. All arrays must be C-contiguous, X and T of one dtype.
        """
        if not (self._fits(X, T, X_out, T_out) and perm.flags.c_contiguous):
            raise ValueError("gather_batch needs C-contiguous arrays of one float dtype")
        i64, rows = self.xp.int64, X_out.shape[0]
        dx, dt = X.shape[1], T.shape[1]
        self._elementwise(
            "gather_batch",
            X.dtype,
            rows * (dx + dt),
            X,
            T,
            perm,
            step,
            i64(batch_size),
            i64(rows),
            i64(dx),
            i64(dt),
            X_out,
            T_out,
        )

    def adam_update_scheduled(
        self,
        p: Any,
        g: Any,
        m: Any,
        v: Any,
        lr_schedule: Any,
        step: Any,
        beta1: float,
        beta2: float,
        eps: float,
        offset: int = 0,
    ) -> None:
        """:meth:`adam_update` with η_t = lr_schedule[step[0] + offset], both read on the device."""
        s = p.dtype.type
        self._elementwise(
            "adam_scheduled",
            p.dtype,
            p.size,
            p,
            g,
            m,
            v,
            lr_schedule,
            step,
            self.xp.int32(offset),
            s(beta1),
            s(1.0 - beta1),
            s(beta2),
            s(1.0 - beta2),
            s(eps),
            self.xp.int64(p.size),
        )

    def advance(self, step: Any, dtype: Any) -> None:
        """step[0] += 1 on the device; ``dtype`` names the compiled module to take the kernel from."""
        self._kernel("advance", dtype)((1,), (1,), (step,))

    def matmul_precision(self, allow_tf32: bool) -> _MatmulPrecision:
        """Context in which float32 matmuls may use TF32 tensor cores (a no-op unless ``allow_tf32``)."""
        return _MatmulPrecision(self, allow_tf32)
