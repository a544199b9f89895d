"""``gpumlp info``: the backend, device and versions gpumlp would use."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
from typing import IO, Any

from .. import __version__
from ..backends import backend_info
from .errors import EXIT_OK


def _pkg_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cmd_info(args: argparse.Namespace, out: IO[str]) -> int:
    """Backend, device and versions.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``info`` arguments: ``backend`` and ``json``.
    out : IO[str]
        Where the report goes (stdout).

    Returns
    -------
    int
        The exit status, 0.
    """
    info: dict[str, Any] = {"gpumlp": __version__, "python": platform.python_version()}
    info.update(backend_info(args.backend))
    for pkg in ("scikit-learn", "matplotlib", "tqdm"):
        info.setdefault(pkg, _pkg_version(pkg))
    if args.json:
        print(json.dumps(info, indent=2, default=str), file=out)
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            print(f"{k:<{width}}  {v}", file=out)
    return EXIT_OK
