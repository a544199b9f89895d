"""Data parallelism: each global minibatch is split across processes and their gradients summed.

Every rank holds the whole data set, the same weights (rank 0's, broadcast at the start of
``fit``) and the same shuffling RNG (rank 0's state), so all ranks draw the same epoch
permutation. Global batch rows [start, stop) are cut into ``size`` contiguous slices; rank r
back-propagates its slice with δ_L scaled by 1/(stop − start), so the sum over ranks is the
global-batch gradient. One allreduce per step sums every layer's gradients, packed in one
contiguous buffer (the workspace's gradients are views into it), right after the backward pass
and before the L2 term; then every rank applies the same update. Loss sums are combined once
per epoch, gathered and added in rank order, so history and early stopping agree bit for bit.

Transports: MPI (mpi4py) on NumPy host buffers; on CuPy, NCCL on device buffers (its
communicator id broadcast over MPI), or a CUDA-aware MPI; never a host copy per step.
A rank that raises makes every rank abort (MPI_Abort) instead of leaving them blocked, and a
rank left waiting in a collective longer than ``timeout`` seconds stops with
:class:`DistributedError`.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
import weakref
from typing import Any

import numpy as np

from ..backends import Backend, get_backend
from ..install_hint import install_hint
from ..validation import check_number

TIMEOUT_ENV = "GPUMLP_MPI_TIMEOUT"
_DRAIN_S = 0.2
DEFAULT_TIMEOUT = 300.0
_MPI_HINT = f"{install_hint('mpi4py mpich', 'mpi')}, then launch with mpiexec -n N"


class DistributedError(RuntimeError):
    """A collective did not complete in time: another rank crashed, hung or left the loop."""


def _mpi() -> Any:
    """The mpi4py MPI module (imported on first use: it initialises MPI)."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"distributed training needs mpi4py and an MPI library: {_MPI_HINT}") from exc
    return MPI


def _abort_on_uncaught_exception(MPI: Any) -> None:
    """Make an uncaught exception on any rank abort the whole job (as ``python -m mpi4py`` does).

    Without this a rank that dies leaves the others blocked in their next collective.
    """
    if getattr(sys.excepthook, "_gpumlp_abort", False):
        return
    previous = sys.excepthook

    def hook(kind: type, value: BaseException, tb: Any) -> None:
        previous(kind, value, tb)
        world = MPI.COMM_WORLD
        if MPI.Is_initialized() and not MPI.Is_finalized() and world.Get_size() > 1:
            sys.stderr.write(
                f"gpumlp.distributed: rank {world.Get_rank()} of {world.Get_size()} stopped with "
                f"{kind.__name__}; aborting all ranks\n"
            )
            sys.stderr.flush()
            time.sleep(_DRAIN_S)  # let the launcher forward the message before Abort tears the job down
            world.Abort(1)

    hook._gpumlp_abort = True  # type: ignore[attr-defined]
    sys.excepthook = hook


