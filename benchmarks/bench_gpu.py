"""GPU training benchmark: one epoch, float32, plain SGD (lr 0.01), softmax + cross-entropy, on CUDA.

For each configuration (common.CONFIGS plus ``big``) it times:
  floor          only the matrix multiplies one epoch needs: cupy.matmul into preallocated out=
                 buffers (cuBLAS), synchronised at the end of the epoch
  gpumlp         gpumlp.MLP(backend="cupy").fit on device-resident X and y, eager steps
  gpumlp-graph   the same with fit(cuda_graph=True): each step replayed from a CUDA graph
  torch          PyTorch CUDA eager: nn.Sequential + CrossEntropyLoss + optim.SGD (optional)
and reports samples/s (median epoch), the ratio to the floor, and the achieved GEMM TFLOP/s
against the device's float32 GEMM peak measured here (an 8192³ cupy.matmul). gpumlp epochs
are the wall time between consecutive epoch-end callbacks of one fit with 1 + repeats
epochs (the first, which compiles kernels and captures graphs, is the warm-up), so every
per-epoch cost of fit counts. TF32 is off everywhere unless --tf32 adds the TF32 rows.

    python benchmarks/bench_gpu.py                          # full run
    python benchmarks/bench_gpu.py --quick                  # smoke run, seconds
    python benchmarks/bench_gpu.py --markdown BENCHMARKS.md # also write the GPU section there
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # common
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # gpumlp (checkout)

import common  # noqa: E402
import numpy as np  # noqa: E402
from common import CONFIGS, QUICK_SAMPLES, Config  # noqa: E402

GPU_CONFIGS = {**CONFIGS, "big": Config("big", (4096, 4096, 4096, 10), 1024, 16384)}
GPU_QUICK = {**QUICK_SAMPLES, "big": 4096}
IMPLS = ("floor", "torch", "gpumlp", "gpumlp-graph")  # the references first: they are the facts a short lease needs
LR = 0.01
MARK_BEGIN, MARK_END = "<!-- bench_gpu:begin -->", "<!-- bench_gpu:end -->"
# Issue targets (benchmark figures on an H100-class GPU, never asserted in tests).
TARGETS = [
    ("mnist", "gpumlp-graph", "torch", 2.0),
    ("wide", "gpumlp-graph", "floor", 0.8),
    ("big", "gpumlp-graph", "floor", 0.8),
    ("tiny", "gpumlp-graph", "torch", 5.0),
]


class Unavailable(Exception):
    """An implementation that cannot run here."""


def device_sync() -> None:
    import cupy

    cupy.cuda.runtime.deviceSynchronize()  # every stream, CuPy's and PyTorch's


class TF32:
    """Context: float32 matmuls of CuPy (and PyTorch) may use TF32 inside it."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def __enter__(self) -> TF32:
        if self.on:
            import cupy

            linalg = cupy._core._routines_linalg
            self.before = linalg.get_compute_type(np.float32)
            linalg.set_compute_type(np.float32, linalg.COMPUTE_TYPE_TF32)
        return self

    def __exit__(self, *exc) -> None:
        if self.on:
            import cupy

            cupy._core._routines_linalg.set_compute_type(np.float32, self.before)


def sgemm_peak(tf32: bool = False, n: int = 8192, repeats: int = 5) -> float:
    """Measured float32 GEMM throughput in TFLOP/s (median of ``repeats`` n³ products)."""
    import cupy

    a = cupy.random.standard_normal((n, n), dtype=cupy.float32)
    b = cupy.random.standard_normal((n, n), dtype=cupy.float32)
    c = cupy.empty((n, n), dtype=cupy.float32)
    times = []
    with TF32(tf32):
        for r in range(repeats + 1):
            device_sync()
            t0 = time.perf_counter()
            cupy.matmul(a, b, out=c)
            device_sync()
            if r:
                times.append(time.perf_counter() - t0)
    del a, b, c
    return 2.0 * n**3 / common.median(times) / 1e12


# --------------------------------------------------------------------------- implementations
# timed(cfg, X, y, repeats, tf32) -> (epoch seconds list, note)


def timed_floor(cfg: Config, X, y, repeats: int, tf32: bool):
    import cupy

    run_epoch = common.gemm_floor(cfg, cupy, "float32")
    with TF32(tf32):
        times = common.time_interleaved({"floor": run_epoch}, repeats, warmup=1, sync=device_sync)["floor"]
    return times, "cupy.matmul(out=) only (cuBLAS)"


