"""compat shim: removed after the layout merge (gpumlp/cli.py imports these names from here).

The file format is :mod:`gpumlp.modelfile`; saving and loading models is :mod:`gpumlp.network`.
"""

from .modelfile import encode_meta, read_npz
from .network import load, save

__all__ = ["encode_meta", "load", "read_npz", "save"]
