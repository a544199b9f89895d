"""How the ``gpumlp`` command ends: its exit statuses, the exceptions it reports, and the one
line on stderr each of them becomes."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from ..distributed import DistributedError
from ..training import DivergenceError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, the status of a command whose output pipe was closed


def emit(out: IO[str], text: str, chunk: int = 1 << 16) -> None:
    """Write ``text`` to ``out`` in flushed chunks, so a reader that left (``| head``) is noticed.

    One large write to a pipe whose reader closes mid-write can end in a silent partial write
    (CPython's buffered writer after a short ``write(2)``); the next chunk then raises
    BrokenPipeError, which the command turns into exit status 141.

    Parameters
    ----------
    out : IO[str]
        The stream (stdout).
    text : str
        What to write.
    chunk : int
        Characters per write.
    """
    for start in range(0, len(text), chunk):
        out.write(text[start : start + chunk])
        out.flush()


class CLIError(Exception):
    """Bad command-line input: printed as one line on stderr, exit status 2."""


class Interrupted(Exception):
    """Ctrl-C, SIGTERM or SIGHUP during training (the model rolled back to its last complete epoch):
    exit status ``code`` (130 for Ctrl-C, 128 + the signal's number otherwise)."""

    def __init__(self, message: str, code: int = EXIT_INTERRUPTED) -> None:
        super().__init__(message)
        self.code = code


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised by ``train``'s handler so that fit rolls back as on Ctrl-C.

    Parameters
    ----------
    signum : int
        The signal's number; the command's exit status is 128 + ``signum`` (143, 129).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


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
        130 and ``gpumlp: interrupted...`` for Ctrl-C, 143 / 129 for SIGTERM / SIGHUP; 1 for a
        diverged run or an MPI failure; 2 (bad input) otherwise, each with a ``gpumlp: error: ...`` line.
    """
    if isinstance(exc, Terminated):
        return 128 + exc.signum, f"gpumlp: {one_line(exc)}"
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "gpumlp: interrupted"
    if isinstance(exc, Interrupted):
        return exc.code, f"gpumlp: {one_line(exc)}"
    code = EXIT_FAILED if isinstance(exc, (DivergenceError, DistributedError)) else EXIT_USAGE
    return code, f"gpumlp: error: {one_line(exc)}"


@contextmanager
def stop_signals_like_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` (a KeyboardInterrupt), so
    fit rolls back and checkpoints as on Ctrl-C (``train`` runs in it). A signal set to be
    ignored (``nohup``) or handled otherwise stays so; off the main thread nothing changes.

    Yields
    ------
    None
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
            previous[sig] = signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
