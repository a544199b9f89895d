"""The gpumlp file format: an .npz of float arrays plus a JSON metadata record. No pickle, atomic writes.

This module knows files, not models: :func:`write_npz` stores named arrays and a metadata
dict, :func:`read_npz` checks and returns them. The model builds itself from what it reads
(:meth:`gpumlp.network.MLP.from_arrays`); checkpoints and the CLI's bundle add their own arrays.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

FORMAT = "gpumlp"
VERSION = 1
_META_KEY = "__meta__"


def atomic_write(path: str | os.PathLike[str], write: Any) -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync it, then rename over ``path``.

    A crash at any moment leaves either the old file or the complete new one, never a torn one.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    fd, tmp = _new_temp_file(directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):
        dfd = os.open(directory, os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _new_temp_file(directory: str) -> tuple[int, str]:
    """(fd, path) of a new file in ``directory`` with the mode a plain open gives (0o666 less the
    umask): tempfile.mkstemp's 0o600 would make every saved model private to its owner."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(directory, f".tmp-{os.urandom(8).hex()}.npz")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def encode_meta(meta: dict[str, Any]) -> np.ndarray:
    """JSON metadata as a uint8 array, so the .npz holds no object arrays."""
    return np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)


def decode_json(array: np.ndarray, path: str, what: str) -> Any:
    """The JSON value :func:`encode_meta` stored in ``array``; a ValueError naming ``what`` if damaged."""
    try:
        return json.loads(array.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path!r} has corrupted {what}: {exc}") from None


def write_npz(path: str | os.PathLike[str], meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` and the metadata ``meta`` (JSON-ready) to ``path`` as a gpumlp file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its directory must exist.
    meta : dict
        JSON-serialisable metadata; the format name and version are added to it.
    arrays : dict of str to numpy.ndarray
        The arrays to store under their names (names starting with ``__`` are reserved).

    Raises
    ------
    FileNotFoundError
        When the directory of ``path`` does not exist.
    """
    record = {"format": FORMAT, "version": VERSION, **meta}
    atomic_write(path, lambda f: np.savez(f, **{_META_KEY: encode_meta(record)}, **arrays))


def read_npz(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metadata, arrays) of a gpumlp file; a clear ValueError for anything else."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or os.PathLike); got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array, not an .npz archive")
        with npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # numpy, zipfile and zlib raise a dozen kinds on a damaged file
        raise ValueError(f"{path!r} is not a readable gpumlp model file (truncated or corrupted?): {exc}") from None
    if _META_KEY not in arrays:
        raise ValueError(f"{path!r} is an .npz file but not a gpumlp model (no metadata)")
    meta = decode_json(arrays.pop(_META_KEY), path, "gpumlp metadata")
    kind = meta.get("format") if isinstance(meta, dict) else meta
    if not isinstance(meta, dict) or kind != FORMAT:
        raise ValueError(f"{path!r} is not a gpumlp model file (format {kind!r})")
    if meta.get("version") != VERSION:
        raise ValueError(
            f"{path!r} is gpumlp file version {meta.get('version')!r}; this gpumlp reads version {VERSION}"
        )
    odd = [f"{k} ({a.dtype})" for k, a in arrays.items() if not k.startswith("__") and a.dtype.kind != "f"]
    if odd:
        raise ValueError(f"{path!r} holds non-float arrays where weights belong: {', '.join(odd)}")
    return meta, arrays
