"""Install hints that work from where the user is: package names on the index, or the checkout's extra.

gpumlp's extras (``gpumlp[cuda13]``, ``[sklearn]``, ...) exist only where gpumlp itself is
installed from its source: in a checkout, ``pip install -e ".[cuda13]"`` works, but ``pip install
gpumlp[cuda13]`` asks the package index for a gpumlp it does not have. :func:`install_hint` names
the packages themselves, and the extra with the checkout's path when gpumlp runs from one.
"""

from __future__ import annotations

import os

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def checkout_root() -> str | None:
    """The source checkout gpumlp runs from (the folder with its pyproject.toml), or None if installed."""
    return _ROOT if os.path.isfile(os.path.join(_ROOT, "pyproject.toml")) else None


def install_hint(packages: str, extra: str) -> str:
    """A pip command for ``packages`` (as on the package index), plus the checkout's extra when there is one.

    Parameters
    ----------
    packages : str
        The requirement(s) as pip takes them, e.g. ``"cupy-cuda13x"`` or ``"'mpi4py>=4' mpich"``.
    extra : str
        gpumlp's extra holding them, e.g. ``"cuda13"``.

    Returns
    -------
    str
        ``pip install PACKAGES``, and ``(or pip install -e "ROOT[extra]" in this checkout)`` when
        gpumlp is imported from a source checkout.
    """
    root = checkout_root()
    where = f' (or, from this checkout, pip install -e "{root}[{extra}]")' if root else ""
    return f"pip install {packages}{where}"
