"""Shared pieces of the training benchmarks: configurations, data, the GEMM floor, timing, tables.

Everything that touches arrays takes the array module ``xp`` (NumPy or CuPy) and a ``sync``
callable, so bench_train.py (CPU) and a GPU benchmark measure the same things the same way.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclass(frozen=True)
class Config:
    """One benchmark problem: layer sizes, minibatch size, samples in one epoch."""

    name: str
    sizes: tuple[int, ...]
    batch_size: int
    n_samples: int

    @property
    def n_classes(self) -> int:
        return self.sizes[-1]

    @property
    def n_steps(self) -> int:
        return math.ceil(self.n_samples / self.batch_size)

    def scaled(self, n_samples: int) -> Config:
        """The same network and batch on fewer samples (for --quick)."""
        return Config(self.name, self.sizes, self.batch_size, n_samples)


CONFIGS: dict[str, Config] = {
    "mnist": Config("mnist", (784, 256, 256, 10), 128, 60000),
    "wide": Config("wide", (1024, 2048, 2048, 10), 512, 16384),
    "tiny": Config("tiny", (2, 16, 2), 4, 4000),
}

# --quick: same networks and batches, fewer samples, so a smoke run takes seconds.
QUICK_SAMPLES = {"mnist": 6400, "wide": 2048, "tiny": 1000}


def choose(text: str, known: Sequence[str], what: str) -> list[str]:
    """The comma-separated names in ``text``; exits with a message naming ``what`` for an unknown one."""
    names = [n for n in text.split(",") if n]
    for n in names:
        if n not in known:
            raise SystemExit(f"unknown {what} {n!r}; choose from {', '.join(known)}")
    return names


def make_data(cfg: Config, seed: int = 0, dtype: str = "float32"):
    """Random inputs (standard normal, ``dtype``) and int64 labels, from a fixed seed, on the host."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((cfg.n_samples, cfg.sizes[0]), dtype=np.dtype(dtype))
    y = rng.integers(0, cfg.n_classes, size=cfg.n_samples, dtype=np.int64)
    return X, y


def gpumlp_model(cfg: Config, ops, seed: int = 0):
    """The benchmarks' gpumlp network for ``cfg``: relu hidden, softmax output, float32, NumPy with ``ops``."""
    import gpumlp as gm
    from gpumlp.backends import Backend

    return gm.MLP(
        list(cfg.sizes),
        hidden_activation="relu",
        output_activation="softmax",
        dtype="float32",
        backend=Backend(np, ops),
        seed=seed,
    )


