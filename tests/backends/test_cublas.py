"""CPU tests of _cublas: the row-major -> column-major GEMM mapping, checked by simulating
cuBLAS's column-major GEMM with NumPy on the very buffers (interpreted with the given leading
dimensions), and the whole ctypes call path of CublasHandle against a fake libcublas that
works on host pointers. No CUDA needed."""

from __future__ import annotations

import ctypes
import itertools
import os

import numpy as np
import pytest

from gpumlp.backends import _cublas as cb
from gpumlp.backends import _cublas_lib as cl


# ----- a reference column-major GEMM (the BLAS definition), on flat buffers ------------------
def _cm_view(buf: np.ndarray, rows: int, cols: int, ld: int, name: str) -> np.ndarray:
    """The column-major rows x cols matrix at buf with leading dimension ld:
    element (i, j) is buf[i + j*ld]. Checks what cuBLAS checks (ld >= max(1, rows)) and
    that every element read lies inside the buffer."""
    assert ld >= max(1, rows), f"{name}: ld={ld} < max(1, rows={rows}) -> CUBLAS_STATUS_INVALID_VALUE"
    if rows and cols:
        extent = (cols - 1) * ld + rows
        assert extent <= buf.size, f"{name}: reads {extent} elements of a {buf.size}-element buffer"
    item = buf.itemsize
    return np.lib.stride_tricks.as_strided(buf, shape=(rows, cols), strides=(item, ld * item), writeable=True)


