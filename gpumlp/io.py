"""Save and load models: an .npz of the weights plus JSON metadata. No pickle, atomic writes."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from .backend import get_backend
from .network import MLP

FORMAT = "gpumlp"
VERSION = 1
_META_KEY = "__meta__"


def atomic_write(path: "str | os.PathLike[str]", write: Any) -> None:
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


def model_meta(model: MLP) -> dict[str, Any]:
    """What it takes to rebuild ``model`` besides its weights."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "sizes": list(model.sizes),
        "hidden_activation": model.hidden_activation,
        "output_activation": model.output_activation,
        "dtype": model.dtype,
        "seed": model.seed,
    }


def encode_meta(meta: dict[str, Any]) -> np.ndarray:
    """JSON metadata as a uint8 array, so the .npz holds no object arrays."""
    return np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)


def decode_json(array: np.ndarray, path: str, what: str) -> Any:
    """The JSON value :func:`encode_meta` stored in ``array``; a ValueError naming ``what`` if damaged."""
    try:
        return json.loads(array.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path!r} has corrupted {what}: {exc}") from None


def save(model: MLP, path: "str | os.PathLike[str]", extra: dict[str, np.ndarray] | None = None) -> None:
    """Write ``model`` to ``path`` atomically (``extra`` arrays are stored beside the weights)."""
    arrays = {_META_KEY: encode_meta(model_meta(model))}
    for i, (W, b) in enumerate(model.get_weights()):
        arrays[f"W{i}"], arrays[f"b{i}"] = W, b
    arrays.update(extra or {})
    atomic_write(path, lambda f: np.savez(f, **arrays))


def read_npz(path: "str | os.PathLike[str]") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
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
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a gpumlp model file (format {meta.get('format') if isinstance(meta, dict) else meta!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path!r} is gpumlp file version {meta.get('version')!r}; this gpumlp reads version {VERSION}")
    odd = [f"{k} ({a.dtype})" for k, a in arrays.items() if not k.startswith("__") and a.dtype.kind != "f"]
    if odd:
        raise ValueError(f"{path!r} holds non-float arrays where weights belong: {', '.join(odd)}")
    return meta, arrays


def load(path: "str | os.PathLike[str]", backend: str = "auto") -> MLP:
    """Read a model written by :meth:`MLP.save` onto ``backend``."""
    backend = get_backend(backend)
    meta, arrays = read_npz(path)
    try:
        model = MLP(
            meta["sizes"], hidden_activation=meta["hidden_activation"], output_activation=meta["output_activation"],
            dtype=meta["dtype"], backend=backend, seed=meta["seed"],
        )
        weights = [(arrays[f"W{i}"], arrays[f"b{i}"]) for i in range(len(model.layers))]
        model.set_weights(weights)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{os.fspath(path)!r} holds an inconsistent gpumlp model: {exc}") from None
    return model
