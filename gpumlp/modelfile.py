"""The gpumlp file format: an .npz of float arrays plus a JSON metadata record. No pickle, atomic writes.

This module knows files, not models: :func:`write_npz` stores named arrays and a metadata
dict, :func:`read_npz` checks and returns them. The model builds itself from what it reads
(:meth:`gpumlp.network.MLP.from_arrays`); checkpoints and the CLI's bundle add their own arrays.
"""

from __future__ import annotations

import json
import numbers
import os
import zipfile
from typing import Any

import numpy as np

from . import _files
from .memory import check_fits
from .validation import check_sizes

FORMAT = "gpumlp"
VERSION = 1
_META_KEY = "__meta__"
_CLI_MEAN, _CLI_SCALE = "__cli_mean__", "__cli_scale__"  # the command line's standardisation (gpumlp.pipeline)
_CLI_Y_MEAN, _CLI_Y_SCALE = "__cli_y_mean__", "__cli_y_scale__"  # its regression target scaling
_JSON_MEMBERS = (_META_KEY, "__checkpoint__", "__cli__")  # JSON records: the model's, a checkpoint's, the CLI's
_OPT_STATE = ("velocity", "m", "v")  # optimizer state arrays a checkpoint may hold (gpumlp.optimizers)
MAX_JSON_BYTES = 64 << 20  # a JSON record larger than this is refused unread