class Group:
    """The processes that train one model together: an mpi4py communicator, this process's
    rank in it and on its node, and how long a collective may wait for the others."""

    def __init__(self, comm: Any, timeout: float | None = None) -> None:
        MPI = _mpi()
        if not isinstance(comm, MPI.Comm):
            raise TypeError(
                f"comm must be an mpi4py communicator, 'mpi' or a gpumlp.distributed.Group; got {type(comm).__name__}"
            )
        if timeout is None:
            text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT))
            try:
                timeout = float(text)
            except ValueError:
                raise ValueError(f"${TIMEOUT_ENV} must be a number of seconds; got {text!r}") from None
        self.timeout = check_number(timeout, "timeout")
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._local_rank: int | None = None  # no collective here: a rank that never comes must not block this one
        self._reducers: dict[str, Reducer] = {}
        self.awaiting_start = False  # set by fit until this rank has taken part in the start check
        _abort_on_uncaught_exception(MPI)

    @property
    def local_rank(self) -> int:
        """This rank's index among the ranks on its host (one allgather of host names, under the timeout)."""
        if self._local_rank is None:
            name = _mpi().Get_processor_name()
            mine = np.frombuffer(hashlib.sha256(name.encode()).digest()[:8], dtype=np.int64).copy()
            seen = np.zeros(self.size, dtype=np.int64)
            wait(self.comm.Iallgather(mine, seen), self, "the start (host names)")
            self._local_rank = int(np.count_nonzero(seen[: self.rank] == mine[0]))
        return self._local_rank

    def agree(self, error: BaseException | None, settings: dict[str, Any] | None = None) -> None:
        """The start check of a distributed fit: ONE non-blocking allgather, bounded by the timeout.

        Every rank sends whether its own checks passed (``error`` None) and a digest of ``settings``
        (everything that changes the update). A rank whose checks failed returns (its caller raises
        its own error); the others raise ValueError naming that rank and its error, so no rank is
        left waiting. Ranks whose settings differ raise ValueError naming the settings that differ.
        Only once every rank has answered (all alive, all here) may a blocking exchange follow.

        Raises
        ------
        ValueError
            When another rank failed its checks, or the settings differ between ranks.
        DistributedError
            When a rank does not answer within the timeout (it crashed or never called fit).
        """
        self.awaiting_start = False
        mine = repr(sorted((settings or {}).items()))
        vote = np.array([error is not None, 0], dtype=np.int64)
        vote[1] = np.frombuffer(hashlib.sha256(mine.encode()).digest()[:8], dtype=np.int64)[0]
        seen = np.zeros((self.size, 2), dtype=np.int64)
        wait(self.comm.Iallgather(vote, seen), self, "the start check of fit")
        if seen[:, 0].any():
            texts = self.comm.allgather(None if error is None else f"{type(error).__name__}: {error}")
            if error is None:
                bad = next(r for r, t in enumerate(texts) if t is not None)
                raise ValueError(
                    f"distributed fit: rank {bad} of {self.size} failed its checks, so no rank trains: {texts[bad]}"
                )
            return
        if np.any(seen[:, 1] != seen[0, 1]):
            everyone = self.comm.allgather(settings)
            odd = next(r for r in range(self.size) if seen[r, 1] != seen[0, 1])
            keys = sorted(set(everyone[0]) | set(everyone[odd]), key=str)
            diff = [k for k in keys if repr(everyone[0].get(k)) != repr(everyone[odd].get(k))]
            detail = "; ".join(
                f"{k}: rank 0 has {everyone[0].get(k)!r}, rank {odd} has {everyone[odd].get(k)!r}" for k in diff
            )
            raise ValueError(
                "distributed fit needs the same model, data shapes and settings on every rank (they change the "
                f"update); {detail}"
            )

    @property
    def is_root(self) -> bool:
        """True on rank 0, the rank that prints, saves and checkpoints."""
        return self.rank == 0

    def reducer(self, backend: Backend) -> Reducer:
        """The gradient reducer for models on ``backend`` (made once, then reused by every fit)."""
        if self.size == 1:
            return Reducer()
        if backend.name not in self._reducers:
            self._reducers[backend.name] = _make_reducer(self, backend)
        return self._reducers[backend.name]

    def __repr__(self) -> str:
        return f"Group(rank={self.rank}, size={self.size}, local_rank={self.local_rank}, timeout={self.timeout:g})"


_GROUPS: list[tuple[weakref.ref, Group]] = []  # (communicator, its Group); comms are not hashable


def init(comm: Any = "mpi", timeout: float | None = None, backend: str | Backend = "auto") -> Group:
    """Join the MPI job and return the :class:`Group` to pass as ``fit(..., comm=group)``.

    Call it before building the model: when ``backend`` resolves to CuPy it selects this
    rank's GPU (node-local rank modulo the visible devices), so each rank allocates on its own.
    ``comm`` is "mpi" (COMM_WORLD) or an mpi4py communicator; ``timeout`` is how long, in
    seconds, a collective may wait for the other ranks (default: $GPUMLP_MPI_TIMEOUT or 300).
    """
    group = _group(comm, timeout)
    be = get_backend(backend)
    if be.name == "cupy":
        cuda = be.xp.cuda
        cuda.Device(group.local_rank % cuda.runtime.getDeviceCount()).use()
    return group