def _timed_gpumlp(cfg: Config, X, y, repeats: int, tf32: bool, cuda_graph: bool):
    import cupy

    import gpumlp as gm

    model = gm.MLP(
        list(cfg.sizes), hidden_activation="relu", output_activation="softmax", dtype="float32", backend="cupy", seed=0
    )
    Xd, yd = cupy.asarray(X), cupy.asarray(y)
    stamps: list[float] = []

    def stamp(model, epoch, logs):
        stamps.append(time.perf_counter())  # each epoch ends reading its loss: the device is idle here

    device_sync()
    stamps.append(time.perf_counter())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        model.fit(
            Xd,
            yd,
            loss="cross_entropy",
            optimizer="sgd",
            lr=LR,
            epochs=1 + repeats,
            batch_size=cfg.batch_size,
            shuffle=True,
            seed=0,
            callbacks=[stamp],
            cuda_graph=cuda_graph,
            allow_tf32=tf32,
        )
    times = list(np.diff(stamps))[1:]  # the first epoch compiles kernels and captures graphs
    failed = [str(w.message) for w in caught if "CUDA graph" in str(w.message)]  # a capture that failed warns
    captured = (not failed) if cuda_graph else None
    note = f"gpumlp {gm.__version__}, fit on device arrays" + (", CUDA graphs" if cuda_graph else "")
    return times, note + (f"; NOT captured: {failed[0]}" if failed else ""), captured


def timed_gpumlp(cfg, X, y, repeats, tf32):
    return _timed_gpumlp(cfg, X, y, repeats, tf32, cuda_graph=False)


def timed_gpumlp_graph(cfg, X, y, repeats, tf32):
    return _timed_gpumlp(cfg, X, y, repeats, tf32, cuda_graph=True)


