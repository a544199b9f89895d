"""Training: the fit loop and the one gradient step every loop runs.

- :mod:`.fit` — the loop (epochs, history, early stopping, checkpoints);
- :mod:`.divergence` — what counts as a diverged epoch, and DivergenceError;
- :mod:`.step` — ONE gradient step: forward → loss → backward → allreduce → L2 → clip → update;
- :mod:`.fused` — the CPU fast path, the update fused into the backward pass;
- :mod:`.state` — the last good epoch, which a divergence or a Ctrl-C returns to;
- :mod:`.cuda_graph` — the device loop: steps captured as CUDA graphs and replayed;
- :mod:`.distributed` — data parallelism across MPI ranks (MPI / NCCL).

The loop drives any model through its methods and the :class:`~gpumlp.workspace.Workspace`;
it never imports the model class.
"""

from .distributed import DistributedError
from .divergence import DivergenceError
from .fit import ConvergenceWarning, Trainer, fit

__all__ = ["ConvergenceWarning", "DistributedError", "DivergenceError", "Trainer", "fit"]
