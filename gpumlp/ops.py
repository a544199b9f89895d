"""Compat shim: removed after the layout merge. The Ops now live in :mod:`gpumlp.backends`
(ops, inplace_ops, numpy_ops, cupy_ops; the CUDA source in kernels.cu via _cuda_source)."""

from .backends._cuda_source import cuda_source
from .backends.cupy_ops import CupyOps
from .backends.inplace_ops import InplaceOps
from .backends.numpy_ops import NumpyOps
from .backends.ops import Ops

__all__ = ["CupyOps", "InplaceOps", "NumpyOps", "Ops", "cuda_source"]