def _group(comm: Any, timeout: float | None = None) -> Group:
    """The Group of ``comm`` ("mpi" is COMM_WORLD), made once per communicator and then reused,
    so repeated fits share its reducers (and their NCCL communicators)."""
    if isinstance(comm, Group):
        return comm
    if isinstance(comm, str):
        if comm != "mpi":
            raise ValueError(f"comm must be 'mpi', an mpi4py communicator or a Group; got {comm!r}")
        comm = _mpi().COMM_WORLD
    _GROUPS[:] = [(ref, g) for ref, g in _GROUPS if ref() is not None]
    for ref, group in _GROUPS:
        if ref() is comm:
            if timeout is not None:
                group.timeout = check_number(timeout, "timeout")
            return group
    group = Group(comm, timeout)
    _GROUPS.append((weakref.ref(comm), group))
    return group


def make_reducer(comm: Any, backend: Backend) -> Reducer:
    """The reducer ``fit`` uses for ``comm`` (None: a single process) on ``backend``."""
    if comm is None:
        return Reducer()
    if isinstance(comm, Reducer):
        return comm
    return _group(comm).reducer(backend)


def _make_reducer(group: Group, backend: Backend) -> Reducer:
    if backend.name == "numpy":
        return MPIReducer(group, backend)
    if backend.name == "cupy":
        nccl = backend.nccl()
        if nccl is not None:
            return NCCLReducer(group, backend, nccl)
        if _mpi().Query_cuda_support():
            return CudaMPIReducer(group, backend)
        raise RuntimeError(
            "distributed training on CuPy needs NCCL (cupy.cuda.nccl: pip install nvidia-nccl-cu12 or "
            "nvidia-nccl-cu13) or a CUDA-aware MPI; neither is available on this rank"
        )
    raise ValueError(f"distributed training runs on the numpy and cupy backends, not {backend.name!r}")


