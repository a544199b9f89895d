"""A stand-in for libcublas, for tests/cuda_emulator.py: the calls gpumlp.backends._cublas makes,
computed with NumPy on the emulator's device memory, with cuBLAS's and CuPy's capture rules.

It takes the very integers :class:`gpumlp.backends._cublas.CublasHandle` passes (handle, stream
pointer, device pointers, addresses of host alpha/beta), so the row-major -> column-major mapping
is exercised by every emulated training step. Rules (research AUDIT.md R1, R2, R5):

- ``cublasSetStream_v2`` resets the workspace to cuBLAS's default pool (cuBLAS API §2.4.7); a
  ``cublasGemmEx`` under capture on a handle without a user workspace would allocate from that
  pool while capturing: refused;
- the workspace pointer must be 256-byte aligned (§2.4.8): CUBLAS_STATUS_INVALID_VALUE (7);
- creating a handle or changing its stream while a stream captures: refused (gpumlp binds its
  handles before capture);
- a GEMM under capture on a handle bound to another stream than the capturing one would run
  outside the graph: refused;
- alpha and beta are read at call time (host pointer mode: their values are baked into a graph);
- every operand extent (cols - 1)·ld + rows must lie inside one device allocation of the
  emulator: an illegal address otherwise.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

OP_N, OP_T = 0, 1
DTYPES = {0: np.dtype(np.float32), 1: np.dtype(np.float64)}  # cudaDataType CUDA_R_32F, CUDA_R_64F
COMPUTE = {68: np.float32, 69: np.float32, 77: np.float32, 70: np.float64}  # cublasComputeType_t -> scalar
INVALID_VALUE = 7


class EmulatedCublas:
    """The cuBLAS entry points CublasHandle calls, on an :class:`~cuda_emulator.EmulatedCupy`."""

    def __init__(self, emu: Any) -> None:
        self.emu = emu
        self.handles: dict[int, dict[str, Any]] = {}
        self.compute_types: list[int] = []  # the compute type of every GEMM, in order
        self._next = 0x1000

    # ----- setup -----------------------------------------------------------------------------
    def _refuse_under_capture(self, what: str) -> None:
        if self.emu.recording is not None:
            from cuda_emulator import EmulatedCaptureError

            raise EmulatedCaptureError(
                f"{what} during stream capture: gpumlp sets its cuBLAS handles up before capture"
            )

    def cublasCreate_v2(self, handle_address: int) -> int:  # noqa: N802 (cuBLAS's names)
        self._refuse_under_capture("cublasCreate_v2")
        self._next += 16
        self.handles[self._next] = {"stream": 0, "workspace": None}
        ctypes.c_void_p.from_address(handle_address).value = self._next
        return 0

    def cublasDestroy_v2(self, handle: int) -> int:  # noqa: N802
        self.handles.pop(handle, None)
        return 0

    def cublasSetPointerMode_v2(self, handle: int, mode: int) -> int:  # noqa: N802
        return 0 if mode == 0 else INVALID_VALUE  # only host pointer mode is modelled

    def cublasSetMathMode(self, handle: int, mode: int) -> int:  # noqa: N802
        return 0

    def cublasSetStream_v2(self, handle: int, stream: int | None) -> int:  # noqa: N802
        self._refuse_under_capture("cublasSetStream_v2 (a stream change)")
        h = self.handles[handle]
        h["stream"], h["workspace"] = int(stream or 0), None  # resets the workspace to the default pool
        return 0

    def cublasSetWorkspace_v2(self, handle: int, ptr: int, nbytes: int) -> int:  # noqa: N802
        if ptr % 256 or nbytes <= 0 or self.emu.device_extent(ptr) < nbytes:
            return INVALID_VALUE
        self.handles[handle]["workspace"] = (ptr, nbytes)
        return 0

    # ----- the GEMM ------------------------------------------------------------------------------
    def _matrix(self, ptr: int, dtype: np.dtype, rows: int, cols: int, ld: int, name: str) -> np.ndarray:
        """The column-major rows x cols matrix at ``ptr`` with leading dimension ``ld``, checked."""
        from cuda_emulator import EmulatedIllegalAddress

        if ld < max(1, rows):
            raise ValueError(f"cublasGemmEx: ld{name} = {ld} < max(1, {rows}): CUBLAS_STATUS_INVALID_VALUE")
        extent = (cols - 1) * ld + rows
        if self.emu.device_extent(ptr) < extent * dtype.itemsize:
            raise EmulatedIllegalAddress(
                f"cublasGemmEx: {name} needs {extent} elements at {ptr:#x}, beyond the device allocation there"
            )
        buf = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(np.ctypeslib.as_ctypes_type(dtype))), (extent,))
        return np.lib.stride_tricks.as_strided(buf, (rows, cols), (dtype.itemsize, ld * dtype.itemsize))

    def cublasGemmEx(  # noqa: N802
        self, handle: int, transa: int, transb: int, m: int, n: int, k: int, alpha_p: int,
        A: int, a_type: int, lda: int, B: int, b_type: int, ldb: int, beta_p: int,
        C: int, c_type: int, ldc: int, compute: int, algo: int,
    ) -> int:  # fmt: skip
        from cuda_emulator import EmulatedCaptureError

        h, emu = self.handles[handle], self.emu
        stream = emu.capturing_stream()
        if stream is not None:
            if h["workspace"] is None:
                raise EmulatedCaptureError(
                    "cuBLAS would allocate its workspace during stream capture: cublasSetStream_v2 resets the "
                    "workspace; call cublasSetWorkspace_v2 after it, before capture"
                )
            if h["stream"] != stream.ptr:
                raise EmulatedCaptureError(
                    f"cublasGemmEx on a handle bound to stream {h['stream']:#x} while stream {stream.ptr:#x} captures: "
                    "the GEMM would not be part of the graph"
                )
        if not a_type == b_type == c_type or a_type not in DTYPES:
            return INVALID_VALUE
        dtype, scalar = DTYPES[a_type], COMPUTE[compute]
        ctype = ctypes.c_float if scalar is np.float32 else ctypes.c_double
        alpha = dtype.type(ctype.from_address(alpha_p).value)  # read now: host pointer mode
        beta = dtype.type(ctype.from_address(beta_p).value)
        a = self._matrix(A, dtype, *((m, k) if transa == OP_N else (k, m)), lda, "A")
        b = self._matrix(B, dtype, *((k, n) if transb == OP_N else (n, k)), ldb, "B")
        c = self._matrix(C, dtype, m, n, ldc, "C")
        op_a, op_b = (a if transa == OP_N else a.T), (b if transb == OP_N else b.T)

        def run() -> None:
            prod = op_a @ op_b
            if alpha != 1:
                prod *= alpha
            if beta != 0:  # beta = 0: C is not read (NaN included), as BLAS does
                prod += beta * c
            c[...] = prod

        emu.enqueue(run)
        emu.gemms += 1
        self.compute_types.append(compute)
        return 0
