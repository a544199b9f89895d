"""cuBLAS GEMMs through ctypes, on a handle gpumlp owns: legal while a stream is capturing.

Why this exists: CuPy refuses every cuBLAS call while the current stream captures a CUDA
graph. ``cupy_backends/cuda/libs/cublas.pyx::setStream`` raises
``NotImplementedError('calling cuBLAS API during stream capture is currently unsupported')``
and every CuPy BLAS wrapper (``sgemm``, ``dgemm``, ``gemmEx``, ...) calls it first through
``_setStream(handle)``; ``cupy.matmul`` reaches it through ``tensordot_core_v11`` ->
``cublas.gemmEx``. cuBLAS itself supports stream capture. So the step's GEMMs go straight to
the libcublas that CuPy loaded, on a handle of our own whose stream and workspace are set
once, *before* capture:

1. ``cublasCreate_v2``; pointer mode host (alpha/beta are host scalars; under capture their
   values are baked into the graph, so a changed learning rate needs a new capture);
   math mode default (no TF32 unless asked for per call through the compute type);
2. ``cublasSetStream_v2(stream)`` and THEN ``cublasSetWorkspace_v2(ws, bytes)``: setting the
   stream unconditionally resets the workspace to cuBLAS's default pool, so the order matters;
   with a user workspace cuBLAS allocates nothing when it runs, so nothing is allocated
   under capture;
3. ``cublasGemmEx`` for every GEMM, eager or captured (same handle, stream, workspace,
   shapes -> the same algorithm, so eager steps and graph replays agree bit for bit).

Nothing is loaded at import (this module imports on a machine without CUDA); the library is
found on first use: an override (``GPUMLP_CUBLAS_LIBRARY``), then the libcublas already
mapped into this process (CuPy's, found in /proc/self/maps), then
``cuda.pathfinder.load_nvidia_dynamic_lib("cublas")`` (how CuPy 14 itself loads it, see
``cupy_backends/cuda/libs/__init__.py::__getattr__``), then the sonames.

Operands are ROW-MAJOR (C order, CuPy's default); cuBLAS is column-major. A row-major (r, c)
buffer with row stride ld is, read column-major, its transpose (c, r) with leading dimension
ld, so out = op(A) op(B) is computed as outᵀ = op(B)ᵀ op(A)ᵀ: B's buffer goes first, A's
second, m and n swap. :func:`gemm_args` does that mapping and is pure (tested on the CPU).
"""

from __future__ import annotations

import ctypes
from typing import Any, NamedTuple

from ._cublas_lib import STATUS_NAMES, _status_name, load_library

# ----- cuBLAS / CUDA enum values (cublas_api.h, library_types.h; the same numbers as
# cupy_backends/cuda/libs/cublas.pxd) ---------------------------------------------------------
CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
CUBLAS_POINTER_MODE_HOST = 0
CUBLAS_DEFAULT_MATH = 0
CUBLAS_GEMM_DEFAULT = -1
CUDA_R_32F, CUDA_R_64F = 0, 1
CUBLAS_COMPUTE_32F = 68
CUBLAS_COMPUTE_32F_PEDANTIC = 69
CUBLAS_COMPUTE_32F_FAST_TF32 = 77
CUBLAS_COMPUTE_64F = 70

_STATUS_HINTS = {
    1: "the handle is not initialised (no CUDA context? was the handle destroyed?)",
    3: "cuBLAS could not allocate memory (this must never happen under capture: set the workspace first)",
    7: "an argument is out of range (a leading dimension < max(1, rows), a negative size, a workspace "
    "pointer not 256-byte aligned)",
    8: "the GPU lacks a feature the call needs",
    13: "the GPU program failed to launch or run",
    15: "the combination of types, compute type and operations is not supported",
}

# cuBLAS API reference, cublasSetWorkspace(): recommended workspace 32 MiB on Hopper
# (compute capability 9.x) and 4 MiB on other architectures; the pointer must be aligned to
# at least 256 bytes. We take 32 MiB from 9.0 on (Blackwell included; 0.02 % of an H200)
# and 4 MiB below.
WORKSPACE_ALIGNMENT = 256
WORKSPACE_BYTES_HOPPER = 32 << 20
WORKSPACE_BYTES_OTHER = 4 << 20
_INT32_MAX = 2**31 - 1


