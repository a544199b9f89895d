"""Output files: checks made before any work, and atomic writes that never replace what they should not.

Every file gpumlp writes (models, checkpoints, the CLI's predictions) goes through
:func:`atomic_write`: the bytes go to a temporary file beside the target, are flushed to disk,
and the temporary file is renamed over the target, so a crash or a full disk leaves either the
old file or the complete new one. :func:`check_output_path` is the same decision made up front,
before a long training run, so that a bad path is reported before any work is done.

What a target may be (docs/reliability.md, "Saving"):

- a regular file, or no file yet: replaced / created atomically;
- a symbolic link: followed; the file it points to is replaced and the link is kept;
- a read-only file: refused (PermissionError), as ``open(path, "w")`` would;
- a directory, a device node (``/dev/null``, ``/dev/full``), a FIFO or a socket: refused
  (ValueError). An atomic rename would replace the node with a regular file, and writing
  through it gives no atomic, checkable result;
- one of the command's own input files (also under another name or through a link): refused
  (ValueError); checked by the CLI, which knows its inputs.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from typing import IO, Any

_TMP_STEM = ".tmp-"  # temporary files: .tmp-<16 hex digits><suffix of the target>


def _name_max(directory: str) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no limit reported
        return 255


def resolve_target(path: str | os.PathLike[str], name: str) -> str:
    """The file a write to ``path`` replaces: ``path`` itself, or what its symbolic links point to.

    Raises
    ------
    TypeError
        When ``path`` is not a str or os.PathLike.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or os.PathLike); got {type(path).__name__}")
    path = os.fspath(path)
    return os.path.realpath(path) if os.path.islink(path) else path


def check_output_path(path: str | os.PathLike[str], name: str = "path", inputs: Iterable[tuple[str, Any]] = ()) -> str:
    """Check that ``path`` can be written by :func:`atomic_write`; returns it as a str.

    Parameters
    ----------
    path : str or os.PathLike
        The file to be written.
    name : str
        What the path is called in messages (an argument or a flag, e.g. ``"--out"``).
    inputs : iterable of (str, path)
        Files the same run reads, with their names: the output may be none of them (compared by
        device and inode, so another path or a link to the same file counts too). None entries
        and inputs that do not exist are skipped.

    Returns
    -------
    str
        ``path`` as given (``os.fspath``).

    Raises
    ------
    TypeError
        When ``path`` is not a path.
    ValueError
        When it names a directory, a device node, a FIFO or socket, one of ``inputs``, or has a file
        name longer than the file system allows.
    FileNotFoundError
        When its directory does not exist.
    PermissionError
        When the target is read-only or its directory is not writable.
    """
    shown = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    target = resolve_target(path, name)
    directory = os.path.dirname(os.path.abspath(target))
    base = os.path.basename(target)
    if os.path.isdir(target) or not base:
        example = os.path.join(target, "file.npz")
        raise ValueError(f"{name}={shown!r} is a directory; expected a file path such as {example!r}")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{name}={shown!r}: directory {directory!r} does not exist")
    limit = _name_max(directory)
    if len(os.fsencode(base)) > limit:
        raise ValueError(
            f"{name}={shown!r}: the file name is {len(os.fsencode(base))} bytes long; this file system allows {limit}"
        )
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(
                f"{name}={shown!r} is {_kind(st.st_mode)}, not a regular file; gpumlp writes files atomically "
                "(a new file renamed over the old one) and will not replace it: name a regular file"
            )
        if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(target, os.W_OK):
            raise PermissionError(f"{name}={shown!r} is read-only; gpumlp will not replace it")
        for flag, other in inputs:
            if other is not None and _same_file(st, other):
                raise ValueError(
                    f"{name}={shown!r} is the same file as {flag} {os.fspath(other)!r}; writing it would destroy "
                    "the input: choose another output file"
                )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"{name}={shown!r}: directory {directory!r} is not writable")
    return os.fspath(path)


def _same_file(st: os.stat_result, other: Any) -> bool:
    try:
        o = os.stat(other)
    except (OSError, TypeError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (o.st_dev, o.st_ino)


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device node"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any], name: str = "path") -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync it, then rename it over ``path``.

    A crash at any moment leaves either the old file or the complete new one, never a torn one. The
    target is checked first with :func:`check_output_path` (a symbolic link is followed, a device
    node, FIFO or read-only file refused); an error while writing names ``path``, not the
    temporary file, and removes the temporary file.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    write : callable
        Writes the content to the binary file object it is given.
    name : str
        What ``path`` is called in messages.

    Raises
    ------
    OSError
        From the checks of :func:`check_output_path`, or a write that failed (a full disk, say),
        with ``path`` in the message; ValueError and TypeError from the checks.
    """
    check_output_path(path, name)
    shown = os.fspath(path)
    target = resolve_target(path, name)
    directory = os.path.dirname(os.path.abspath(target))
    tmp = None
    try:
        fd, tmp = _new_temp_file(directory, os.path.splitext(target)[1])
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        if exc.errno is None:
            raise type(exc)(f"cannot write {shown!r}: {exc}") from None
        raise type(exc)(exc.errno, f"cannot write {shown!r}: {exc.strerror}") from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)
    if hasattr(os, "O_DIRECTORY"):
        dfd = os.open(directory, os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _new_temp_file(directory: str, suffix: str) -> tuple[int, str]:
    """(fd, path) of a new file in ``directory`` with the mode a plain open gives (0o666 less the
    umask): tempfile.mkstemp's 0o600 would make every saved model private to its owner."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    suffix = suffix if len(suffix) <= 16 else ""
    while True:
        tmp = os.path.join(directory, f"{_TMP_STEM}{os.urandom(8).hex()}{suffix}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
