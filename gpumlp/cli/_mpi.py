"""``gpumlp train --distributed``: joining the ``mpiexec`` job, and the abort policy.

A rank whose training fails must not simply end: the other ranks would wait for it in their next
collective until the MPI timeout. So a failure on one rank is reported on stderr, naming the
rank, and MPI ``Abort`` ends every rank with that failure's exit status. A diverged run is the
exception: the loss is summed over the ranks, so every rank sees the divergence in the same
epoch and stops there; rank 0 reports it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from ..distributed import Group
from ..distributed import init as init_group
from ..training import DivergenceError
from .errors import EXIT_FAILED, REPORTED, UNEXPECTED, CLIError, failure


def join_mpi_job(args: argparse.Namespace) -> Group:
    """This process's place in the ``mpiexec`` job; selects its GPU, so it comes before the model.

    Parameters
    ----------
    args : argparse.Namespace
        The ``train`` arguments: ``mpi_timeout`` and ``backend``.

    Returns
    -------
    Group
        This rank's MPI group.

    Raises
    ------
    CLIError
        When mpi4py or an MPI library is missing.
    """
    try:
        return init_group("mpi", timeout=args.mpi_timeout, backend=args.backend)
    except ImportError as exc:
        raise CLIError(f"--distributed: {exc}") from None


def run_on_ranks(group: Group, train: Callable[[], int]) -> int:
    """Run ``train`` on this rank; a failure on any rank ends every rank of the job.

    Parameters
    ----------
    group : Group
        This rank's MPI group.
    train : callable
        The training run on this rank; returns the exit status.

    Returns
    -------
    int
        ``train``'s exit status; 1 on a rank other than 0 when training diverged.

    Raises
    ------
    DivergenceError
        On rank 0 when training diverged (the command reports it).
    Exception
        The failure itself in a one-process job, or with ``GPUMLP_DEBUG`` set for an unexpected
        one (the traceback, then the excepthook of :mod:`gpumlp.distributed` aborts every rank).
    """
    try:
        return train()
    except DivergenceError:
        if group.is_root:
            raise
        return EXIT_FAILED  # rank 0 reports it: the loss is summed over the ranks, so every rank stops here
    except (*REPORTED, *UNEXPECTED) as exc:
        if group.size == 1 or (os.environ.get("GPUMLP_DEBUG") and not isinstance(exc, REPORTED)):
            raise  # one process: the command reports it; GPUMLP_DEBUG: the traceback, then the excepthook aborts all
        # Ending only this rank would leave the others waiting in their next collective.
        code, line = failure(exc)
        print(f"{line} (rank {group.rank} of {group.size})", file=sys.stderr, flush=True)
        group.comm.Abort(code)
        return code  # Abort ends every rank; not reached
