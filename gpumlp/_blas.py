"""Compat shim: removed after the layout merge. The BLAS binding now lives in :mod:`gpumlp.backends._blas`."""

from .backends._blas import accepts, gemm_into, routine

__all__ = ["accepts", "gemm_into", "routine"]
