"""Launching ``mpiexec -n 2`` from tests: the command (or why MPI tests cannot run here) and a
launch under a timeout that kills a hung job.

``LAUNCHER`` is ``(command, environment)``, or a string saying why MPI tests are skipped (mpi4py
or mpiexec missing; ``pip install -e '.[mpi]'`` provides both); ``needs_mpi`` skips with it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("distributed_worker.py")
LAUNCH_TIMEOUT = 180  # seconds for one mpiexec launch, a hang included; a clean run takes about 2 s


def _launcher() -> tuple[list[str], dict[str, str]] | str:
    """(the ``mpiexec -n 2 python`` command, its environment), or why MPI tests cannot run."""
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install -e '.[mpi]')"
    beside = Path(sys.executable).parent / "mpiexec"  # the launcher of the MPI wheel mpi4py uses
    exe = str(beside) if beside.exists() else shutil.which("mpiexec")
    if exe is None:
        return "no mpiexec launcher found (pip install -e '.[mpi]' installs MPICH's)"
    try:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{exe} --version failed: {exc}"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    flags: list[str] = []
    if "Open MPI" in version or "OpenRTE" in version or "PRRTE" in version:
        flags = ["--oversubscribe"]  # 2 ranks on however few cores CI has; and CI runs as root:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return [exe, *flags, "-n", "2", sys.executable], env


LAUNCHER = _launcher()
mpi = pytest.mark.mpi
needs_mpi = pytest.mark.skipif(isinstance(LAUNCHER, str), reason=str(LAUNCHER))


def launch(
    *args: str, env: dict[str, str] | None = None, program: tuple[str, ...] = (str(WORKER),)
) -> tuple[int, str, float]:
    """Run the worker (or ``python *program``) under ``mpiexec -n 2``; (exit code, output, seconds).
    A launch still running after LAUNCH_TIMEOUT is killed (its whole process group) and fails the test."""
    cmd, base_env = LAUNCHER
    return _run([*cmd, *program, *args], {**base_env, **(env or {})})


def launch_ranks(*ranks: list[str], env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """``mpiexec -n 1 python A... : -n 1 python B...``: one program line per rank (rank 0 first), so the
    ranks can get different arguments; (exit code, output, seconds), under LAUNCH_TIMEOUT as :func:`launch`."""
    cmd, base_env = LAUNCHER
    exe, flags = cmd[0], cmd[1:-3]  # [exe, *flags, "-n", "2", python]
    line: list[str] = [exe, *flags]
    for i, args in enumerate(ranks):
        line += [*([":"] if i else []), "-n", "1", sys.executable, *args]
    return _run(line, {**base_env, **(env or {})})


def _run(line: list[str], env: dict[str, str]) -> tuple[int, str, float]:
    """Run an mpiexec command line in its own process group; killed (and the test failed) after LAUNCH_TIMEOUT."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        line, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(line[:3])} hung for {LAUNCH_TIMEOUT} s; output:\n{out[-4000:]}")
    return proc.returncode, out, time.perf_counter() - t0