def shard(start: int, stop: int, rank: int, size: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous part of rows [start, stop) cut into ``size`` parts whose
    lengths differ by at most one (a part may be empty when there are fewer rows than ranks)."""
    m = stop - start
    return start + m * rank // size, start + m * (rank + 1) // size


class Reducer:
    """A single process: the whole batch is this process's and there is nothing to sum.

    The seam the training loop and :func:`~gpumlp.training.step.train_step` call; the subclasses
    sum across ranks.
    """

    rank = 0
    size = 1

    @property
    def is_root(self) -> bool:
        """True on the rank that prints, saves and checkpoints."""
        return self.rank == 0

    def shard(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's rows of the global row range [start, stop)."""
        return start, stop

    def start(self, model: Any, **settings: Any) -> None:
        """Before the first epoch: make every rank start from the same weights and RNG state."""

    def reduce_grads(self, ws: Any) -> None:
        """Sum this step's gradients (``ws.grads``) over the ranks, in place."""

    def allreduce_(self, flat: Any) -> None:
        """Sum the 1-D buffer ``flat`` over the ranks, in place."""

    def sum_scalar(self, x: Any) -> float:
        """Σ over ranks of ``x`` (a float or a 0-d device array), the same float on every rank."""
        return float(x)


class MPIReducer(Reducer):
    """Sums over the ranks of a :class:`Group` with MPI, on host (NumPy) buffers."""

    def __init__(self, group: Group, backend: Backend) -> None:
        self._MPI = _mpi()
        self._ops = backend.ops
        self.group, self.comm = group, group.comm
        self.rank, self.size = group.rank, group.size
        self._gathered = np.zeros(self.size)
        self.steps = 0

    def shard(self, start: int, stop: int) -> tuple[int, int]:
        return shard(start, stop, self.rank, self.size)

    def start(self, model: Any, **settings: Any) -> None:
        """The start check (:meth:`Group.agree`: every rank passed its checks and trains the same model
        the same way; a mismatch would deadlock), then broadcast rank 0's weights and RNG state."""
        model_settings = {"sizes": list(model.sizes), "activations": list(model.activations), "dtype": model.dtype}
        self.group.agree(None, {**model_settings, "backend": model.backend.name, **settings})
        weights = model.get_weights()
        for W, b in weights:
            self.comm.Bcast(W, root=0)
            self.comm.Bcast(b, root=0)
        if self.rank != 0:
            model.set_weights(weights)
        model.rng.bit_generator.state = self.comm.bcast(model.rng.bit_generator.state, root=0)

    def reduce_grads(self, ws: Any) -> None:
        self.allreduce_(ws.pack_grads(self._ops))
        self.steps += 1

    def allreduce_(self, flat: Any) -> None:
        MPI = self._MPI
        request = self.comm.Iallreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        self.wait(request, f"the gradient allreduce of step {self.steps + 1}")

    def sum_scalar(self, x: Any) -> float:
        mine = np.array([self.host_float(x)])
        self.wait(self.comm.Iallgather(mine, self._gathered), "the loss sum")
        return math.fsum(self._gathered.tolist())  # every rank adds the same numbers in the same order

    def host_float(self, x: Any) -> float:
        """``x`` read on the host."""
        return float(x)

    def wait(self, request: Any, what: str) -> None:
        """Complete an MPI request, or raise :class:`DistributedError` after the group's timeout."""
        wait(request, self.group, what)

    def timed_out(self, what: str) -> None:
        timed_out(self.group, what)


def wait(request: Any, group: Group, what: str) -> None:
    """Complete an MPI request, or raise :class:`DistributedError` after ``group``'s timeout."""
    if request.Test():
        return
    deadline = time.monotonic() + group.timeout
    while not request.Test():
        if time.monotonic() > deadline:
            timed_out(group, what)


def timed_out(group: Group, what: str) -> None:
    """Raise the :class:`DistributedError` of a rank that waited ``group.timeout`` s in ``what``."""
    raise DistributedError(
        f"rank {group.rank} of {group.size} waited {group.timeout:g} s in {what} for the other ranks: "
        "one of them has crashed, hung, never started, or runs a different number of steps (different data, "
        f"batch_size or epochs). Set ${TIMEOUT_ENV} or init(timeout=...) to wait longer."
    )


class CudaMPIReducer(MPIReducer):
    """A CUDA-aware MPI summing CuPy device buffers directly (no host copy)."""

    def __init__(self, group: Group, backend: Backend) -> None:
        super().__init__(group, backend)
        self._synchronize = backend.synchronize

    def allreduce_(self, flat: Any) -> None:
        self._synchronize()  # MPI reads device memory outside CUDA stream order
        super().allreduce_(flat)


class NCCLReducer(MPIReducer):
    """NCCL allreduce of CuPy device buffers on the current stream: no host sync per step.

    The NCCL communicator id is made on rank 0 and broadcast over MPI; scalars still go over
    MPI once per epoch, after waiting (with the timeout) for the device's queued work.
    """

    def __init__(self, group: Group, backend: Backend, nccl: Any) -> None:
        super().__init__(group, backend)
        self._nccl_module, self._nccl = nccl, None  # the communicator comes after the start check: see start
        self._types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}
        self._sum = nccl.NCCL_SUM
        self._cuda = backend.xp.cuda

    def start(self, model: Any, **settings: Any) -> None:
        super().start(model, **settings)
        if self._nccl is None:  # every rank passed the start check, so every rank comes to this bcast
            nccl = self._nccl_module
            uid = self.comm.bcast(nccl.get_unique_id() if self.rank == 0 else None, root=0)
            self._nccl = nccl.NcclCommunicator(self.size, uid, self.rank)

    def allreduce_(self, flat: Any) -> None:
        ptr = flat.data.ptr
        stream = self._cuda.get_current_stream().ptr
        self._nccl.allReduce(ptr, ptr, flat.size, self._types[flat.dtype.name], self._sum, stream)

    def host_float(self, x: Any) -> float:
        done = self._cuda.Event(disable_timing=True)
        done.record()
        deadline = time.monotonic() + self.group.timeout
        while not done.done:
            self._nccl.check_async_error()
            if time.monotonic() > deadline:
                self._nccl.abort()
                self.timed_out("the device's queued steps (an NCCL allreduce)")
            time.sleep(1e-3)
        return float(x)
