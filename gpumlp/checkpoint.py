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

from .modelfile import decode_json, encode_meta, read_npz
from .network import model_meta, save

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
    """A path a checkpoint can be written to: its directory exists and it is not a directory."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or os.PathLike); got {type(path).__name__}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        example = os.path.join(path, "ckpt.npz")
        raise ValueError(f"{name}={path!r} is a directory; expected a file path such as {example!r}")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{name}={path!r}: directory {directory!r} does not exist")
    return path


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


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; a clear ValueError for anything else."""
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
        opt = record["optimizer"]
        state = {k: [arrays[f"opt.{k}.{i}"] for i in range(int(n))] for k, n in opt["state"].items()}
        es = record["early_stopping"]
        best = [arrays[f"best.{i}"] for i in range(int(es["n_best"]))] or None
        rng = record["rng"]
        if not isinstance(rng, dict) or rng.get("bit_generator") not in _BIT_GENERATORS:
            kind = rng.get("bit_generator") if isinstance(rng, dict) else rng
            raise ValueError(f"unknown RNG bit generator {kind!r}")
        np.random.Generator(getattr(np.random, rng["bit_generator"])()).bit_generator.state = rng  # validates it
        history = {str(k): [float(v) for v in vs] for k, vs in record["history"].items()}
        return Checkpoint(
            path=path,
            epoch=int(record["epoch"]),
            meta=meta,
            weights=weights,
            optimizer={"name": str(opt["name"]), "hyper": dict(opt["hyper"]), "t": int(opt["t"]), "state": state},
            rng_state=rng,
            history=history,
            config=dict(record["config"]),
            best_loss=None if es["best"] is None else float(es["best"]),
            waited=int(es["waited"]),
            best_weights=best,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path!r} holds an inconsistent gpumlp checkpoint: {exc}") from None


def restore_rng(model: MLP, state: dict[str, Any]) -> None:
    """Set ``model.rng`` to the bit-generator ``state`` (in place when the generator kind matches)."""
    if model.rng.bit_generator.state["bit_generator"] != state["bit_generator"]:
        model.rng = np.random.Generator(getattr(np.random, state["bit_generator"])())
    model.rng.bit_generator.state = state


def apply_checkpoint(ck: Checkpoint, model: MLP, optimizer: Optimizer, config: dict[str, Any] | None = None) -> None:
    """Load ``ck``'s weights, optimizer state and RNG state into ``model`` and ``optimizer``.

    The architecture and dtype must match (ValueError otherwise). The optimizer must be the
    same kind; differing hyperparameters (a lower lr after a divergence, say) or fit settings
    are allowed with a warning, since the run will then not match an unbroken one.
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
    shapes = [tuple(p.shape) for p in model.params]
    kept = {k: v for k, v in sd["state"].items() if k in optimizer.state_names}
    for k, arrays in kept.items():
        if [a.shape for a in arrays] != shapes:
            raise ValueError(f"resume={ck.path!r}: optimizer state {k!r} does not match the model's parameter shapes")
    model.set_weights(ck.weights)
    optimizer.load_state_dict({"name": sd["name"], "t": sd["t"], "state": kept}, model.params, model.backend)
    restore_rng(model, ck.rng_state)
