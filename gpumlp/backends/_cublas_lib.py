"""Finding and loading libcublas for :mod:`._cublas`, lazily (nothing happens at import).

Order: an override (``GPUMLP_CUBLAS_LIBRARY``), then the libcublas already mapped into this
process (CuPy's, found in /proc/self/maps), then ``cuda.pathfinder.load_nvidia_dynamic_lib("cublas")``
(how CuPy 14 itself loads it, ``cupy_backends/cuda/libs/__init__.py::__getattr__``), then
``ctypes.util.find_library`` and the sonames.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any

SONAMES = ("libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so")
STATUS_NAMES = {
    0: "CUBLAS_STATUS_SUCCESS",
    1: "CUBLAS_STATUS_NOT_INITIALIZED",
    3: "CUBLAS_STATUS_ALLOC_FAILED",
    7: "CUBLAS_STATUS_INVALID_VALUE",
    8: "CUBLAS_STATUS_ARCH_MISMATCH",
    11: "CUBLAS_STATUS_MAPPING_ERROR",
    13: "CUBLAS_STATUS_EXECUTION_FAILED",
    14: "CUBLAS_STATUS_INTERNAL_ERROR",
    15: "CUBLAS_STATUS_NOT_SUPPORTED",
    16: "CUBLAS_STATUS_LICENSE_ERROR",
}


class CublasUnavailable(RuntimeError):
    """No libcublas could be loaded in this process."""


# ----- finding and loading libcublas (lazily) ------------------------------------------------
_loaded: dict[str, Any] = {}


def _mapped_cublas_paths() -> list[str]:
    """libcublas files already mapped into this process (CuPy's, once cupy_backends' cublas
    module is imported), from /proc/self/maps (Linux). libcublasLt is left out."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split(None, 5)[5].strip() for line in f if line.count(" ") >= 5 and "libcublas" in line}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith("libcublas.so") and os.path.exists(p))


def _pathfinder_path() -> tuple[str | None, int | None]:
    """(abs_path, handle) from cuda-pathfinder (a CuPy 14 dependency), or (None, None)."""
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib  # type: ignore[import-not-found]
    except Exception:
        return None, None
    try:
        dl = load_nvidia_dynamic_lib("cublas")  # cached per process; never dlclose its handle
    except Exception:
        return None, None
    return getattr(dl, "abs_path", None), getattr(dl, "_handle_uint", None)


def library_candidates() -> list[tuple[str, str]]:
    """Where libcublas would be taken from, in order, as (how, path or soname); loads nothing
    except through cuda-pathfinder, which CuPy itself has normally called already."""
    found: list[tuple[str, str]] = []
    override = os.environ.get("GPUMLP_CUBLAS_LIBRARY")
    if override:
        found.append(("GPUMLP_CUBLAS_LIBRARY", override))
    found += [("already loaded (/proc/self/maps)", p) for p in _mapped_cublas_paths()]
    path, _ = _pathfinder_path()
    if path:
        found.append(("cuda.pathfinder", path))
    util = ctypes.util.find_library("cublas")
    if util:
        found.append(("ctypes.util.find_library", util))
    found += [("soname", s) for s in SONAMES]
    return found


def load_library(path: str | None = None) -> ctypes.CDLL:
    """The libcublas to call (cached), with argtypes/restype declared. Raises
    :class:`CublasUnavailable` listing what was tried."""
    key = path or ""
    if key in _loaded:
        return _loaded[key]
    tried = []
    for how, candidate in [("argument", path)] if path else library_candidates():
        try:
            lib = ctypes.CDLL(candidate)
            _declare(lib)
        except (OSError, AttributeError) as exc:
            tried.append(f"{how}: {candidate} ({exc})")
            continue
        lib._gpumlp_source = f"{how}: {candidate}"  # type: ignore[attr-defined]
        _loaded[key] = lib
        return lib
    raise CublasUnavailable("no usable libcublas in this process; tried " + "; ".join(tried))


_VP, _INT, _SIZE = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
_SIGNATURES = {
    # name: (argtypes, required)
    "cublasCreate_v2": ([_VP], True),  # (cublasHandle_t*)
    "cublasDestroy_v2": ([_VP], True),
    "cublasSetStream_v2": ([_VP, _VP], True),  # (handle, cudaStream_t)
    "cublasSetWorkspace_v2": ([_VP, _VP, _SIZE], True),  # (handle, void*, size_t)
    "cublasSetMathMode": ([_VP, _INT], True),
    "cublasSetPointerMode_v2": ([_VP, _INT], True),
    "cublasGetVersion_v2": ([_VP, _VP], False),  # (handle, int*)
    # (handle, transa, transb, m, n, k, alpha*, A, Atype, lda, B, Btype, ldb, beta*, C, Ctype, ldc,
    #  computeType, algo)
    "cublasGemmEx": (
        [_VP, _INT, _INT, _INT, _INT, _INT, _VP, _VP, _INT, _INT, _VP, _INT, _INT, _VP, _VP, _INT, _INT, _INT, _INT],
        True,
    ),
    # (handle, transa, transb, m, n, k, alpha*, A, lda, B, ldb, beta*, C, ldc)
    "cublasSgemm_v2": ([_VP, _INT, _INT, _INT, _INT, _INT, _VP, _VP, _INT, _VP, _INT, _VP, _VP, _INT], False),
    "cublasDgemm_v2": ([_VP, _INT, _INT, _INT, _INT, _INT, _VP, _VP, _INT, _VP, _INT, _VP, _VP, _INT], False),
}


def _declare(lib: ctypes.CDLL) -> None:
    for name, (argtypes, required) in _SIGNATURES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            if required:
                raise
            continue
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int  # cublasStatus_t
    try:
        lib.cublasGetStatusName.argtypes = [ctypes.c_int]
        lib.cublasGetStatusName.restype = ctypes.c_char_p
    except AttributeError:
        pass


def _status_name(lib: Any, status: int) -> str | None:
    if status in STATUS_NAMES:
        return STATUS_NAMES[status]
    fn = getattr(lib, "cublasGetStatusName", None)
    try:
        raw = fn(status) if fn is not None else None
    except Exception:
        return None
    return raw.decode() if isinstance(raw, bytes) else raw
