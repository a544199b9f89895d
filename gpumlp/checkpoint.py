"""Training checkpoints: model, optimizer state, shuffling RNG, epoch and history in one atomic file.

A checkpoint is a gpumlp model file (so :func:`gpumlp.load` reads it as a model) with extra
arrays: the optimizer's state (``opt.<name>.<i>``), early stopping's best weights
(``best.<i>``) and a JSON record (``__checkpoint__``) of the epoch, the history, the optimizer's
name, hyperparameters and step count, the RNG's bit-generator state and the fit settings.
Files are written through :func:`gpumlp.network.save` (an atomic write), so a crash at any moment
leaves the previous checkpoint intact. ``fit(resume=path)`` restores all of it and continues exactly
where the checkpointed run was (bit for bit on NumPy).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._files import check_output_path
from .modelfile import decode_json, encode_meta, read_npz
from .network import model_meta, save
from .validation import all_finite

if TYPE_CHECKING:
    from .network import MLP
    from .optimizers import Optimizer

CHECKPOINT_VERSION = 1
_KEY = "__checkpoint__"
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")  # numpy's; restored by name


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read: everything needed to continue a run."""

    path: str
    epoch: int
    meta: dict[str, Any]
    weights: list[tuple[np.ndarray, np.ndarray]]
    optimizer: dict[str, Any]  # in Optimizer.state_dict() form, arrays as NumPy
    rng_state: dict[str, Any]
    history: dict[str, list[float]]
    config: dict[str, Any] = field(default_factory=dict)
    best_loss: float | None = None  # early stopping: best monitored loss so far
    waited: int = 0  # early stopping: epochs since it improved
    best_weights: list[np.ndarray] | None = None  # flat [W_1, b_1, ...] at the best epoch


def check_checkpoint_path(path: Any, name: str = "checkpoint") -> str:
    """A path a checkpoint can be written to, checked before training (see
    :func:`gpumlp._files.check_output_path`: directory exists and is writable, file name not too
    long, not a directory, device node, FIFO or read-only file)."""
    return check_output_path(path, name)


