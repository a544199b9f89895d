"""Memory estimates made before anything large is allocated, checked against what is available.

A model of layer widths n_0 … n_L holds P = Σ_l (n_{l-1} n_l + n_l) parameters. Training adds,
per parameter, the gradient, the optimizer's state (``k`` arrays: 0 for plain SGD, 1 with
momentum, 2 for Adam), the copies fit keeps to roll back to (weights and optimizer state) and,
with early stopping, the best weights; per batch row it adds the layer outputs Z_l and deltas
D_l of every layer, Σ_l n_l values each, plus the target batch. On a GPU the training data is
copied to the device too. The totals are lower bounds (libraries add their own buffers), so a
refusal is certain to be right and an acceptance is not a promise.

Available memory: on the host ``MemAvailable`` of /proc/meminfo (Linux), else
``os.sysconf("SC_AVPHYS_PAGES") * SC_PAGE_SIZE``; on a device what the backend reports free
(:meth:`gpumlp.backends.Backend.free_memory`). Where neither is known nothing is refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

_GB = 1e9


def n_params(sizes: Sequence[int]) -> int:
    """P = Σ_l (n_{l-1} n_l + n_l): the number of weights and biases of a network of layer widths ``sizes``."""
    return sum(int(a) * int(b) + int(b) for a, b in zip(sizes[:-1], sizes[1:]))


def model_bytes(sizes: Sequence[int], itemsize: int) -> int:
    """Bytes of a model's parameters: P × ``itemsize``."""
    return n_params(sizes) * itemsize


def training_bytes(
    sizes: Sequence[int],
    itemsize: int,
    batch_rows: int,
    optimizer_arrays: int,
    early_stopping: bool = False,
) -> int:
    """Bytes that training adds to the model's own parameters (see the module docstring).

    Parameters
    ----------
    sizes : sequence of int
        Layer widths n_0 … n_L.
    itemsize : int
        Bytes per value (4 for float32, 8 for float64).
    batch_rows : int
        Rows of the largest batch.
    optimizer_arrays : int
        Arrays of optimizer state per parameter (SGD 0, momentum 1, Adam 2).
    early_stopping : bool
        Whether a copy of the best weights is kept.

    Returns
    -------
    int
        Gradients (P), optimizer state (k P), rollback copies ((1 + k) P), best weights (P with
        early stopping) and the batch workspace (2 rows Σ_{l≥1} n_l + rows n_0 + rows n_L values).
    """
    p = n_params(sizes)
    per_param = 1 + optimizer_arrays + (1 + optimizer_arrays) + (1 if early_stopping else 0)
    rows = int(batch_rows)
    workspace = rows * (2 * sum(int(n) for n in sizes[1:]) + int(sizes[0]) + int(sizes[-1]))
    return (per_param * p + workspace) * itemsize


def host_available() -> int | None:
    """Bytes of host memory available to a new allocation, or None when the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def available(backend: Any) -> tuple[int | None, str]:
    """(bytes available, where) for arrays of ``backend``: free device memory, or host memory."""
    free = getattr(backend, "free_memory", lambda: None)()
    if free is not None:
        return int(free), f"free on the {backend.name} device"
    return host_available(), "available on the host"


def check_fits(needed: int, backend: Any, what: str) -> None:
    """Raise ValueError when ``needed`` bytes exceed what ``backend`` (or the host) has available.

    Parameters
    ----------
    needed : int
        The estimate, in bytes.
    backend : Backend or None
        Where the arrays go; None for host memory.
    what : str
        What needs the memory, for the message (e.g. "an MLP of sizes [784, 100000000, 10]").

    Raises
    ------
    ValueError
        With both numbers, in GB, when the estimate is larger than the memory available.
    """
    have, where = available(backend) if backend is not None else (host_available(), "available on the host")
    if have is not None and needed > have:
        raise ValueError(
            f"{what} needs about {needed / _GB:.3g} GB of memory, but only {have / _GB:.3g} GB is {where}; "
            "use smaller layers (or smaller batches)"
        )
