"""Worker for tests/training/test_distributed.py, launched as ``mpiexec -n P python tests/distributed_worker.py OUT``.

Trains every case in CASES with ``comm="mpi"`` and writes this rank's weights and history to
OUT/rank<r>.npz. Ranks build their models from different seeds on purpose: fit must start
every rank from rank 0's weights and shuffling RNG. ``--fail RANK:EPOCH:HOW`` makes one rank
misbehave at the end of an epoch (HOW: raise, exit, hang) to test that the job stops.
The test imports this file for CASES and :func:`train` to make the single-process reference.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gpumlp as gm  # noqa: E402

SIZES = [6, 8, 5, 3]
# n is chosen so the last global batch is uneven: 101 = 10·10 + 1 (one rank gets no row of
# it), 103 = 6·16 + 7 (split 3 / 4).
CASES: dict[str, dict[str, Any]] = {
    "sgd_momentum_float64": dict(
        dtype="float64", n=101, fit=dict(optimizer="sgd", lr=0.1, momentum=0.9, l2=1e-3, batch_size=10)
    ),
    "adam_float64": dict(dtype="float64", n=103, fit=dict(optimizer="adam", lr=0.01, batch_size=16)),
    "sgd_momentum_float32": dict(
        dtype="float32", n=101, fit=dict(optimizer="sgd", lr=0.1, momentum=0.9, l2=1e-3, batch_size=10)
    ),
    "adam_float32": dict(dtype="float32", n=103, fit=dict(optimizer="adam", lr=0.01, batch_size=16)),
}
EPOCHS = 3


def data(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The same training and validation data on every rank (fixed seed)."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((n + 40, SIZES[0]))
    y = rng.integers(0, SIZES[-1], n + 40)
    return X[:n], y[:n], X[n:], y[n:]


def train(case: str, comm: Any = None, seed: int = 100, callbacks: tuple = ()) -> tuple[list, dict]:
    """Train ``case`` for EPOCHS epochs; returns (weights as NumPy pairs, history)."""
    spec = CASES[case]
    X, y, Xv, yv = data(spec["n"])
    model = gm.MLP(
        SIZES, hidden_activation="tanh", output_activation="softmax", dtype=spec["dtype"], backend="numpy", seed=seed
    )
    history = model.fit(
        X,
        y,
        epochs=EPOCHS,
        validation_data=(Xv, yv),
        early_stopping=True,
        patience=2,
        comm=comm,
        callbacks=callbacks,
        **spec["fit"],
    )
    return model.get_weights(), history


def misbehave(rank: int, epoch: int, how: str):
    """A callback that makes ``rank`` raise, exit or hang at the end of ``epoch``."""

    def cb(model: Any, e: int, logs: dict) -> None:
        if e != epoch or gm.distributed.init().rank != rank:
            return
        if how == "raise":
            raise RuntimeError(f"rank {rank} fails on purpose in epoch {e}")
        if how == "exit":
            os._exit(3)
        time.sleep(600)

    return cb


# Ranks that differ before training (issue 12 items 17, 18): rank 1 gets bad input or another setting;
# "resume": rank 0 alone resumes from a checkpoint. Every rank must stop with an error, none may hang.
HOSTILE = ("nan", "bad_resume", "clip_norm", "lr", "l2", "batch_size", "epochs", "threshold", "resume")


def hostile(kind: str, out: str) -> None:
    """Fit with ``comm="mpi"`` (no init first) where the ranks differ by ``kind``; each rank writes its
    outcome ("trained" or the error) to OUT/rank<r>.txt."""
    from mpi4py import MPI

    rank = MPI.COMM_WORLD.Get_rank()
    X, y, _, _ = data(41)
    kw: dict[str, Any] = dict(epochs=2, batch_size=8, optimizer="sgd", lr=0.1)
    odd = {"clip_norm": 1.0, "lr": 0.2, "l2": 1e-3, "batch_size": 9, "epochs": 3, "threshold": 10.0}
    if rank == 1 and kind == "nan":
        X = X.copy()
        X[3, 2] = np.nan
    elif rank == 1 and kind == "bad_resume":
        kw["resume"] = os.path.join(out, "no-such-checkpoint.npz")
    elif rank == 1 and kind in odd:
        kw["divergence_threshold" if kind == "threshold" else kind] = odd[kind]
    elif rank == 0 and kind == "resume":
        path = os.path.join(out, "ck.npz")
        gm.MLP(SIZES, hidden_activation="tanh", backend="numpy", seed=0).fit(
            X, y, **{**kw, "epochs": 1}, checkpoint=path
        )
        kw["resume"] = path
    model = gm.MLP(SIZES, hidden_activation="tanh", backend="numpy", seed=0)
    try:
        model.fit(X, y, comm="mpi", **kw)
        outcome = "trained"
    except (ValueError, TypeError, OSError) as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
        f.write(outcome)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--fail", help="RANK:EPOCH:HOW, HOW one of raise, exit, hang")
    parser.add_argument("--hostile", choices=HOSTILE, help="ranks that differ before training")
    args = parser.parse_args()
    if args.hostile:
        hostile(args.hostile, args.out)
        return
    group = gm.distributed.init("mpi")
    callbacks: tuple = ()
    if args.fail:
        rank, epoch, how = args.fail.split(":")
        callbacks = (misbehave(int(rank), int(epoch), how),)
    arrays: dict[str, np.ndarray] = {}
    for case in CASES:
        weights, history = train(case, comm=group, seed=100 + group.rank, callbacks=callbacks)
        for i, (W, b) in enumerate(weights):
            arrays[f"{case}/W{i}"], arrays[f"{case}/b{i}"] = W, b
        for key, values in history.items():
            arrays[f"{case}/{key}"] = np.array(values)
    np.savez(os.path.join(args.out, f"rank{group.rank}.npz"), **arrays)
    print(f"rank {group.rank} of {group.size}: done", flush=True)


if __name__ == "__main__":
    main()
