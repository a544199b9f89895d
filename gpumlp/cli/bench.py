"""``gpumlp bench``: runs benchmarks/bench_train.py of a source checkout with the remaining arguments."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import IO

from .errors import CLIError


def _bench_script() -> Path | None:
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):  # this checkout first
        script = root / "benchmarks" / "bench_train.py"
        if script.is_file():
            return script
    return None


def cmd_bench(args: argparse.Namespace, out: IO[str]) -> int:
    """Run benchmarks/bench_train.py (from a source checkout) with the remaining arguments.

    Parameters
    ----------
    args : argparse.Namespace
        ``bench_args``: the arguments after ``gpumlp bench``, passed on unchanged.
    out : IO[str]
        The command's output stream, flushed before the script writes to the same stdout.

    Returns
    -------
    int
        The script's exit status.

    Raises
    ------
    CLIError
        When no benchmarks/bench_train.py is found beside the package or in the working directory.
    """
    script = _bench_script()
    if script is None:
        raise CLIError("benchmarks/bench_train.py not found: `gpumlp bench` runs from a gpumlp source checkout")
    out.flush()
    return subprocess.call([sys.executable, str(script), *args.bench_args])
