"""Data-parallel training across MPI ranks: the public names (``gm.distributed.init()``).

The implementation lives in :mod:`gpumlp.training.distributed`; see docs/distributed.md.
"""

from .training.distributed import DistributedError, Group, init, shard

__all__ = ["DistributedError", "Group", "init", "shard"]