def colmajor_gemm(transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
    """C(m,n) = alpha op(A) op(B) + beta C, all column-major, on flat buffers."""
    a_rows, a_cols = (m, k) if transa == cb.CUBLAS_OP_N else (k, m)
    b_rows, b_cols = (k, n) if transb == cb.CUBLAS_OP_N else (n, k)
    opA = _cm_view(A, a_rows, a_cols, lda, "A")
    opB = _cm_view(B, b_rows, b_cols, ldb, "B")
    if transa == cb.CUBLAS_OP_T:
        opA = opA.T
    if transb == cb.CUBLAS_OP_T:
        opB = opB.T
    Cv = _cm_view(C, m, n, ldc, "C")
    prod = alpha * (opA.astype(np.float64) @ opB.astype(np.float64))
    Cv[...] = prod if beta == 0 else prod + beta * Cv.astype(np.float64)  # beta = 0: C is not read


def mapped_gemm(a, b, out, alpha=1.0, beta=0.0, trans_a=False, trans_b=False, a_ld=None, b_ld=None, out_ld=None):
    """Row-major out = alpha op(a) op(b) + beta out via gemm_args and the column-major
    reference; a, b, out are flat row-major buffers of the given 2-D shapes."""
    a_buf, a_shape = a
    b_buf, b_shape = b
    o_buf, o_shape = out
    g = cb.gemm_args(a_shape, b_shape, trans_a, trans_b, a_ld=a_ld, b_ld=b_ld, out_ld=out_ld)
    assert g.out_shape == tuple(o_shape)
    bufs = {"a": a_buf, "b": b_buf}
    colmajor_gemm(
        g.transa, g.transb, g.m, g.n, g.k, alpha, bufs[g.first], g.lda, bufs[g.second], g.ldb, beta, o_buf, g.ldc
    )
    return g


SHAPES = [(3, 5, 4), (1, 7, 2), (6, 1, 3), (4, 4, 4), (2, 3, 1), (7, 2, 9)]  # (M, K, N) of op(A)(M,K) op(B)(K,N)
TOL = {np.float32: 1e-5, np.float64: 1e-13}


def _operands(rng, M, K, N, trans_a, trans_b, dtype):
    a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(dtype)
    out0 = rng.standard_normal((M, N)).astype(dtype)
    return a, b, out0


def _ref(a, b, out0, alpha, beta, trans_a, trans_b):
    A = (a.T if trans_a else a).astype(np.float64)
    B = (b.T if trans_b else b).astype(np.float64)
    return alpha * (A @ B) + (beta * out0.astype(np.float64) if beta else 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_mapping_equals_numpy_row_major(M, K, N, trans_a, trans_b, beta, dtype):
    rng = np.random.default_rng(M * 100 + K * 10 + N)
    a, b, out0 = _operands(rng, M, K, N, trans_a, trans_b, dtype)
    out = out0.copy()
    g = mapped_gemm(
        (a.ravel(), a.shape),
        (b.ravel(), b.shape),
        (out.reshape(-1), out.shape),
        alpha=-0.75,
        beta=beta,
        trans_a=trans_a,
        trans_b=trans_b,
    )
    assert (g.m, g.n, g.k) == (N, M, K)  # m and n swap: cuBLAS computes outᵀ
    expected = _ref(a, b, out0, -0.75, beta, trans_a, trans_b)
    np.testing.assert_allclose(out, expected, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(expected).max())


def test_the_swap_is_what_the_docstring_says():
    g = cb.gemm_args((128, 784), (784, 256))  # X W: batch 128, 784 -> 256
    assert g == cb.GemmArgs(cb.CUBLAS_OP_N, cb.CUBLAS_OP_N, 256, 128, 784, 256, 784, 256, "b", "a", (128, 256))
    g = cb.gemm_args((128, 784), (128, 256), trans_a=True)  # dW = Xᵀ D
    assert (g.transa, g.transb, g.m, g.n, g.k, g.lda, g.ldb, g.ldc) == (
        cb.CUBLAS_OP_N,
        cb.CUBLAS_OP_T,
        256,
        784,
        128,
        256,
        784,
        256,
    )
    g = cb.gemm_args((128, 256), (784, 256), trans_b=True)  # D_{l-1} = D Wᵀ
    assert (g.transa, g.transb, g.m, g.n, g.k, g.lda, g.ldb, g.ldc) == (
        cb.CUBLAS_OP_T,
        cb.CUBLAS_OP_N,
        784,
        128,
        256,
        256,
        256,
        784,
    )


def test_beta_zero_does_not_read_out():
    rng = np.random.default_rng(1)
    a, b, _ = _operands(rng, 3, 4, 5, False, False, np.float64)
    out = np.full((3, 5), np.nan)
    mapped_gemm((a.ravel(), a.shape), (b.ravel(), b.shape), (out.reshape(-1), out.shape), beta=0.0)
    np.testing.assert_allclose(out, a @ b, rtol=1e-13)


@pytest.mark.parametrize("trans_a", [False, True])
def test_column_slices_with_a_row_stride(trans_a):
    """op(A) = Z[:, j0:j1]ᵀ-style views (every row, some columns) go through with ld = full width,
    as the blocked weight update (Z[l-1][:, rows]) needs; out may be a column block too."""
    rng = np.random.default_rng(2)
    Z = rng.standard_normal((6, 10))  # batch 6, 10 features
    D = rng.standard_normal((6, 4))
    W = rng.standard_normal((10, 4))
    j0, j1 = 3, 8
    if trans_a:  # dW[j0:j1] = Z[:, j0:j1]ᵀ D, written into rows j0:j1 of a full (10, 4) buffer
        a_view = Z[:, j0:j1]
        out = W.copy()
        mapped_gemm(
            (Z.ravel()[j0:], a_view.shape),
            (D.ravel(), D.shape),
            (out.ravel()[j0 * 4 :], (5, 4)),
            alpha=1.0,
            beta=1.0,
            trans_a=True,
            a_ld=10,
        )
        expected = W.copy()
        expected[j0:j1] += a_view.T @ D
    else:  # P[:, 1:3] = Z[:, j0:j1] @ Q with a strided out
        Q = rng.standard_normal((5, 2))
        out = np.zeros((6, 7))
        mapped_gemm((Z.ravel()[j0:], (6, 5)), (Q.ravel(), Q.shape), (out.ravel()[1:], (6, 2)), a_ld=10, out_ld=7)
        expected = np.zeros((6, 7))
        expected[:, 1:3] = Z[:, j0:j1] @ Q
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-13)


def test_k_zero_scales_out_by_beta_and_empty_outputs_are_legal():
    out = np.arange(6.0).reshape(2, 3)
    mapped_gemm((np.zeros(0), (2, 0)), (np.zeros(0), (0, 3)), (out.reshape(-1), out.shape), beta=1.0)
    np.testing.assert_array_equal(out, np.arange(6.0).reshape(2, 3))
    g = cb.gemm_args((0, 4), (4, 3))
    assert g.out_shape == (0, 3) and g.ldb >= 1 and g.lda >= 1 and g.ldc >= 1
    g = cb.gemm_args((5, 2), (3, 2), trans_b=True)
    assert g.lda == 2  # B stored (3, 2): its rows are 2 long


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(a_shape=(3, 4), b_shape=(5, 2)), "inner dimensions"),
        (dict(a_shape=(3, 4), b_shape=(3, 2), trans_a=False), "inner dimensions"),
        (dict(a_shape=(3, 4), b_shape=(4, 2), a_ld=3), "row stride of a"),
        (dict(a_shape=(3, 4), b_shape=(4, 2), out_ld=1), "row stride of out"),
        (dict(a_shape=(3,), b_shape=(3, 2)), "2-D"),
        (dict(a_shape=(2**31, 1), b_shape=(1, 1)), "32-bit"),
    ],
)
def test_bad_arguments_are_refused_before_cuda(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cb.gemm_args(**kwargs)


def test_types_and_compute_types():
    assert cb.types_for(np.float32) == (cb.CUDA_R_32F, cb.CUBLAS_COMPUTE_32F, ctypes.c_float)
    assert cb.types_for(np.dtype("float32"), allow_tf32=True)[1] == cb.CUBLAS_COMPUTE_32F_FAST_TF32
    assert cb.types_for("float64", allow_tf32=True) == (cb.CUDA_R_64F, cb.CUBLAS_COMPUTE_64F, ctypes.c_double)
    with pytest.raises(TypeError):
        cb.types_for(np.int32)


def test_workspace_sizes():
    assert cb.recommended_workspace_bytes(9) == 32 << 20  # Hopper (H100/H200)
    assert cb.recommended_workspace_bytes(10) == 32 << 20
    assert cb.recommended_workspace_bytes(8) == 4 << 20
    assert cb.recommended_workspace_bytes(None) == 32 << 20


def test_error_names_the_status():
    e = cb.CublasError("cublasGemmEx", 7)
    assert "cublasGemmEx failed: CUBLAS_STATUS_INVALID_VALUE (7)" in str(e) and isinstance(e, RuntimeError)
    assert "CUBLAS_STATUS_UNKNOWN_99" in str(cb.CublasError("cublasCreate_v2", 99))


def test_importing_loads_nothing_and_a_missing_library_is_a_clear_error(monkeypatch):
    assert cl._loaded == {} or all(isinstance(v, ctypes.CDLL) for v in cl._loaded.values())
    monkeypatch.setattr(cl, "library_candidates", lambda: [("soname", "libcublas-does-not-exist.so.99")])
    monkeypatch.setattr(cl, "_loaded", {})
    with pytest.raises(cl.CublasUnavailable, match="libcublas-does-not-exist"):
        cl.load_library()
    with pytest.raises(cl.CublasUnavailable):
        cb.CublasHandle(1, 256, 1 << 20)


# ----- the ctypes call path, against a fake libcublas on host memory -------------------------
class FakeCublas:
    """libcublas's entry points as Python functions over host pointers (NumPy buffers):
    models what matters here: SetStream resets the workspace to the default pool, a GEMM on
    the default pool while "capturing" would allocate, alpha/beta read from host pointers of
    the compute type's scalar type."""

    def __init__(self):
        self.handles, self.calls, self.capturing = {}, [], False

    def cublasCreate_v2(self, handle_addr):
        h = 0x1000 + len(self.handles)
        self.handles[h] = {"stream": None, "workspace": None, "pointer_mode": None, "math": None}
        ctypes.c_void_p.from_address(handle_addr).value = h
        return 0

    def cublasDestroy_v2(self, h):
        return 0 if self.handles.pop(h, None) is not None else 1

    def cublasSetStream_v2(self, h, stream):
        self.calls.append("SetStream")
        self.handles[h].update(stream=stream, workspace=None)  # cuBLAS: back to the default pool
        return 0

    def cublasSetWorkspace_v2(self, h, ptr, nbytes):
        self.calls.append("SetWorkspace")
        if ptr % 256:
            return 7
        self.handles[h]["workspace"] = (ptr, nbytes)
        return 0

    def cublasSetMathMode(self, h, mode):
        self.handles[h]["math"] = mode
        return 0

    def cublasSetPointerMode_v2(self, h, mode):
        self.handles[h]["pointer_mode"] = mode
        return 0

    def cublasGemmEx(
        self, h, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc, compute, algo
    ):
        self.calls.append("GemmEx")
        state = self.handles[h]
        if state["workspace"] is None and self.capturing:
            return 3  # would allocate its workspace from the default pool under capture
        assert Atype == Btype == Ctype and algo == cb.CUBLAS_GEMM_DEFAULT and state["pointer_mode"] == 0
        ctype, np_t = {cb.CUDA_R_32F: (ctypes.c_float, np.float32), cb.CUDA_R_64F: (ctypes.c_double, np.float64)}[Ctype]
        scalar = ctypes.c_double if compute == cb.CUBLAS_COMPUTE_64F else ctypes.c_float
        al, be = scalar.from_address(alpha).value, scalar.from_address(beta).value

        def buf(ptr, rows, cols, ld):
            extent = max(0, (cols - 1) * ld + rows) if rows and cols else 0
            return np.ctypeslib.as_array((ctype * max(extent, 1)).from_address(ptr)).view(np_t)

        a_rows, a_cols = (m, k) if transa == cb.CUBLAS_OP_N else (k, m)
        b_rows, b_cols = (k, n) if transb == cb.CUBLAS_OP_N else (n, k)
        colmajor_gemm(
            transa,
            transb,
            m,
            n,
            k,
            al,
            buf(A, a_rows, a_cols, lda),
            lda,
            buf(B, b_rows, b_cols, ldb),
            ldb,
            be,
            buf(C, m, n, ldc),
            ldc,
        )
        return 0


def _aligned_workspace(nbytes=1 << 16):
    raw = np.zeros(nbytes + 256, dtype=np.uint8)
    off = (-raw.ctypes.data) % 256
    return raw, raw.ctypes.data + off


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)))
def test_handle_calls_gemm_ex_through_ctypes_pointers(dtype, trans_a, trans_b):
    fake = FakeCublas()
    keep, ws = _aligned_workspace()
    rng = np.random.default_rng(7)
    a, b, out0 = _operands(rng, 5, 3, 4, trans_a, trans_b, dtype)
    with cb.CublasHandle(0xABC, ws, 1 << 16, lib=fake) as h:
        assert fake.calls == ["SetStream", "SetWorkspace"]  # the stream, THEN the workspace
        fake.capturing = True  # a GEMM under capture: legal, and allocates nothing
        out = out0.copy()
        h.gemm_arrays(a, b, out, alpha=2.0, beta=1.0, trans_a=trans_a, trans_b=trans_b)
        fake.capturing = False
        assert fake.calls[-1] == "GemmEx" and "SetStream" not in fake.calls[2:]  # gemm never sets the stream
    assert fake.handles == {}  # destroyed
    expected = _ref(a, b, out0, 2.0, 1.0, trans_a, trans_b)
    np.testing.assert_allclose(out, expected, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(expected).max())


