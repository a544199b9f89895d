"""Where one gpumlp training epoch spends its time: GEMMs against everything else.

Times every Ops kernel (and fit's input validation) inside ``model.fit(..., epochs=1)`` on
the benchmark configurations of bench_train.py, by wrapping them with a clock (about 0.3 µs
a call), and compares the GEMMs with the GEMM floor. For a sampling profile of the same loop:

    py-spy record -r 500 -o mnist.svg -- python benchmarks/profile_train.py mnist --epochs 10

Usage: python benchmarks/profile_train.py [mnist|wide|tiny] [--epochs N] [--ops numpy|numba]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

for _name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # as bench_train.py does, before numpy loads
    os.environ.pop(_name, None)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
import numpy as np  # noqa: E402

from gpumlp import validation  # noqa: E402
from gpumlp.backends import NumpyOps, _blas, numba_ops  # noqa: E402

KERNELS = (
    "affine_activate",
    "gemm",
    "gemm_update",
    "backprop_activation",
    "output_delta",
    "loss_sum",
    "sum_rows",
    "take_rows",
    "add_scaled",
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", default="mnist", choices=sorted(common.CONFIGS))
    p.add_argument("--epochs", type=int, default=4, help="timed fit(epochs=1) calls (default 4)")
    p.add_argument("--ops", choices=("numpy", "numba"), default="numba", help="NumpyOps, or NumbaOps with its kernels")
    args = p.parse_args()
    cfg = common.CONFIGS[args.config]
    X, y = common.make_data(cfg)
    if args.ops == "numba" and numba_ops.load_kernels() is None:
        raise SystemExit(f"--ops numba: {numba_ops.jit_info()}")
    ops = numba_ops.NumbaOps(np) if args.ops == "numba" else NumpyOps(np)
    model = common.gpumlp_model(cfg, ops, 0)

    spent: dict[str, float] = collections.defaultdict(float)

    def clocked(label, f):
        def run(*a, **k):
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                spent[label] += time.perf_counter() - t0

        return run

    for name in KERNELS:
        setattr(model.ops, name, clocked(name, getattr(model.ops, name)))
    validation_all_finite = validation.all_finite
    validation.all_finite = clocked("fit: input validation (all_finite)", validation_all_finite)
    gemm_into = _blas._call
    _blas._call = clocked("  of which BLAS calls", gemm_into)
    matmul = np.matmul

    class _Clocked:  # the namespace NumpyOps calls, with matmul on the clock
        def __getattr__(self, name):
            return getattr(np, name)

    _Clocked.matmul = staticmethod(clocked("  of which numpy.matmul", matmul))
    model.ops.xp = _Clocked()

    def fit():
        model.fit(
            X, y, loss="cross_entropy", optimizer="sgd", lr=0.01, epochs=1, batch_size=cfg.batch_size, compiled=False
        )

    floor = common.gemm_floor(cfg)
    fit(), floor()
    spent.clear()
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        fit()
    total = (time.perf_counter() - t0) / args.epochs
    floor_s = min(_timed(floor) for _ in range(args.epochs))
    per = {k: v / args.epochs for k, v in spent.items()}
    gemm_s = per.get("  of which numpy.matmul", 0.0) + per.get("  of which BLAS calls", 0.0)
    print(
        f"{cfg.name}: {'-'.join(map(str, cfg.sizes))}, batch {cfg.batch_size}, {cfg.n_samples} samples, "
        f"{cfg.n_steps} steps; {type(ops).__name__}; BLAS threads: {_threads()}"
    )
    print(f"fit(epochs=1): {total:.4f} s; GEMM floor {floor_s:.4f} s (ratio {floor_s / total:.3f})")
    print(
        f"GEMMs inside fit {gemm_s:.4f} s ({100 * gemm_s / total:.1f}%), everything else "
        f"{total - gemm_s:.4f} s = {1e6 * (total - gemm_s) / cfg.n_steps:.0f} µs a step"
    )
    print("seconds per epoch by kernel (a kernel's time includes its GEMM, if any):")
    for k, v in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"  {k:38s} {v:8.4f}  {100 * v / total:5.1f}%")
    return 0


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _threads() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "?"
    return ", ".join(f"{d['internal_api']} {d['num_threads']}" for d in threadpool_info() if d["user_api"] == "blas")


if __name__ == "__main__":
    sys.exit(main())