def batch_sizes(n_samples: int, batch_size: int) -> list[int]:
    """Sizes of the minibatches of one epoch: full batches, then the remainder if any."""
    full, rest = divmod(n_samples, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def gemm_floor(cfg: Config, xp=np, dtype: str = "float32", seed: int = 0) -> Callable[[], None]:
    """Return run_epoch(): only the matrix multiplies one epoch of training needs, into
    preallocated ``out=`` buffers.

    Per step and layer l: forward Z_l = Z_{l-1} W_l, weight gradient dW_l = Z_{l-1}ᵀ D_l, and for
    l > 1 the back-propagated delta D_l W_lᵀ (3L - 1 GEMMs). Batch sizes follow the epoch exactly
    (full batches and the remainder). No bias, activation, loss, gather or update: this is the
    floor that every implementation is measured against.
    """
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    sizes = cfg.sizes

    def arr(*shape):
        return xp.asarray(rng.standard_normal(shape, dtype=dt))

    W = [arr(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    dW = [xp.empty_like(w) for w in W]
    plans = []
    for B in sorted(set(batch_sizes(cfg.n_samples, cfg.batch_size)), reverse=True):
        Z = [arr(B, n) for n in sizes]  # Z[0] is the input batch
        D = [None] + [arr(B, n) for n in sizes[1:]]  # D[l] = dE/dA_l, (B, n_l)
        dZ = [None] + [xp.empty((B, n), dtype=dt) for n in sizes[1:-1]]
        plans.append((B, Z, D, dZ))
    by_size = {B: (Z, D, dZ) for B, Z, D, dZ in plans}
    schedule = [by_size[B] for B in batch_sizes(cfg.n_samples, cfg.batch_size)]
    matmul = xp.matmul
    L = len(W)

    def run_epoch():
        for Z, D, dZ in schedule:
            for l in range(L):
                matmul(Z[l], W[l], out=Z[l + 1])
            for l in range(L, 0, -1):
                matmul(Z[l - 1].T, D[l], out=dW[l - 1])
                if l > 1:
                    matmul(D[l], W[l - 1].T, out=dZ[l - 1])

    return run_epoch


def gemm_flops_per_epoch(cfg: Config) -> float:
    """Floating-point operations of the floor's GEMMs in one epoch (2 per multiply-add)."""
    pairs = list(zip(cfg.sizes[:-1], cfg.sizes[1:]))
    per_sample = sum(3 * a * b for a, b in pairs) - pairs[0][0] * pairs[0][1]
    return 2.0 * per_sample * cfg.n_samples


def param_bytes(sizes: Sequence[int], itemsize: int) -> int:
    """Bytes of all weights and biases."""
    return itemsize * sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def activation_bytes(sizes: Sequence[int], batch: int, itemsize: int) -> int:
    """Bytes of one batch of activations, input batch included: B * sum(n_l) items."""
    return itemsize * batch * sum(sizes)


def time_interleaved(
    fns: dict[str, Callable[[], None]],
    repeats: int,
    warmup: int = 1,
    sync: Callable[[], None] = lambda: None,
    log=None,
    pause: float = 0.0,
) -> dict[str, list[float]]:
    """Time each callable ``repeats`` times after ``warmup`` untimed calls, round-robin, so that
    drift in machine speed (turbo, neighbours) hits every implementation alike. Seconds per call.

    ``pause`` seconds of sleep before each call let the previous library's idle worker threads
    (OpenBLAS, OpenMP spin-wait for a while after their last job) go to sleep first.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            if pause:
                time.sleep(pause)
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(dt)
            if log is not None:
                tag = "warmup" if r < warmup else f"run {r - warmup + 1}/{repeats}"
                log(f"  {name:<8} {tag:<10} {dt:9.4f} s")
    return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def rss_kib(field: str = "VmRSS") -> int:
    """This process's resident set size (or its peak, field='VmHWM') in KiB, from /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs 5). False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def blas_info() -> list[dict]:
    """The BLAS / OpenMP libraries loaded in this process, as threadpoolctl sees them."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl not installed"}]
    return threadpool_info()


def describe_blas(info: list[dict]) -> list[str]:
    """One line per loaded library: api, implementation, version, kernel (architecture), threads."""
    lines = []
    for d in info:
        if "error" in d:
            lines.append(d["error"])
            continue
        lines.append(
            f"{d.get('user_api')}: {d.get('internal_api')} {d.get('version')} "
            f"kernel={d.get('architecture', '-')} threads={d.get('num_threads')} "
            f"({os.path.basename(d.get('filepath', ''))})"
        )
    return lines


def format_table(rows: list[dict]) -> str:
    """Markdown table of benchmark rows (keys: config, impl, samples_per_s, ratio, epoch_s,
    runs, note, and best_s or times_s): samples/s and the ratio come from the median epoch."""
    head = (
        "| config | implementation | samples/s | vs floor | epoch s (median) | best | runs | note |\n"
        "|---|---|---:|---:|---:|---:|---:|---|"
    )
    out = [head]
    for r in rows:
        if r.get("samples_per_s") is None:
            out.append(f"| {r['config']} | {r['impl']} | - | - | - | - | - | {r.get('note', '')} |")
            continue
        out.append(
            f"| {r['config']} | {r['impl']} | {r['samples_per_s']:,.0f} | {r['ratio']:.3f} | "
            f"{r['epoch_s']:.4f} | {r.get('best_s', min(r['times_s'])):.4f} | {r['runs']} | {r.get('note', '')} |"
        )
    return "\n".join(out)