def recommended_workspace_bytes(compute_capability_major: int | None) -> int:
    """Workspace for a handle on a device of this compute capability major (None: unknown ->
    the larger size, which is safe everywhere)."""
    if compute_capability_major is None or compute_capability_major >= 9:
        return WORKSPACE_BYTES_HOPPER
    return WORKSPACE_BYTES_OTHER


class CublasError(RuntimeError):
    """A cuBLAS call returned a status other than CUBLAS_STATUS_SUCCESS."""

    def __init__(self, function: str, status: int, name: str | None = None) -> None:
        self.function, self.status = function, status
        self.name = name or STATUS_NAMES.get(status, f"CUBLAS_STATUS_UNKNOWN_{status}")
        hint = _STATUS_HINTS.get(status)
        super().__init__(f"{function} failed: {self.name} ({status})" + (f": {hint}" if hint else ""))


# ----- the pure part: row-major operands -> one column-major cuBLAS call -------------------
class GemmArgs(NamedTuple):
    """Arguments of the column-major call that computes a row-major out = op(A) op(B).

    ``first`` and ``second`` name the operand buffers that go in cuBLAS's A and B slots
    (always "b" then "a"); ``out_shape`` is the row-major shape of out.
    """

    transa: int
    transb: int
    m: int
    n: int
    k: int
    lda: int
    ldb: int
    ldc: int
    first: str
    second: str
    out_shape: tuple[int, int]


def gemm_args(
    a_shape: tuple[int, int],
    b_shape: tuple[int, int],
    trans_a: bool = False,
    trans_b: bool = False,
    *,
    a_ld: int | None = None,
    b_ld: int | None = None,
    out_ld: int | None = None,
) -> GemmArgs:
    """Map row-major out(M, N) = op(A) @ op(B) onto cublas<t>gemm / cublasGemmEx.

    ``a_shape``/``b_shape`` are the shapes of the arrays as stored (row-major); op(X) is Xᵀ
    when ``trans_x``. ``a_ld``/``b_ld``/``out_ld`` are row strides in elements (default: the
    row length, i.e. C-contiguous); a larger one describes a view of every row and some
    columns (``Z[:, j0:j1]``). Returns the column-major call that computes outᵀ = op(B)ᵀ op(A)ᵀ:
    cuBLAS's A slot gets B's buffer, its B slot A's buffer, (m, n) = (N, M).
    """
    if len(a_shape) != 2 or len(b_shape) != 2:
        raise ValueError(f"gemm needs 2-D operands; got shapes {tuple(a_shape)} and {tuple(b_shape)}")
    (ar, ac), (br, bc) = (int(s) for s in a_shape), (int(s) for s in b_shape)
    if min(ar, ac, br, bc) < 0:
        raise ValueError("negative dimension")
    M, K = (ac, ar) if trans_a else (ar, ac)
    Kb, N = (bc, br) if trans_b else (br, bc)
    if K != Kb:
        op_a, op_b = ("Aᵀ" if trans_a else "A"), ("Bᵀ" if trans_b else "B")
        raise ValueError(f"gemm: {op_a} is {M}x{K} but {op_b} is {Kb}x{N} (inner dimensions differ)")
    lda_b = bc if b_ld is None else int(b_ld)  # B's buffer: cuBLAS's A operand
    ldb_a = ac if a_ld is None else int(a_ld)  # A's buffer: cuBLAS's B operand
    ldc = N if out_ld is None else int(out_ld)
    for name, ld, row in (("b", lda_b, bc), ("a", ldb_a, ac), ("out", ldc, N)):
        if ld < row:
            raise ValueError(f"gemm: row stride of {name} ({ld}) is shorter than its rows ({row})")
    # cuBLAS requires ld >= max(1, rows of the column-major view); an empty dimension gives 0.
    lda_b, ldb_a, ldc = max(1, lda_b), max(1, ldb_a), max(1, ldc)
    for name, v in (("M", M), ("N", N), ("K", K), ("lda", lda_b), ("ldb", ldb_a), ("ldc", ldc)):
        if v > _INT32_MAX:
            raise ValueError(f"gemm: {name} = {v} does not fit cuBLAS's 32-bit int API")
    return GemmArgs(
        transa=CUBLAS_OP_T if trans_b else CUBLAS_OP_N,
        transb=CUBLAS_OP_T if trans_a else CUBLAS_OP_N,
        m=N,
        n=M,
        k=K,
        lda=lda_b,
        ldb=ldb_a,
        ldc=ldc,
        first="b",
        second="a",
        out_shape=(M, N),
    )


