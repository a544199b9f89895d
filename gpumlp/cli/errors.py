"""How the ``gpumlp`` command ends: its exit statuses, the exceptions it reports, and the one
line on stderr each of them becomes."""

from __future__ import annotations

from ..distributed import DistributedError
from ..training import DivergenceError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, the status of a command whose output pipe was closed


class CLIError(Exception):
    """Bad command-line input: printed as one line on stderr, exit status 2."""


class Interrupted(Exception):
    """Ctrl-C during training (the model rolled back to its last complete epoch): exit status 130."""


REPORTED = (CLIError, DivergenceError, Interrupted, KeyboardInterrupt)
UNEXPECTED = (ValueError, TypeError, OSError, ImportError, RuntimeError, MemoryError)  # a traceback with GPUMLP_DEBUG=1


def one_line(exc: BaseException | str) -> str:
    """The text of ``exc`` on one line, whitespace runs collapsed.

    Parameters
    ----------
    exc : BaseException or str
        An exception, or a warning's message.

    Returns
    -------
    str
        Its text with every run of whitespace (newlines included) as one space; the exception's
        class name when the text is empty.
    """
    return " ".join(str(exc).split()) or type(exc).__name__


def failure(exc: BaseException) -> tuple[int, str]:
    """The exit status and the one line for stderr for an exception that ends the command.

    Parameters
    ----------
    exc : BaseException
        One of :data:`REPORTED` or :data:`UNEXPECTED`.

    Returns
    -------
    tuple of (int, str)
        130 and ``gpumlp: interrupted...`` for Ctrl-C; 1 for a diverged run or an MPI failure;
        2 (bad input) otherwise, each with a ``gpumlp: error: ...`` line.
    """
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "gpumlp: interrupted"
    if isinstance(exc, Interrupted):
        return EXIT_INTERRUPTED, f"gpumlp: {one_line(exc)}"
    code = EXIT_FAILED if isinstance(exc, (DivergenceError, DistributedError)) else EXIT_USAGE
    return code, f"gpumlp: error: {one_line(exc)}"
