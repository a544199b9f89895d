"""Backends: array namespaces and the Ops that run the math on them; the one place that knows CuPy exists.

A :class:`Backend` bundles an array namespace ``xp``, the :class:`~gpumlp.backends.ops.Ops`
that run the math on it, and the conversions between host (NumPy) and device arrays.
Selection: ``"numpy"``, ``"cupy"``, ``"auto"`` (CuPy when a CUDA device is present,
NumPy otherwise; the environment variable ``GPUMLP_BACKEND`` overrides ``"auto"``),
and ``"array_api_strict"``, a strict Array-API namespace used by the tests to catch
host/device mixing and implicit dtype promotion on a CPU-only machine.

The Ops, from the reference to the fastest: :mod:`.ops` (the Array API standard only),
:mod:`.inplace_ops` (``out=`` buffers and in-place updates, NumPy and CuPy alike),
:mod:`.numpy_ops` (NumPy's BLAS with β: :mod:`._blas`) and :mod:`.cupy_ops` (CUDA kernels,
source in kernels.cu, expanded by :mod:`._cuda_source`). Only this file imports CuPy.
"""

from __future__ import annotations

import functools
import os
import platform
from typing import Any

import numpy as np

from ..install_hint import install_hint
from .cupy_ops import CupyOps
from .numba_ops import NumbaOps, jit_enabled, jit_info
from .numpy_ops import NumpyOps
from .ops import Ops

__all__ = [
    "BACKEND_NAMES",
    "ENV_VAR",
    "Backend",
    "CupyBackend",
    "StrictBackend",
    "Ops",
    "NumpyOps",
    "NumbaOps",
    "CupyOps",
    "get_backend",
    "has_gpu",
    "to_numpy",
    "backend_of",
    "backend_info",
    "is_sparse",
]

BACKEND_NAMES = ("auto", "numpy", "cupy", "array_api_strict")
ENV_VAR = "GPUMLP_BACKEND"
_INSTALL_HINT = (
    f"install CuPy for your CUDA version: `{install_hint('cupy-cuda13x', 'cuda13')}`; for CUDA 12 "
    "`pip install cupy-cuda12x`; or use backend='numpy'"
)


@functools.cache
def _import_cupy() -> tuple[Any, str | None]:
    """Return (cupy module or None, reason it is unusable or None)."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising anything
        return None, f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return None, f"CuPy found no usable CUDA device ({type(exc).__name__}: {exc})"
    if count < 1:
        return None, "CuPy found no CUDA device"
    return cupy, None


def has_gpu() -> bool:
    """Whether the CuPy backend is usable here.

    Returns
    -------
    bool
        True when CuPy imports and sees at least one CUDA device (checked once per process).
    """
    return _import_cupy()[0] is not None


class Backend:
    """An array namespace plus its Ops and host/device conversions (NumPy: host is device)."""

    name = "numpy"

    def __init__(self, xp: Any, ops: Ops) -> None:
        self.xp = xp
        self.ops = ops

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Copy or move ``a`` (host or device) onto this backend, with ``dtype`` if given."""
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        """Return ``a`` as a NumPy array (a no-op on NumPy)."""
        return np.asarray(a)

    def owns(self, a: Any) -> bool:
        """True when ``a`` is an array of this backend (so results go back in kind)."""
        return isinstance(a, np.ndarray)

    def dtype(self, name: str) -> Any:
        """The namespace's dtype object named ``name`` ("float32", "int64", ...)."""
        return getattr(self.xp, name)

    def sparse_asarray(self, a: Any, dtype: Any) -> Any:
        """The sparse matrix ``a`` (scipy.sparse, any format, or cupyx on the GPU) as this
        backend's CSR matrix of ``dtype``: scipy.sparse on the host. Never densified."""
        if _is_cupyx_sparse(a):
            a = a.get()
        return _scipy_sparse().csr_matrix(a, dtype=dtype)

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on the host)."""

    def nccl(self) -> Any:
        """NCCL bindings for device-buffer collectives (distributed training), or None."""
        return None

    def free_memory(self) -> int | None:
        """Bytes free for new arrays on this backend's device; None where arrays live in host memory."""
        return None

    def device_info(self) -> dict[str, Any]:
        """What this backend runs on, for :func:`backend_info`."""
        return {"device": f"CPU: {_cpu_name()}, {os.cpu_count()} logical cores"}

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, ops={type(self.ops).__name__})"