def test_rebinding_sets_the_workspace_again_after_the_stream():
    fake = FakeCublas()
    keep, ws = _aligned_workspace()
    h = cb.CublasHandle(1, ws, 1 << 16, lib=fake)
    h.bind(2)
    assert fake.calls == ["SetStream", "SetWorkspace", "SetStream", "SetWorkspace"]
    assert fake.handles[h._h]["workspace"] == (ws, 1 << 16) and h.stream_ptr == 2
    with pytest.raises(ValueError, match="256-byte aligned"):
        h.bind(2, ws + 8, 1024)
    with pytest.raises(ValueError, match="workspace"):
        h.bind(2, 0, 0)
    h.close()
    h.close()  # idempotent


def test_column_slice_arrays_and_errors_through_the_handle():
    fake = FakeCublas()
    keep, ws = _aligned_workspace()
    h = cb.CublasHandle(1, ws, 1 << 16, lib=fake)
    rng = np.random.default_rng(3)
    Z, D, W = rng.standard_normal((6, 10)), rng.standard_normal((6, 4)), rng.standard_normal((10, 4))
    expected = W.copy()
    expected[2:7] = 0.5 * expected[2:7] - 0.1 * (Z[:, 2:7].T @ D)
    h.gemm_arrays(Z[:, 2:7], D, W[2:7], alpha=-0.1, beta=0.5, trans_a=True)  # W ← βW + α Zᵀ D, a row block
    np.testing.assert_allclose(W, expected, rtol=1e-13)
    with pytest.raises(ValueError, match="contiguous"):
        h.gemm_arrays(Z[:, ::2], D[:5].T.copy(), np.zeros((6, 6)))
    with pytest.raises(TypeError, match="one dtype"):
        h.gemm_arrays(Z.astype(np.float32), D, np.zeros((10, 4)), trans_a=True)
    fake.cublasGemmEx = lambda *args: 15
    with pytest.raises(cb.CublasError, match=r"cublasGemmEx failed: CUBLAS_STATUS_NOT_SUPPORTED \(15\)"):
        h.gemm_arrays(Z, W, np.zeros((6, 4)))