def timed_torch(cfg: Config, X, y, repeats: int, tf32: bool):
    try:
        import torch
        from torch import nn
    except ImportError as e:
        raise Unavailable("torch not installed") from e
    if not torch.cuda.is_available():
        raise Unavailable(f"torch {torch.__version__} has no CUDA")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    dev = torch.device("cuda")
    torch.manual_seed(0)
    layers = []
    pairs = list(zip(cfg.sizes[:-1], cfg.sizes[1:]))
    for i, (a, b) in enumerate(pairs):
        layers.append(nn.Linear(a, b))
        if i < len(pairs) - 1:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers).to(dev)
    criterion = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    Xt, yt = torch.from_numpy(X).to(dev), torch.from_numpy(y).to(dev)
    n, B = cfg.n_samples, cfg.batch_size
    gen = torch.Generator().manual_seed(0)

    def run_epoch():
        perm = torch.randperm(n, generator=gen).to(dev)  # drawn on the host, uploaded once, like gpumlp
        total = torch.zeros((), device=dev)
        for start in range(0, n, B):
            idx = perm[start : start + B]
            opt.zero_grad(set_to_none=True)
            loss = criterion(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.detach() * idx.shape[0]
        total.item()  # the epoch loss, read once

    times = common.time_interleaved({"torch": run_epoch}, repeats, warmup=1, sync=device_sync)["torch"]
    torch.backends.cuda.matmul.allow_tf32 = False
    return times, f"torch {torch.__version__} CUDA eager"


TIMED = {"floor": timed_floor, "gpumlp": timed_gpumlp, "gpumlp-graph": timed_gpumlp_graph, "torch": timed_torch}


# --------------------------------------------------------------------------- driver


def device_lines() -> list[str]:
    import gpumlp as gm

    info = gm.backend_info("cupy")
    lines = [
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"device: {info.get('device')} (compute capability {info.get('compute_capability')}, "
        f"{info.get('memory_total_gib')} GiB), CUDA runtime {info.get('cuda_runtime')}, CuPy {info.get('cupy')}",
        f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; "
        f"python {platform.python_version()}, numpy {np.__version__}",
    ]
    try:
        import torch

        lines.append(f"torch {torch.__version__} (CUDA {torch.version.cuda})")
    except ImportError:
        lines.append("torch: not installed")
    return lines


def run_config(cfg: Config, impls, repeats: int, tf32: bool, verbose: bool) -> list[dict]:
    X, y = common.make_data(cfg, 0)
    rows, times = [], {}
    for impl in impls:
        try:
            ts, note, *captured = TIMED[impl](cfg, X, y, repeats, tf32)
        except Unavailable as e:
            rows.append({"config": cfg.name, "impl": impl, "samples_per_s": None, "note": str(e)})
            continue
        times[impl] = ts
        row = {"config": cfg.name, "impl": impl, "epoch_s": common.median(ts), "times_s": ts, "note": note}
        rows.append({**row, "captured": captured[0] if captured else None})
        if verbose:
            print(f"  {impl:<13} " + " ".join(f"{t:.4f}" for t in ts), flush=True)
    floor_s = common.median(times["floor"]) if "floor" in times else None
    flops = common.gemm_flops_per_epoch(cfg)
    for r in rows:
        if r.get("epoch_s"):
            r.update(
                samples_per_s=cfg.n_samples / r["epoch_s"],
                runs=len(r["times_s"]),
                ratio=floor_s / r["epoch_s"] if floor_s else float("nan"),
                gemm_tflops=flops / r["epoch_s"] / 1e12,
            )
            r["note"] += f"; {r['gemm_tflops']:.2f} GEMM TFLOP/s"
            if tf32:
                r["impl"] += " tf32"
    return rows


def target_lines(rows: list[dict]) -> list[str]:
    get = {(r["config"], r["impl"]): r for r in rows if r.get("samples_per_s")}
    out = []
    for cfg, impl, ref, goal in TARGETS:
        a, b = get.get((cfg, impl)), get.get((cfg, ref))
        if a and b:
            value = a["samples_per_s"] / b["samples_per_s"]
            out.append(
                f"{cfg:<5} {impl} / {ref}: {value:.2f} (target >= {goal}) {'met' if value >= goal else 'MISSED'}"
            )
    return out


def captured_table(rows: list[dict]) -> str:
    """common.format_table with a "captured" column: whether the graph rows really ran on CUDA graphs."""
    lines = common.format_table(rows).split("\n")
    marks = {True: "yes", False: "**no**", None: "-"}
    out = [lines[0] + " captured |", lines[1] + "---|"]
    out += [line + f" {marks[r.get('captured')]} |" for line, r in zip(lines[2:], rows)]
    return "\n".join(out)


def write_markdown(path: str, text: str) -> None:
    """Put ``text`` between the bench_gpu markers of ``path`` (appended when the markers are missing)."""
    block = f"{MARK_BEGIN}\n{text.rstrip()}\n{MARK_END}\n"
    old = open(path).read() if os.path.exists(path) else ""
    pattern = re.compile(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END) + "\n?", re.S)
    new = pattern.sub(lambda m: block, old) if pattern.search(old) else (old.rstrip() + "\n\n" if old else "") + block
    with open(path, "w") as f:
        f.write(new)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default=",".join(GPU_CONFIGS), help="comma list of " + ", ".join(GPU_CONFIGS))
    p.add_argument("--impls", default=",".join(IMPLS), help="comma list of " + ", ".join(IMPLS))
    p.add_argument("--repeats", type=int, default=None, help="timed epochs each (default 5; --quick 2)")
    p.add_argument("--quick", action="store_true", help="fewer samples and repeats: a smoke run")
    p.add_argument("--tf32", action="store_true", help="also time every implementation with TF32 matmuls")
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the results section into this file (e.g. BENCHMARKS.md)")
    p.add_argument("--verbose", "-v", action="store_true", help="print every timed epoch")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import gpumlp as gm

    if not gm.has_gpu():
        print(f"bench_gpu: no usable GPU: {gm.backend_info('numpy').get('gpu')}", file=sys.stderr)
        return 2
    names = common.choose(args.configs, list(GPU_CONFIGS), "config")
    impls = common.choose(args.impls, list(IMPLS), "implementation")
    repeats = args.repeats or (2 if args.quick else 5)
    configs = [GPU_CONFIGS[c].scaled(GPU_QUICK[c]) if args.quick else GPU_CONFIGS[c] for c in names]

    header = device_lines()
    peak = sgemm_peak()
    header.append(f"float32 GEMM peak measured here (8192³ cupy.matmul, TF32 off): {peak:.1f} TFLOP/s")
    if args.tf32:
        header.append(f"with TF32: {sgemm_peak(tf32=True):.1f} TFLOP/s")
    print("\n".join(header), flush=True)

    rows: list[dict] = []
    for cfg in configs:
        print(
            f"\n== {cfg.name}: {'-'.join(map(str, cfg.sizes))}, batch {cfg.batch_size}, {cfg.n_samples} samples, "
            f"{cfg.n_steps} steps/epoch; median of {repeats} epochs after 1 warm-up",
            flush=True,
        )
        for tf32 in [False, True] if args.tf32 else [False]:
            cfg_rows = run_config(cfg, impls, repeats, tf32, args.verbose)
            for r in cfg_rows:
                if r.get("samples_per_s"):
                    print(
                        f"  {r['impl']:<18} {r['samples_per_s']:>13,.0f} samples/s  {r['ratio']:.3f} x floor  "
                        f"{r['gemm_tflops']:.2f} TFLOP/s ({r['gemm_tflops'] / peak:.0%} of peak)",
                        flush=True,
                    )
                else:
                    print(f"  {r['impl']:<18} skipped: {r['note']}", flush=True)
            rows.extend(cfg_rows)

    targets = target_lines(rows)
    cmd = "python benchmarks/bench_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join(
        [
            "## GPU training benchmark",
            "",
            f"`{cmd.strip()}`: one epoch, float32, SGD lr {LR}, softmax + cross-entropy; "
            "samples/s of the median epoch.",
            "",
            *[f"- {line}" for line in header],
            "",
            captured_table(rows),
            "",
            "GEMM TFLOP/s counts the floor's matrix products per epoch over each implementation's epoch time.",
            "",
            "Targets (benchmark figures, not asserted):",
            "",
            *[f"- {t}" for t in targets],
        ]
    )
    print("\n" + text)
    if args.markdown:
        write_markdown(args.markdown, text)
        print(f"\nwritten to {args.markdown}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"header": header, "peak_tflops": peak, "rows": rows, "targets": targets, "argv": sys.argv[1:]},
                f,
                indent=2,
                default=str,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