def types_for(dtype: Any, allow_tf32: bool = False) -> tuple[int, int, type]:
    """(cudaDataType of A, B and C; cublasComputeType; ctypes type of alpha/beta) for a dtype.

    float32 computes in CUBLAS_COMPUTE_32F (what cupy.matmul uses by default) or, with
    ``allow_tf32``, CUBLAS_COMPUTE_32F_FAST_TF32 (what CuPy's COMPUTE_TYPE_TF32 selects);
    float64 in CUBLAS_COMPUTE_64F. alpha/beta have the compute type's scalar type.
    """
    name = getattr(dtype, "name", None) or str(dtype)
    name = name.rsplit(".", 1)[-1].strip("<>'\" ")
    if name in ("float32", "float", "f4"):
        return CUDA_R_32F, (CUBLAS_COMPUTE_32F_FAST_TF32 if allow_tf32 else CUBLAS_COMPUTE_32F), ctypes.c_float
    if name in ("float64", "double", "f8"):
        return CUDA_R_64F, CUBLAS_COMPUTE_64F, ctypes.c_double
    raise TypeError(f"cuBLAS GEMM here takes float32 or float64, not {dtype}")


# ----- the handle ------------------------------------------------------------------------------
def _array_pointer(x: Any) -> int:
    data = getattr(x, "data", None)
    ptr = getattr(data, "ptr", None)  # cupy.ndarray
    if ptr is not None:
        return int(ptr)
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is not None:
        return int(cai["data"][0])
    return int(x.ctypes.data)  # numpy (the CPU emulator and tests)


def _row_stride(x: Any, name: str) -> int:
    """The row stride of a 2-D array in elements, for one whose rows are contiguous."""
    if getattr(x, "ndim", None) != 2:
        raise ValueError(f"{name} must be 2-D")
    rows, cols = x.shape
    s0, s1 = x.strides
    item = x.dtype.itemsize
    if cols > 1 and s1 != item:
        raise ValueError(f"{name}: elements of a row must be contiguous (strides {x.strides})")
    if rows <= 1:
        return max(1, cols)
    if s0 % item or s0 < cols * item:
        raise ValueError(f"{name}: unsupported row stride {s0} bytes for {cols} columns")
    return s0 // item