def _rng_json(state: dict[str, Any]) -> dict[str, Any]:
    """A bit-generator state with its NumPy arrays and integers as JSON-ready Python values."""
    return json.loads(json.dumps(state, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def save_checkpoint(
    path: str | os.PathLike[str],
    model: MLP,
    optimizer: Optimizer,
    epoch: int,
    history: dict[str, list[float]],
    *,
    config: dict[str, Any] | None = None,
    best_loss: float | None = None,
    waited: int = 0,
    best_weights: list[Any] | None = None,
) -> None:
    """Write ``model``, ``optimizer`` state, ``model.rng`` state, ``epoch`` and ``history`` to ``path`` atomically."""
    sd = optimizer.state_dict()
    record = {
        "version": CHECKPOINT_VERSION,
        "epoch": int(epoch),
        "history": {k: [float(v) for v in vs] for k, vs in history.items()},
        "optimizer": {
            "name": sd["name"],
            "hyper": sd["hyper"],
            "t": int(sd["t"]),
            "state": {k: len(v) for k, v in sd["state"].items()},
        },
        "rng": _rng_json(model.rng.bit_generator.state),
        "config": dict(config or {}),
        "early_stopping": {
            "best": None if best_loss is None or not math.isfinite(best_loss) else float(best_loss),
            "waited": int(waited),
            "n_best": 0 if best_weights is None else len(best_weights),
        },
    }
    arrays = {_KEY: encode_meta(record)}
    for k, state in sd["state"].items():
        for i, a in enumerate(state):
            arrays[f"opt.{k}.{i}"] = a
    for i, a in enumerate(best_weights or ()):
        arrays[f"best.{i}"] = np.array(model.backend.to_numpy(a))
    save(model, path, extra=arrays)


def _whole(record: dict[str, Any], key: str, field: str, lo: int = 0, hi: int | None = None) -> int:
    """``record[key]``: a JSON integer in [lo, hi]; a ValueError naming ``field`` otherwise."""
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"field {field!r} must be a whole number {bound}; got {value!r}")
    return value


_U32, _U64, _U128 = 2**32 - 1, 2**64 - 1, 2**128 - 1
_RNG_FIELDS = {  # bit generator: {field: (bound, length of the list or None for a number)}
    "PCG64": {
        "state.state": (_U128, None),
        "state.inc": (_U128, None),
        "has_uint32": (1, None),
        "uinteger": (_U32, None),
    },
    "Philox": {
        "state.counter": (_U64, 4),
        "state.key": (_U64, 2),
        "buffer": (_U64, 4),
        "buffer_pos": (4, None),
        "has_uint32": (1, None),
        "uinteger": (_U32, None),
    },
    "SFC64": {"state.state": (_U64, 4), "has_uint32": (1, None), "uinteger": (_U32, None)},
    "MT19937": {"state.key": (_U32, 624), "state.pos": (624, None)},
}
_RNG_FIELDS["PCG64DXSM"] = _RNG_FIELDS["PCG64"]


def _check_rng(rng: Any) -> dict[str, Any]:
    """The stored bit-generator state, every number checked against its generator's range."""
    if not isinstance(rng, dict) or rng.get("bit_generator") not in _RNG_FIELDS:
        kind = rng.get("bit_generator") if isinstance(rng, dict) else rng
        raise ValueError(f"field 'rng' holds an unknown RNG bit generator {kind!r}; expected one of {_BIT_GENERATORS}")
    for name, (bound, length) in _RNG_FIELDS[rng["bit_generator"]].items():
        parent, key = (rng["state"], name[6:]) if name.startswith("state.") else (rng, name)
        if not isinstance(parent, dict) or key not in parent:
            raise ValueError(f"field 'rng.{name}' is missing")
        values = parent[key] if length is not None else [parent[key]]
        if length is not None and (not isinstance(values, list) or len(values) != length):
            raise ValueError(f"field 'rng.{name}' must be a list of {length} numbers")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= bound:
                raise ValueError(f"field 'rng.{name}' must hold whole numbers in [0, {bound}]; got {v!r}")
    state = json.loads(json.dumps(rng))  # numpy takes lists where it gives arrays
    np.random.Generator(getattr(np.random, rng["bit_generator"])()).bit_generator.state = state
    return state


def _check_finite(arrays: dict[str, np.ndarray], names: list[str]) -> None:
    for name in names:
        if not all_finite(arrays[name]):
            raise ValueError(f"array {name!r} contains NaN or infinite values")


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; a clear ValueError for anything else.

    Every array it restores is checked (shapes against the stored layer sizes, finite values) and
    every counter and the RNG state against its range, before anything is returned.

    Raises
    ------
    FileNotFoundError
        When there is no file at ``path``.
    ValueError
        For a file that is not a consistent gpumlp checkpoint; the message names the file and the
        field or array at fault.
    """
    meta, arrays = read_npz(path)
    path = os.fspath(path)
    if _KEY not in arrays:
        raise ValueError(f"{path!r} is a gpumlp model file but not a training checkpoint (no checkpoint record)")
    record = decode_json(arrays.pop(_KEY), path, "checkpoint record")
    if not isinstance(record, dict) or record.get("version") != CHECKPOINT_VERSION:
        got = record.get("version") if isinstance(record, dict) else record
        raise ValueError(f"{path!r} is checkpoint version {got!r}; this gpumlp reads version {CHECKPOINT_VERSION}")
    try:
        n_layers = len(meta["sizes"]) - 1
        weights = [(arrays[f"W{i}"], arrays[f"b{i}"]) for i in range(n_layers)]
        _check_finite(arrays, [f"{w}{i}" for i in range(n_layers) for w in "Wb"])
        epoch = _whole(record, "epoch", "epoch")
        opt = record["optimizer"]
        counts = {k: _whole(opt["state"], k, f"optimizer.state.{k}", 2 * n_layers, 2 * n_layers) for k in opt["state"]}
        state = {k: [arrays[f"opt.{k}.{i}"] for i in range(n)] for k, n in counts.items()}
        _check_finite(arrays, [f"opt.{k}.{i}" for k, n in counts.items() for i in range(n)])
        es = record["early_stopping"]
        n_best = _whole(es, "n_best", "early_stopping.n_best", 0, 2 * n_layers)
        if n_best not in (0, 2 * n_layers):
            raise ValueError(f"field 'early_stopping.n_best' must be 0 or {2 * n_layers}; got {n_best}")
        _check_finite(arrays, [f"best.{i}" for i in range(n_best)])
        best = [arrays[f"best.{i}"] for i in range(n_best)] or None
        best_loss = es["best"]
        if best_loss is not None and (isinstance(best_loss, bool) or not isinstance(best_loss, (int, float))):
            raise ValueError(f"field 'early_stopping.best' must be a number or null; got {best_loss!r}")
        rng = _check_rng(record["rng"])
        history = {str(k): [float(v) for v in vs] for k, vs in record["history"].items()}
        for k, vs in history.items():
            if any(math.isnan(v) for v in vs):
                raise ValueError(f"field 'history.{k}' holds a NaN loss")
            if len(vs) > epoch:
                raise ValueError(f"field 'epoch' = {epoch} is behind field 'history.{k}', which holds {len(vs)} epochs")
        return Checkpoint(
            path=path,
            epoch=epoch,
            meta=meta,
            weights=weights,
            optimizer={
                "name": str(opt["name"]),
                "hyper": dict(opt["hyper"]),
                "t": _whole(opt, "t", "optimizer.t"),
                "state": state,
            },
            rng_state=rng,
            history=history,
            config=dict(record["config"]),
            best_loss=None if best_loss is None else float(best_loss),
            waited=_whole(es, "waited", "early_stopping.waited"),
            best_weights=best,
        )
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        missing = f"field {exc} is missing" if isinstance(exc, KeyError) else exc
        raise ValueError(f"{path!r} holds an inconsistent gpumlp checkpoint: {missing}") from None


def restore_rng(model: MLP, state: dict[str, Any]) -> None:
    """Set ``model.rng`` to the bit-generator ``state`` (in place when the generator kind matches)."""
    if model.rng.bit_generator.state["bit_generator"] != state["bit_generator"]:
        model.rng = np.random.Generator(getattr(np.random, state["bit_generator"])())
    model.rng.bit_generator.state = state


def check_resume(ck: Checkpoint, model: MLP, optimizer: Optimizer, config: dict[str, Any] | None = None) -> None:
    """Check that ``ck`` can be applied to ``model`` and ``optimizer``, changing neither.

    The architecture and dtype must match (ValueError otherwise), and so must the optimizer's
    kind; differing hyperparameters (a lower lr after a divergence, say) or fit settings are
    allowed with a warning, since the run will then not match an unbroken one.
    """
    mine = model_meta(model)
    for key in ("sizes", "hidden_activation", "output_activation", "dtype"):
        if ck.meta.get(key) != mine[key]:
            raise ValueError(
                f"resume={ck.path!r} holds a model with {key}={ck.meta.get(key)!r}, but this model has "
                f"{key}={mine[key]!r}; resume into a model built with the same sizes, activations and dtype"
            )
    sd = ck.optimizer
    if sd["name"] != optimizer.name:
        raise ValueError(
            f"resume={ck.path!r} was written with optimizer={sd['name']!r}; resume with the same optimizer "
            f"(got {optimizer.name!r})"
        )
    shapes = [tuple(p.shape) for p in model.params]
    for k, arrays in sd["state"].items():
        if k in optimizer.state_names and [a.shape for a in arrays] != shapes:
            raise ValueError(f"resume={ck.path!r}: optimizer state {k!r} does not match the model's parameter shapes")
    changed = [
        f"{k}={v!r} (checkpoint: {sd['hyper'].get(k)!r})"
        for k, v in optimizer.hyper().items()
        if sd["hyper"].get(k) != v
    ]
    changed += [
        f"{k}={v!r} (checkpoint: {ck.config.get(k)!r})"
        for k, v in (config or {}).items()
        if k in ck.config and ck.config[k] != v
    ]
    if changed:
        warnings.warn(
            f"resuming {ck.path!r} with different settings: {', '.join(changed)}; "
            "the run will not match an unbroken one",
            UserWarning,
            stacklevel=3,
        )


def apply_checkpoint(
    ck: Checkpoint, model: MLP, optimizer: Optimizer, config: dict[str, Any] | None = None, checked: bool = False
) -> None:
    """Load ``ck``'s weights, optimizer state and RNG state into ``model`` and ``optimizer``.

    Checked first with :func:`check_resume` (skipped when ``checked``: the caller did it), so a
    refused checkpoint changes nothing.
    """
    if not checked:
        check_resume(ck, model, optimizer, config)
    sd = ck.optimizer
    kept = {k: v for k, v in sd["state"].items() if k in optimizer.state_names}
    model.set_weights(ck.weights)
    optimizer.load_state_dict({"name": sd["name"], "t": sd["t"], "state": kept}, model.params, model.backend)
    restore_rng(model, ck.rng_state)