class CupyBackend(Backend):
    """CuPy on the current CUDA device."""

    name = "cupy"

    def to_numpy(self, a: Any) -> np.ndarray:
        return self.xp.asnumpy(a) if isinstance(a, self.xp.ndarray) else np.asarray(a)

    def owns(self, a: Any) -> bool:
        return isinstance(a, self.xp.ndarray)

    def sparse_asarray(self, a: Any, dtype: Any) -> Any:
        """``a`` as a cupyx.scipy.sparse CSR matrix of ``dtype`` on the device (cuSPARSE GEMMs)."""
        import cupyx.scipy.sparse as cusparse

        if not _is_cupyx_sparse(a):
            a = _scipy_sparse().csr_matrix(a, dtype=np.dtype(dtype))
        return cusparse.csr_matrix(a, dtype=dtype)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def free_memory(self) -> int | None:
        """Free device memory plus what CuPy's memory pool holds unused, in bytes."""
        cp = self.xp
        return int(cp.cuda.runtime.memGetInfo()[0]) + int(cp.get_default_memory_pool().free_bytes())

    def nccl(self) -> Any:
        try:
            from cupy.cuda import nccl
        except ImportError:
            return None
        return nccl if nccl.available else None

    def device_info(self) -> dict[str, Any]:
        cp = self.xp
        dev = cp.cuda.Device()
        props = cp.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"]
        free, total = cp.cuda.runtime.memGetInfo()
        rt = cp.cuda.runtime.runtimeGetVersion()
        return {
            "device": name.decode() if isinstance(name, bytes) else str(name),
            "device_id": dev.id,
            "compute_capability": dev.compute_capability,
            "memory_total_gib": round(total / 2**30, 2),
            "memory_free_gib": round(free / 2**30, 2),
            "cuda_runtime": f"{rt // 1000}.{(rt % 1000) // 10}",
            "cupy": cp.__version__,
        }


class StrictBackend(Backend):
    """``array_api_strict``: the Array API standard and nothing else (tests only)."""

    name = "array_api_strict"

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        if isinstance(a, np.ndarray) or np.isscalar(a):
            a = np.asarray(a)
            if dtype is not None:  # cast on the host: strict asarray refuses cross-kind casts
                a = a.astype(str(dtype).rsplit(".", 1)[-1], copy=False)
            return self.xp.asarray(a)
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        return _host_copy(a)

    def owns(self, a: Any) -> bool:
        return _is_strict_array(a)

    def sparse_asarray(self, a: Any, dtype: Any) -> Any:
        raise TypeError("backend='array_api_strict' has no sparse matrices; use backend='numpy' for sparse X")


def is_sparse(a: Any) -> bool:
    """Whether ``a`` is a sparse matrix or array (scipy.sparse, or cupyx.scipy.sparse on the GPU)."""
    return hasattr(a, "nnz") and hasattr(a, "tocsr")


def _is_cupyx_sparse(a: Any) -> bool:
    return is_sparse(a) and type(a).__module__.startswith("cupyx")


def _scipy_sparse() -> Any:
    try:
        import scipy.sparse
    except ImportError as exc:  # pragma: no cover - scipy is a dependency
        raise ImportError("sparse inputs need SciPy: pip install scipy") from exc
    return scipy.sparse


def _is_strict_array(a: Any) -> bool:
    return type(a).__module__.startswith("array_api_strict")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _resolve_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, one of {BACKEND_NAMES}, or a Backend; got {type(name).__name__}")
    key = name.strip().lower()
    if key == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env and env != "auto":
            if env not in BACKEND_NAMES:
                raise ValueError(
                    f"environment variable {ENV_VAR}={env!r} is not a backend; expected one of {BACKEND_NAMES}"
                )
            return env
        return "cupy" if has_gpu() else "numpy"
    if key not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}; got {name!r}")
    return key