def atomic_write(path: str | os.PathLike[str], write: Any, name: str = "path") -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync it, then rename over ``path``.

    A crash at any moment leaves either the old file or the complete new one, never a torn one;
    see :func:`gpumlp._files.atomic_write` for what a target may be.
    """
    _files.atomic_write(path, write, name)


def _json_default(o: Any) -> Any:
    """NumPy scalars and arrays as the Python values JSON holds (a seed of np.int64(7) is stored as 7)."""
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, numbers.Integral):
        return int(o)
    if isinstance(o, numbers.Real):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} {o!r} cannot be stored in gpumlp metadata (JSON)")


def encode_meta(meta: dict[str, Any]) -> np.ndarray:
    """JSON metadata as a uint8 array, so the .npz holds no object arrays (NumPy numbers stored as Python's)."""
    return np.frombuffer(json.dumps(meta, default=_json_default).encode("utf-8"), dtype=np.uint8)


def decode_json(array: np.ndarray, path: str, what: str) -> Any:
    """The JSON value :func:`encode_meta` stored in ``array``; a ValueError naming ``what`` if damaged
    (also for JSON nested too deeply to parse)."""
    try:
        return json.loads(array.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path!r} has corrupted {what}: {exc}") from None
    except RecursionError:
        raise ValueError(f"{path!r} has corrupted {what}: JSON nested too deeply") from None


def write_npz(path: str | os.PathLike[str], meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` and the metadata ``meta`` (JSON-ready) to ``path`` as a gpumlp file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its directory must exist. A symbolic link is followed; a directory,
        device node, FIFO or read-only file is refused (see :mod:`gpumlp._files`).
    meta : dict
        JSON-serialisable metadata; the format name and version are added to it.
    arrays : dict of str to numpy.ndarray
        The arrays to store under their names (names starting with ``__`` are reserved).

    Raises
    ------
    FileNotFoundError
        When the directory of ``path`` does not exist.
    ValueError, PermissionError
        For a target that may not be replaced, or an array the format has no member for (of that
        name or shape): what is written can always be read back.
    """
    record = {"format": FORMAT, "version": VERSION, **meta}
    required, params = member_shapes(record)
    for name, a in arrays.items():  # write nothing that read_npz would refuse
        want = required.get(name) or _allowed_shape(name, record, params)
        if name not in _JSON_MEMBERS[1:] and (want is None or tuple(np.shape(a)) != want):
            raise ValueError(
                f"cannot store array {name!r} of shape {np.shape(a)} in a gpumlp file of sizes {list(record['sizes'])}"
                + ("" if want is not None else ": the format has no such member (see gpumlp.modelfile)")
            )
    atomic_write(path, lambda f: np.savez(f, **{_META_KEY: encode_meta(record)}, **arrays))


def member_shapes(meta: dict[str, Any]) -> tuple[dict[str, tuple[int, ...]], list[tuple[int, ...]]]:
    """(required members and their shapes, parameter shapes) of the model ``meta`` describes.

    The required members are the weights ``W<i>`` (n_i, n_{i+1}) and biases ``b<i>`` (n_{i+1},);
    the parameter shapes [W_0, b_0, W_1, ...] are what optimizer state (``opt.<name>.<j>``) and
    early stopping's best weights (``best.<j>``) must have.

    Raises
    ------
    KeyError, TypeError, ValueError
        When ``meta`` has no valid ``sizes``.
    """
    sizes = check_sizes(meta["sizes"])
    if meta.get("dtype") not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {meta.get('dtype')!r}")
    params: list[tuple[int, ...]] = []
    required = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        required[f"W{i}"], required[f"b{i}"] = (a, b), (b,)
        params += [(a, b), (b,)]
    return required, params


def _allowed_shape(name: str, meta: dict[str, Any], params: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The shape an optional member ``name`` must have, or None when the format has no such member."""
    parts = name.split(".")
    if len(parts) in (2, 3) and parts[0] in ("best", "opt") and len(parts) == (2 if parts[0] == "best" else 3):
        j = parts[-1]
        if j.isdigit() and int(j) < len(params) and (parts[0] == "best" or parts[1] in _OPT_STATE):
            return params[int(j)]
        return None
    if name in (_CLI_MEAN, _CLI_SCALE):
        return (int(meta["sizes"][0]),)
    if name in (_CLI_Y_MEAN, _CLI_Y_SCALE):
        return (int(meta["sizes"][-1]),)
    return None


def read_npz(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metadata, arrays) of a gpumlp file; a clear ValueError for anything else.

    The file is read in a fixed order, and nothing large is read before it is known to fit: the
    metadata first (at most :data:`MAX_JSON_BYTES`); then every member's .npy header only (its
    dtype, shape and declared size); the shapes are checked against the metadata's layer sizes,
    members the format does not have are refused, the total is checked against the memory
    available; only then are the arrays read. A zip bomb's extra members are never inflated.

    Raises
    ------
    TypeError
        When ``path`` is not a path.
    FileNotFoundError
        When there is no file at ``path``.
    ValueError
        For a file that is not a readable, consistent gpumlp file, names the problem.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or os.PathLike); got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    unreadable = f"{path!r} is not a readable gpumlp model file (truncated or corrupted?)"
    try:
        with zipfile.ZipFile(path) as zf:
            return _read_zip(zf, path, unreadable)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{unreadable}: {_not_zip(path) or exc}") from None
    except (OSError, EOFError, RuntimeError, NotImplementedError) as exc:  # zlib.error is an Exception: below
        raise ValueError(f"{unreadable}: {exc}") from None


def _not_zip(path: str) -> str | None:
    """What a file that is no zip archive holds instead, when it is recognisably a .npy or a pickle."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return None
    if head == np.lib.format.MAGIC_PREFIX:
        return "it holds a single .npy array, not an .npz archive"
    if head[:1] == b"\x80":
        return "it holds a pickled object, which gpumlp never loads (loading a pickle can run code)"
    return None


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, unreadable: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a member's .npy header, after checking its declared size matches them."""
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            offset = f.tell()
    except Exception as exc:  # numpy and zipfile raise several kinds for a damaged header
        raise ValueError(f"{unreadable}: member {info.filename!r}: {exc}") from None
    if dtype.hasobject:
        raise ValueError(
            f"{unreadable}: member {info.filename!r} holds Python objects, which gpumlp never loads "
            "(Object arrays cannot be loaded when allow_pickle=False)"
        )
    if info.file_size != offset + int(np.prod(shape, dtype=object)) * dtype.itemsize:
        raise ValueError(
            f"{unreadable}: member {info.filename!r} declares {info.file_size} bytes, but its header describes "
            f"{offset} + {int(np.prod(shape, dtype=object))} x {dtype.itemsize}"
        )
    return tuple(int(n) for n in shape), dtype


def _read_zip(zf: zipfile.ZipFile, path: str, unreadable: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise ValueError(f"{unreadable}: it holds the same member twice")
    members = {n[: -len(".npy")] if n.endswith(".npy") else n: i for n, i in zip(names, infos)}
    if _META_KEY not in members:
        raise ValueError(f"{path!r} is an .npz file but not a gpumlp model (no metadata)")
    odd_names = [n for n in names if not n.endswith(".npy")]
    if odd_names:
        raise ValueError(f"{path!r} is not a gpumlp model file: it holds {odd_names[0]!r}, which is not an array")
    headers = {}
    for key in sorted(members, key=lambda k: k != _META_KEY):
        headers[key] = _header(zf, members[key], unreadable)
        if key in _JSON_MEMBERS:
            shape, dtype = headers[key]
            if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_JSON_BYTES:
                raise ValueError(
                    f"{path!r} has corrupted {key}: expected JSON text of at most {MAX_JSON_BYTES} bytes "
                    f"(uint8, 1-D); got {dtype} of shape {shape}"
                )
        if key == _META_KEY:
            meta = _decode_meta(_read_array(zf, members[key], unreadable), path)
    inconsistent = f"{path!r} holds an inconsistent gpumlp model"
    try:
        required, params = member_shapes(meta)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{inconsistent}: {exc}") from None
    missing = [k for k in required if k not in members]
    if missing:
        raise ValueError(f"{inconsistent}: array {missing[0]!r} is missing")
    wanted = {key: required.get(key) or _allowed_shape(key, meta, params) for key in headers}
    unknown = [key for key, want in wanted.items() if want is None and key not in _JSON_MEMBERS]
    if unknown:
        raise ValueError(
            f"{inconsistent}: it holds an array {unknown[0]!r} that the format does not have; gpumlp reads only "
            "the metadata, the weights W<i> and b<i>, and a checkpoint's or the command line's own arrays"
        )
    odd = [f"{k} ({d})" for k, (_, d) in headers.items() if k not in _JSON_MEMBERS and d.kind != "f"]
    if odd:
        raise ValueError(f"{path!r} holds non-float arrays where weights belong: {', '.join(odd)}")
    total = 0
    for key, (shape, dtype) in headers.items():
        want = wanted[key]
        if key in _JSON_MEMBERS:
            continue
        if shape != want:
            raise ValueError(
                f"{inconsistent}: {key} must have shape {want} for sizes {list(meta['sizes'])}; got {shape}"
            )
        total += int(np.prod(shape, dtype=object)) * dtype.itemsize
    check_fits(total, None, f"{path!r} (layer sizes {list(meta['sizes'])})")
    arrays = {key: _read_array(zf, members[key], unreadable) for key in headers if key != _META_KEY}
    return meta, arrays


def _read_array(zf: zipfile.ZipFile, info: zipfile.ZipInfo, unreadable: str) -> np.ndarray:
    """A member's array, read to the member's end (which checks its CRC)."""
    try:
        with zf.open(info) as f:
            array = np.lib.format.read_array(f, allow_pickle=False)
            if f.read(1):
                raise ValueError("data beyond the array")
    except Exception as exc:  # numpy, zipfile and zlib raise a dozen kinds on a damaged member
        raise ValueError(f"{unreadable}: member {info.filename!r}: {exc}") from None
    return array


def _decode_meta(array: np.ndarray, path: str) -> dict[str, Any]:
    meta = decode_json(array, path, "gpumlp metadata")
    kind = meta.get("format") if isinstance(meta, dict) else meta
    if not isinstance(meta, dict) or kind != FORMAT:
        raise ValueError(f"{path!r} is not a gpumlp model file (format {kind!r})")
    if meta.get("version") != VERSION:
        raise ValueError(
            f"{path!r} is gpumlp file version {meta.get('version')!r}; this gpumlp reads version {VERSION}"
        )
    return meta