class CublasHandle:
    """A cuBLAS handle bound to one stream and one preallocated workspace.

    Create it (and :meth:`bind` it) outside stream capture; :meth:`gemm` never sets the
    stream, so it may be called while the stream captures. The workspace memory (e.g. a
    CuPy ``uint8`` array of :func:`recommended_workspace_bytes`) must stay allocated as long as
    the handle and every graph captured with it live. One handle per stream: cuBLAS's
    workspace must not be shared by work on two streams at once.
    """

    def __init__(self, stream_ptr: int, workspace_ptr: int, workspace_bytes: int, *, lib: Any = None) -> None:
        self._lib = lib if lib is not None else load_library()
        self._handle = ctypes.c_void_p()
        self._check("cublasCreate_v2", self._lib.cublasCreate_v2(ctypes.addressof(self._handle)))
        self.stream_ptr: int | None = None
        self.workspace_ptr, self.workspace_bytes = 0, 0
        try:
            self._check("cublasSetPointerMode_v2", self._lib.cublasSetPointerMode_v2(self._h, CUBLAS_POINTER_MODE_HOST))
            self._check("cublasSetMathMode", self._lib.cublasSetMathMode(self._h, CUBLAS_DEFAULT_MATH))
            self.bind(stream_ptr, workspace_ptr, workspace_bytes)
        except Exception:
            self.close()
            raise

    @property
    def _h(self) -> int | None:
        """The cublasHandle_t as an int (what every call takes)."""
        return self._handle.value

    # --- setup (never under capture) --------------------------------------------------------
    def bind(self, stream_ptr: int, workspace_ptr: int | None = None, workspace_bytes: int | None = None) -> None:
        """Set the stream, THEN the workspace (cublasSetStream resets the workspace to the
        default pool, so the workspace is set again every time). Not under capture."""
        ws_ptr = self.workspace_ptr if workspace_ptr is None else int(workspace_ptr)
        ws_bytes = self.workspace_bytes if workspace_bytes is None else int(workspace_bytes)
        if ws_bytes <= 0 or not ws_ptr:
            raise ValueError("a workspace (pointer and size > 0) is required: without one cuBLAS allocates")
        if ws_ptr % WORKSPACE_ALIGNMENT:
            raise ValueError(f"the workspace pointer must be {WORKSPACE_ALIGNMENT}-byte aligned; got {ws_ptr:#x}")
        self._check("cublasSetStream_v2", self._lib.cublasSetStream_v2(self._h, int(stream_ptr) or None))
        self._check("cublasSetWorkspace_v2", self._lib.cublasSetWorkspace_v2(self._h, ws_ptr, ws_bytes))
        self.stream_ptr, self.workspace_ptr, self.workspace_bytes = int(stream_ptr), ws_ptr, ws_bytes

    # --- GEMMs ---------------------------------------------------------------------------------
    def gemm(
        self,
        a_ptr: int,
        a_shape: tuple[int, int],
        b_ptr: int,
        b_shape: tuple[int, int],
        out_ptr: int,
        out_shape: tuple[int, int],
        dtype: Any,
        alpha: float = 1.0,
        beta: float = 0.0,
        trans_a: bool = False,
        trans_b: bool = False,
        allow_tf32: bool = False,
        a_ld: int | None = None,
        b_ld: int | None = None,
        out_ld: int | None = None,
    ) -> None:
        """out(M, N) ← alpha·op(A)·op(B) + beta·out on device pointers of row-major operands
        of one dtype (float32/float64), enqueued on the bound stream. ``beta`` = 0 ignores
        what out holds (NaN included), as BLAS does."""
        args = gemm_args(a_shape, b_shape, trans_a, trans_b, a_ld=a_ld, b_ld=b_ld, out_ld=out_ld)
        if tuple(int(s) for s in out_shape) != args.out_shape:
            raise ValueError(f"gemm: out has shape {tuple(out_shape)}, the product is {args.out_shape}")
        if args.m == 0 or args.n == 0:
            return
        data_type, compute, scalar = types_for(dtype, allow_tf32)
        al, be = scalar(alpha), scalar(beta)  # kept alive across the call; read on the host
        ptrs = {"a": int(a_ptr), "b": int(b_ptr)}
        status = self._lib.cublasGemmEx(
            self._h,
            args.transa,
            args.transb,
            args.m,
            args.n,
            args.k,
            ctypes.addressof(al),
            ptrs[args.first],
            data_type,
            args.lda,
            ptrs[args.second],
            data_type,
            args.ldb,
            ctypes.addressof(be),
            int(out_ptr),
            data_type,
            args.ldc,
            compute,
            CUBLAS_GEMM_DEFAULT,
        )
        self._check("cublasGemmEx", status)

    def gemm_arrays(
        self,
        a: Any,
        b: Any,
        out: Any,
        alpha: float = 1.0,
        beta: float = 0.0,
        trans_a: bool = False,
        trans_b: bool = False,
        allow_tf32: bool = False,
    ) -> Any:
        """:meth:`gemm` on arrays (CuPy, or NumPy for the CPU emulator) whose rows are
        contiguous: C-contiguous, or a column slice of one. Returns ``out``."""
        if not (a.dtype == b.dtype == out.dtype):
            raise TypeError(f"gemm: one dtype expected; got {a.dtype}, {b.dtype}, {out.dtype}")
        self.gemm(
            _array_pointer(a),
            a.shape,
            _array_pointer(b),
            b.shape,
            _array_pointer(out),
            out.shape,
            out.dtype,
            alpha,
            beta,
            trans_a,
            trans_b,
            allow_tf32,
            a_ld=_row_stride(a, "a"),
            b_ld=_row_stride(b, "b"),
            out_ld=_row_stride(out, "out"),
        )
        return out

    # --- lifetime ------------------------------------------------------------------------------
    def version(self) -> int | None:
        fn = getattr(self._lib, "cublasGetVersion_v2", None)
        if fn is None or not self._h:
            return None
        v = ctypes.c_int()
        self._check("cublasGetVersion_v2", fn(self._h, ctypes.addressof(v)))
        return v.value

    def close(self) -> None:
        """Destroy the handle (idempotent). Not under capture."""
        if getattr(self, "_handle", None) and self._handle.value:
            status = self._lib.cublasDestroy_v2(self._h)
            self._handle = ctypes.c_void_p()
            self._check("cublasDestroy_v2", status)

    def __enter__(self) -> CublasHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown, context already gone: nothing useful to do
            pass

    def _check(self, function: str, status: int) -> None:
        if status:
            raise CublasError(function, int(status), _status_name(self._lib, int(status)))
