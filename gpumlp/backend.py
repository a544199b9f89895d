"""Compat shim: removed after the layout merge. The backends now live in :mod:`gpumlp.backends`."""

from .backends import (
    BACKEND_NAMES,
    ENV_VAR,
    Backend,
    CupyBackend,
    StrictBackend,
    backend_info,
    backend_of,
    get_backend,
    has_gpu,
    to_numpy,
)

__all__ = [
    "BACKEND_NAMES", "ENV_VAR", "Backend", "CupyBackend", "StrictBackend", "backend_info", "backend_of",
    "get_backend", "has_gpu", "to_numpy",
]
