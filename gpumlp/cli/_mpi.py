"""``gpumlp train --distributed``: joining the ``mpiexec`` job, and the abort policy.

A rank whose training fails must not simply end: the other ranks would wait for it in their next
collective until the MPI timeout. So a failure on one rank is reported on stderr, naming the
rank, and MPI ``Abort`` ends every rank with that failure's exit status. A diverged run is the
exception: the loss is summed over the ranks, so every rank sees the divergence in the same
epoch and stops there; rank 0 reports it. ``train --distributed`` joins the job before it reads
anything, so a missing data file on one rank ends the job too; a rank whose command line is
rejected (before it knows it is distributed) joins only to end the job (:func:`end_job_early`).
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

_JOINED: list[Group] = []  # the group this process joined: its failures go through run_on_ranks


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
        group = init_group("mpi", timeout=args.mpi_timeout, backend=args.backend)
        _JOINED.append(group)
        return group
    except ImportError as exc:
        raise CLIError(f"--distributed: {exc}") from None


def wants_distributed(argv: list[str]) -> bool:
    """Whether the command line asks for ``--distributed`` (also abbreviated, as argparse allows)."""
    return any(a.startswith("--dis") and "--distributed".startswith(a) for a in argv)


def end_job_early(argv: list[str], code: int) -> None:
    """A ``--distributed`` command that failed before joining the MPI job (a bad flag on one rank):
    join it now and end every rank with ``code``, so the others do not wait for this one.

    Parameters
    ----------
    argv : list of str
        The command's arguments.
    code : int
        The exit status of the failure (already reported on stderr).
    """
    if _JOINED or not wants_distributed(argv):
        return
    try:
        from mpi4py import MPI  # initialises MPI, as joining would
    except ImportError:
        return
    if MPI.Is_finalized():
        return
    world = MPI.COMM_WORLD
    if world.Get_size() > 1:
        sys.stderr.write(
            f"gpumlp: rank {world.Get_rank()} of {world.Get_size()} failed before training; ending the job\n"
        )
        sys.stderr.flush()
        world.Abort(code)


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