@functools.cache
def _make_backend(key: str, fast: bool) -> Backend:
    if key == "numpy":  # NumbaOps where numba is installed and GPUMLP_JIT is not 0 (numba loads lazily)
        return Backend(np, (NumbaOps(np) if jit_enabled() else NumpyOps(np)) if fast else Ops(np))
    if key == "cupy":
        cupy, why = _import_cupy()
        if cupy is None:
            raise RuntimeError(f"backend='cupy' is unavailable: {why}. To fix: {_INSTALL_HINT}.")
        return CupyBackend(cupy, CupyOps(cupy) if fast else Ops(cupy))
    try:
        import array_api_strict
    except ImportError as exc:
        raise RuntimeError(
            f"backend='array_api_strict' needs the array-api-strict package: {install_hint('array-api-strict', 'test')}"
        ) from exc
    return StrictBackend(array_api_strict, Ops(array_api_strict))


def get_backend(name: str | Backend = "auto", *, fast: bool = True) -> Backend:
    """The backend named ``name``; one shared instance per name and ``fast``.

    Parameters
    ----------
    name : {"auto", "numpy", "cupy", "array_api_strict"} or Backend
        "auto" is CuPy where a CUDA device is usable, else NumPy; the environment variable
        ``GPUMLP_BACKEND`` overrides it. A :class:`Backend` is returned as it is.
    fast : bool, default True
        False gives the same namespace with the reference Array-API :class:`Ops` instead of
        the backend's fast paths (used to test one against the other).

    Returns
    -------
    Backend

    Raises
    ------
    ValueError
        ``name`` (or ``GPUMLP_BACKEND``) is not a backend name.
    RuntimeError
        The backend is unavailable (CuPy without a GPU, array-api-strict not installed).
    """
    if isinstance(name, Backend):
        return name
    return _make_backend(_resolve_name(name), bool(fast))


def _host_copy(a: Any) -> np.ndarray:
    """A host array through DLPack where ``a`` offers it, else ``numpy.asarray``."""
    if isinstance(a, np.ndarray):
        return a
    return np.from_dlpack(a) if hasattr(a, "__dlpack__") else np.asarray(a)


def to_numpy(a: Any) -> np.ndarray:
    """Any supported array (NumPy, CuPy, array_api_strict) as a NumPy array.

    Parameters
    ----------
    a : array_like
        An array of any backend, or a list or scalar.

    Returns
    -------
    numpy.ndarray
        ``a`` itself where it already is one, else a host copy.
    """
    owner = backend_of(a)
    return owner.to_numpy(a) if owner is not None else _host_copy(a)


def backend_of(a: Any) -> Backend | None:
    """The backend an array lives on.

    Parameters
    ----------
    a : object
        An array, or anything else.

    Returns
    -------
    Backend or None
        The (fast) backend of ``a``'s array kind, or None for lists, scalars and other host objects.
    """
    if isinstance(a, np.ndarray):
        return get_backend("numpy")
    cupy = _import_cupy()[0]
    if cupy is not None and isinstance(a, cupy.ndarray):
        return get_backend("cupy")
    if _is_strict_array(a):
        return get_backend("array_api_strict")
    return None


def backend_info(name: str | Backend = "auto") -> dict[str, Any]:
    """The backend ``name`` resolves to, its device, and library versions.

    Parameters
    ----------
    name : str or Backend, default "auto"
        As for :func:`get_backend`.

    Returns
    -------
    dict
        "backend", "ops", "numpy" and "device" always; "jit" on NumPy (whether numba's kernels
        run, or why not: gpumlp.backends.numba_ops); on CuPy also the device's memory,
        compute capability and the CUDA runtime and CuPy versions; "gpu" (why no GPU is
        usable) where CuPy is not.
    """
    be = get_backend(name)
    info: dict[str, Any] = {"backend": be.name, "ops": type(be.ops).__name__, "numpy": np.__version__}
    info.update(be.device_info())
    if be.name == "numpy":
        info["jit"] = jit_info()
    cupy, why = _import_cupy()
    if cupy is not None:
        info.setdefault("cupy", cupy.__version__)
    else:
        info["gpu"] = why
    return info