# ----- the real ctypes declarations, against a C stub with libcublas's signatures ------------
_STUB = r"""
#include <stddef.h>
#include <stdint.h>
typedef struct { void* stream; void* ws; size_t ws_bytes; int pmode, math; } H;
static H handles[4]; static int used = 0;
int cublasCreate_v2(H** h) { *h = &handles[used++]; return 0; }
int cublasDestroy_v2(H* h) { return h ? 0 : 1; }
int cublasSetStream_v2(H* h, void* s) { h->stream = s; h->ws = NULL; h->ws_bytes = 0; return 0; }
int cublasSetWorkspace_v2(H* h, void* w, size_t n) {
    if ((uintptr_t)w % 256) return 7;
    h->ws = w; h->ws_bytes = n; return 0;
}
int cublasSetMathMode(H* h, int m) { h->math = m; return 0; }
int cublasSetPointerMode_v2(H* h, int m) { h->pmode = m; return 0; }
int cublasGetVersion_v2(H* h, int* v) { *v = 130000; return 0; }
const char* cublasGetStatusName(int s) { return s == 42 ? "CUBLAS_STATUS_STUB_42" : "?"; }
/* column-major reference GEMM, float/double data, computed in double */
int cublasGemmEx(H* h, int ta, int tb, int m, int n, int k, const void* alpha, const void* A, int At, int lda,
                 const void* B, int Bt, int ldb, const void* beta, void* C, int Ct, int ldc, int compute, int algo) {
    if (!h->ws || h->ws_bytes == 0) return 3;            /* no user workspace: would allocate */
    if (algo != -1 || At != Bt || Bt != Ct) return 7;
    if (ldc < (m > 1 ? m : 1)) return 7;
    int dbl = (Ct == 1);
    double al = compute == 70 ? *(const double*)alpha : *(const float*)alpha;
    double be = compute == 70 ? *(const double*)beta : *(const float*)beta;
    for (int j = 0; j < n; ++j) for (int i = 0; i < m; ++i) {
        double s = 0;
        for (int p = 0; p < k; ++p) {
            long ai = ta ? (long)p + (long)i * lda : (long)i + (long)p * lda;
            long bi = tb ? (long)j + (long)p * ldb : (long)p + (long)j * ldb;
            double av = dbl ? ((const double*)A)[ai] : ((const float*)A)[ai];
            double bv = dbl ? ((const double*)B)[bi] : ((const float*)B)[bi];
            s += av * bv;
        }
        long ci = (long)i + (long)j * ldc;
        double old = be == 0 ? 0 : (dbl ? ((double*)C)[ci] : ((float*)C)[ci]);
        double r = al * s + be * old;
        if (dbl) ((double*)C)[ci] = r; else ((float*)C)[ci] = (float)r;
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def stub_library(tmp_path_factory):
    import shutil
    import subprocess

    import gpumlp as gm

    if gm.has_gpu():  # a stub named libcublas mapped next to the real one would be found as "already loaded"
        pytest.skip("this process uses the real libcublas")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the libcublas stub")
    d = tmp_path_factory.mktemp("cublas_stub")
    (d / "stub.c").write_text(_STUB)
    so = d / "libcublas.so.13"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", str(d / "stub.c"), "-o", str(so)], check=True)
    return str(so)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_real_ctypes_declarations_against_a_c_stub(stub_library, dtype):
    lib = cl.load_library(stub_library)
    assert lib is cl.load_library(stub_library)  # cached
    assert lib.cublasGemmEx.restype is ctypes.c_int and len(lib.cublasGemmEx.argtypes) == 19
    keep, ws = _aligned_workspace()
    rng = np.random.default_rng(11)
    with cb.CublasHandle(0x5000, ws, 1 << 16, lib=lib) as h:
        assert h.version() == 130000
        for trans_a, trans_b in itertools.product([False, True], repeat=2):
            a, b, out0 = _operands(rng, 4, 6, 3, trans_a, trans_b, dtype)
            out = out0.copy()
            h.gemm_arrays(a, b, out, alpha=-1.5, beta=0.25, trans_a=trans_a, trans_b=trans_b)
            expected = _ref(a, b, out0, -1.5, 0.25, trans_a, trans_b)
            np.testing.assert_allclose(out, expected, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(expected).max())
    assert cl._status_name(lib, 42) == "CUBLAS_STATUS_STUB_42"


def test_library_candidates_prefer_the_override_and_list_sonames(monkeypatch, stub_library):
    monkeypatch.setenv("GPUMLP_CUBLAS_LIBRARY", stub_library)
    found = cl.library_candidates()
    assert found[0] == ("GPUMLP_CUBLAS_LIBRARY", stub_library)
    assert [s for how, s in found if how == "soname"] == list(cl.SONAMES)
    monkeypatch.setattr(cl, "_loaded", {})
    assert cl.load_library()._gpumlp_source == f"GPUMLP_CUBLAS_LIBRARY: {stub_library}"


def test_an_already_mapped_libcublas_is_found_in_proc_self_maps(stub_library):
    cl.load_library(stub_library)  # now mapped into this process, as CuPy's would be
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("no /proc/self/maps")
    assert stub_library in cl._mapped_cublas_paths()
    assert ("already loaded (/proc/self/maps)", stub_library) in cl.library_candidates()
