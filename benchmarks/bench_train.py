"""CPU training benchmark: one epoch, float32, plain SGD (lr 0.01), softmax + cross-entropy.

For each configuration (see common.CONFIGS) it times, in one run and round-robin:
  floor     only the matrix multiplies one epoch needs (numpy matmul into preallocated out=)
  gpumlp    gpumlp.MLP(...).fit(..., epochs=1, compiled=False) on plain NumpyOps (no numba)
  numba     the same on NumbaOps with its numba kernels loaded                  (optional: fast extra)
  compiled  fit(..., compiled=True): the whole epoch in one numba function; only where
            fit(compiled="auto") would choose it (batch x params <= 150000)   (optional: fast extra)
  jax-scan  JAX, the epoch as one jitted lax.scan (benchmarks/peers_jax.py)   (optional)
  jax-step  JAX, one jitted train step per batch                              (optional)
  torch     PyTorch CPU eager: nn.Sequential + CrossEntropyLoss + optim.SGD   (optional)
  sklearn   scikit-learn MLPClassifier.partial_fit, solver sgd, momentum 0    (optional)
and reports samples/s (median of the repeats) and the ratio to the floor. For `wide` it also
measures the peak RSS of one gpumlp (and torch) epoch in a fresh subprocess.

    python benchmarks/bench_train.py                 # full run (what BENCHMARKS.md shows)
    python benchmarks/bench_train.py --quick         # smoke run, a few seconds
    python benchmarks/bench_train.py --configs mnist,tiny --repeats 7 --json out.json

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, when set, are removed from this process's environment
before NumPy loads OpenBLAS (they pin an old kernel and slow a current numpy); the run says so.
Pass --keep-openblas-env to keep them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

# Before numpy (and so OpenBLAS) is imported: see the module docstring.
_REMOVED_ENV = {}
if "--keep-openblas-env" not in sys.argv:
    for _name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if _name in os.environ:
            _REMOVED_ENV[_name] = os.environ.pop(_name)
# scripts/bench.sh unsets them before starting Python and passes on what it removed.
for _item in filter(None, os.environ.pop("GPUMLP_BENCH_UNSET", "").split(";")):
    _REMOVED_ENV.setdefault(*_item.split("=", 1))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # common
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # gpumlp (checkout)

import common  # noqa: E402
import numpy as np  # noqa: E402
import peers_jax  # noqa: E402
from common import CONFIGS, QUICK_SAMPLES, Config  # noqa: E402

IMPLS = ("floor", "gpumlp", "numba", "compiled", "jax-scan", "jax-step", "torch", "sklearn")
LR = 0.01


class Unavailable(Exception):
    """An implementation that cannot run here (not installed, or failed to set up)."""


# --------------------------------------------------------------------------- implementations
# Each setup_* returns run_epoch() (one epoch over X, y) and a note for the table.


def setup_floor(cfg: Config, X, y, seed):
    return common.gemm_floor(cfg, np, "float32", seed), "matmul only, out= buffers"


def _gpumlp_model(cfg: Config, seed, ops_name: str):
    try:
        import gpumlp as gm
        from gpumlp.backends import numba_ops
        from gpumlp.backends.numpy_ops import NumpyOps
    except (ImportError, AttributeError) as e:
        raise Unavailable(f"gpumlp not importable: {e}") from e
    if ops_name == "NumpyOps":
        ops = NumpyOps(np)
    else:
        if numba_ops.load_kernels() is None:
            raise Unavailable(f"numba kernels unavailable: {numba_ops.jit_info()}")
        ops = numba_ops.NumbaOps(np)
    model = common.gpumlp_model(cfg, ops, seed)
    return gm, model


def _gpumlp_setup(ops_name: str, compiled: bool):
    def setup(cfg: Config, X, y, seed):
        gm, model = _gpumlp_model(cfg, seed, ops_name)
        if compiled:
            from gpumlp.training import compiled_epoch

            work = cfg.batch_size * compiled_epoch.n_params(model)
            if work > compiled_epoch.MAX_WORK:
                raise Unavailable(
                    f"not run: batch x params = {work:,} > {compiled_epoch.MAX_WORK:,}, auto never picks it"
                )

        def run_epoch():
            model.fit(
                X, y, loss="cross_entropy", optimizer="sgd", lr=LR, epochs=1, batch_size=cfg.batch_size, shuffle=True,
                compiled=compiled,
            )  # fmt: skip

        what = "compiled epoch" if compiled else ops_name
        return run_epoch, f"gpumlp {getattr(gm, '__version__', '?')}, numpy, {what}"

    return setup


def _jax_setup(fn):
    def setup(cfg: Config, X, y, seed):
        try:
            return fn(cfg, X, y, seed, LR)
        except peers_jax.Unavailable as e:
            raise Unavailable(str(e)) from e

    return setup


def setup_torch(cfg: Config, X, y, seed):
    try:
        import torch
        from torch import nn
    except ImportError as e:
        raise Unavailable("torch not installed (pip install torch, or the bench extra)") from e
    torch.manual_seed(seed)
    layers = []
    pairs = list(zip(cfg.sizes[:-1], cfg.sizes[1:]))
    for i, (a, b) in enumerate(pairs):
        layers.append(nn.Linear(a, b))
        if i < len(pairs) - 1:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    criterion = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    n, B = cfg.n_samples, cfg.batch_size
    gen = torch.Generator().manual_seed(seed)

    def run_epoch():
        perm = torch.randperm(n, generator=gen)
        total = torch.zeros(())
        for start in range(0, n, B):
            idx = perm[start : start + B]
            xb, yb = Xt[idx], yt[idx]
            opt.zero_grad(set_to_none=True)
            loss = criterion(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.detach() * idx.shape[0]  # epoch loss, read once (no per-step .item())
        total.item()

    return run_epoch, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def setup_sklearn(cfg: Config, X, y, seed):
    try:
        import sklearn
        from sklearn.neural_network import MLPClassifier
    except ImportError as e:
        raise Unavailable("scikit-learn not installed (the bench extra)") from e
    clf = MLPClassifier(
        hidden_layer_sizes=cfg.sizes[1:-1],
        activation="relu",
        solver="sgd",
        learning_rate_init=LR,
        momentum=0.0,
        nesterovs_momentum=False,
        alpha=0.0,
        batch_size=cfg.batch_size,
        shuffle=True,
        random_state=seed,
    )
    classes = np.arange(cfg.n_classes)

    def run_epoch():
        clf.partial_fit(X, y, classes=classes)  # one pass over X in minibatches

    note = f"sklearn {sklearn.__version__}"
    if cfg.n_classes == 2:
        note += "; 2 classes: one logistic output unit"
    return run_epoch, note


SETUPS = {
    "floor": setup_floor,
    "gpumlp": _gpumlp_setup("NumpyOps", compiled=False),
    "numba": _gpumlp_setup("NumbaOps", compiled=False),
    "compiled": _gpumlp_setup("NumbaOps", compiled=True),
    "jax-scan": _jax_setup(peers_jax.setup_jax_scan),
    "jax-step": _jax_setup(peers_jax.setup_jax_step),
    "torch": setup_torch,
    "sklearn": setup_sklearn,
}


# --------------------------------------------------------------------------- memory (subprocess)


def memory_child(impl: str, cfg: Config, seed: int) -> dict:
    """Run in a fresh process: the peak RSS of one training epoch on top of the interpreter,
    the libraries, the data and a warmed-up BLAS (its per-thread buffers).

    The model is built first (its parameters stay in the figure), then the peak is reset, so
    what is measured is the parameters plus everything the epoch itself allocates.
    """
    X, y = common.make_data(cfg, seed)
    # Warm the BLAS (OpenBLAS/MKL allocate per-thread work buffers on first use).
    a = np.ones((cfg.batch_size, cfg.sizes[0]), np.float32)
    b = np.ones((cfg.sizes[0], cfg.sizes[1]), np.float32)
    a @ b
    del a, b
    if impl == "torch":
        import torch  # noqa: F401  (import cost is not the epoch's)

        torch.ones(cfg.batch_size, cfg.sizes[0]) @ torch.ones(cfg.sizes[0], cfg.sizes[1])
    elif impl == "gpumlp":
        import gpumlp  # noqa: F401
    base = common.rss_kib("VmRSS")
    resettable = common.reset_peak_rss()
    run_epoch, _ = SETUPS[impl](cfg, X, y, seed)  # builds the model
    build_peak = common.rss_kib("VmHWM")
    resettable = common.reset_peak_rss() and resettable
    run_epoch()
    peak = common.rss_kib("VmHWM")
    itemsize = 4
    params = common.param_bytes(cfg.sizes, itemsize)
    optimizer_state = 0  # plain SGD, momentum 0
    acts = common.activation_bytes(cfg.sizes, cfg.batch_size, itemsize)
    budget = params + optimizer_state + acts
    used = (peak - base) * 1024
    out = {
        "impl": impl,
        "config": cfg.name,
        "base_rss_mib": base / 1024,
        "build_peak_mib": build_peak / 1024,
        "peak_rss_mib": peak / 1024,
        "epoch_mib": used / 2**20,
        "params_mib": params / 2**20,
        "optimizer_state_mib": optimizer_state / 2**20,
        "activations_mib": acts / 2**20,
        "budget_mib": budget / 2**20,
        "ratio": used / budget,
        "peak_reset": resettable,
    }
    if impl == "gpumlp":
        # What the figure is made of: fit keeps a copy of the weights and optimizer state of the
        # last good epoch (to roll back a divergence or Ctrl-C), and the backward pass keeps one
        # delta per layer next to the activations.
        rollback = params + optimizer_state
        deltas = itemsize * cfg.batch_size * sum(cfg.sizes[1:])
        out.update(
            rollback_copy_mib=rollback / 2**20,
            deltas_mib=deltas / 2**20,
            ratio_without_rollback=(used - rollback) / budget,
        )
    return out


def measure_memory(impl: str, cfg: Config, seed: int) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--memory-child",
        impl,
        "--mem-samples",
        str(cfg.n_samples),
        "--configs",
        cfg.name,
        "--seed",
        str(seed),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"impl": impl, "config": cfg.name, "error": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- driver


def machine_lines() -> list[str]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return [
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        f"python {platform.python_version()}, numpy {np.__version__}",
        f"load average at start: {load_average()}",
    ]


def load_average() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews every figure."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def run_config(cfg: Config, impls, repeats, warmup, seed, verbose) -> list[dict]:
    X, y = common.make_data(cfg, seed)
    fns, notes, rows = {}, {}, []
    for impl in impls:
        try:
            fns[impl], notes[impl] = SETUPS[impl](cfg, X, y, seed)
        except Unavailable as e:
            rows.append({"config": cfg.name, "impl": impl, "samples_per_s": None, "note": str(e)})
    log = (lambda s: print(s, flush=True)) if verbose else None
    times = common.time_interleaved(fns, repeats, warmup, log=log, pause=0.2)
    floor_s = common.median(times["floor"]) if "floor" in times else None
    for impl, ts in times.items():
        med = common.median(ts)
        rows.append(
            {
                "config": cfg.name,
                "impl": impl,
                "epoch_s": med,
                "best_s": min(ts),
                "samples_per_s": cfg.n_samples / med,
                "ratio": (floor_s / med) if floor_s else float("nan"),
                "runs": len(ts),
                "times_s": ts,
                "note": notes[impl],
            }
        )
    order = {name: i for i, name in enumerate(IMPLS)}
    rows.sort(key=lambda r: order[r["impl"]])
    if "floor" in times:
        gflops = common.gemm_flops_per_epoch(cfg) / floor_s / 1e9
        rows[0]["note"] += f", {gflops:.3g} GFLOP/s"
    return rows


def target_lines(rows: list[dict], memory: list[dict]) -> list[str]:
    """The issue's targets, as measured here (benchmark figures, never asserted)."""
    get = {(r["config"], r["impl"]): r for r in rows if r.get("samples_per_s")}
    out = []

    def check(label, value, goal, fmt="{:.3f}"):
        ok = "met" if value >= goal else "MISSED"
        out.append(f"{label}: {fmt.format(value)} (target >= {goal}) {ok}")

    def g(c):  # gpumlp's fastest row for config c (plain, numba kernels or compiled epoch)
        mine = [get[(c, i)] for i in ("gpumlp", "numba", "compiled") if (c, i) in get]
        return max(mine, key=lambda r: r["samples_per_s"]) if mine else None

    scan = lambda c: get.get((c, "jax-scan"))  # noqa: E731
    if g("mnist"):
        check(f"mnist gpumlp ({g('mnist')['impl']}) / floor", g("mnist")["ratio"], 0.85)
        if scan("mnist"):
            check("mnist gpumlp / jax-scan", g("mnist")["samples_per_s"] / scan("mnist")["samples_per_s"], 1.0)
    if g("wide"):
        check(f"wide  gpumlp ({g('wide')['impl']}) / floor", g("wide")["ratio"], 0.95)
    if g("tiny") and scan("tiny"):
        check(
            f"tiny  gpumlp ({g('tiny')['impl']}) / jax-scan",
            g("tiny")["samples_per_s"] / scan("tiny")["samples_per_s"],
            1.0,
        )
    for m in memory:
        if m["impl"] == "gpumlp" and "ratio" in m:
            ok = "met" if m["ratio"] <= 1.3 else "MISSED"
            out.append(f"memory wide gpumlp epoch RSS / budget: {m['ratio']:.3f} (target <= 1.3) {ok}")
    return out


def memory_lines(memory: list[dict]) -> list[str]:
    out = []
    for m in memory:
        if "error" in m:
            out.append(f"{m['config']} {m['impl']}: memory measurement failed: {m['error']}")
            continue
        out.append(
            f"{m['config']} {m['impl']}: peak RSS during the epoch {m['peak_rss_mib']:.1f} MiB, before the "
            f"model {m['base_rss_mib']:.1f} MiB -> parameters + epoch {m['epoch_mib']:.1f} MiB; budget "
            f"(params {m['params_mib']:.1f} + optimizer state {m['optimizer_state_mib']:.1f} + one "
            f"batch of activations {m['activations_mib']:.1f}) = {m['budget_mib']:.1f} MiB; "
            f"ratio {m['ratio']:.2f}" + ("" if m["peak_reset"] else " (peak not resettable)")
        )
        if "rollback_copy_mib" in m:
            out.append(
                f"  of which fit's rollback copy of the last good epoch {m['rollback_copy_mib']:.1f} MiB and "
                f"the deltas {m['deltas_mib']:.1f} MiB; without the rollback copy the ratio is "
                f"{m['ratio_without_rollback']:.2f}"
            )
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma list of " + ", ".join(CONFIGS))
    p.add_argument("--impls", default=",".join(IMPLS), help="comma list of " + ", ".join(IMPLS))
    p.add_argument("--repeats", type=int, default=None, help="timed epochs each (default 7; --quick 2)")
    p.add_argument(
        "--tiny-repeats",
        type=int,
        default=None,
        help="timed epochs for tiny (default 3x --repeats: its epochs are short)",
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs first (default 1)")
    p.add_argument("--quick", action="store_true", help="fewer samples and repeats: a smoke run")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    p.add_argument("--verbose", "-v", action="store_true", help="print every timed epoch")
    p.add_argument(
        "--keep-openblas-env",
        action="store_true",
        help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (default: removed for this process)",
    )
    p.add_argument("--memory-child", metavar="IMPL", help=argparse.SUPPRESS)
    p.add_argument("--mem-samples", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = common.choose(args.configs, list(CONFIGS), "config")
    impls = common.choose(args.impls, list(IMPLS), "implementation")

    if args.memory_child:
        cfg = CONFIGS[names[0]]
        if args.mem_samples:
            cfg = cfg.scaled(args.mem_samples)
        print(json.dumps(memory_child(args.memory_child, cfg, args.seed)))
        return 0

    repeats = args.repeats or (2 if args.quick else 7)
    tiny_repeats = args.tiny_repeats or 3 * repeats
    configs = [CONFIGS[c].scaled(QUICK_SAMPLES[c]) if args.quick else CONFIGS[c] for c in names]

    header = machine_lines()
    if _REMOVED_ENV:
        header.append(
            "removed for this benchmark process only: " + ", ".join(f"{k}={v}" for k, v in _REMOVED_ENV.items())
        )
    else:
        kept = [f"{k}={os.environ[k]}" for k in common.OPENBLAS_VARS if k in os.environ]
        header.append(
            "OpenBLAS environment: " + (", ".join(kept) if kept else "OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE not set")
        )
    print("\n".join(header), flush=True)

    rows: list[dict] = []
    for cfg in configs:
        r = tiny_repeats if cfg.name == "tiny" else repeats
        print(
            f"\n== {cfg.name}: {'-'.join(map(str, cfg.sizes))}, batch {cfg.batch_size}, "
            f"{cfg.n_samples} samples, {cfg.n_steps} steps/epoch; median of {r} epochs "
            f"after {args.warmup} warmup",
            flush=True,
        )
        cfg_rows = run_config(cfg, impls, r, args.warmup, args.seed, args.verbose)
        for row in cfg_rows:
            if row.get("samples_per_s"):
                print(
                    f"  {row['impl']:<8} {row['samples_per_s']:>12,.0f} samples/s  {row['ratio']:.3f} x floor",
                    flush=True,
                )
            else:
                print(f"  {row['impl']:<8} skipped: {row['note']}", flush=True)
        rows.extend(cfg_rows)

    # All libraries are loaded now: list every BLAS / OpenMP runtime and the kernel it picked.
    blas = common.blas_info()
    blas_lines = common.describe_blas(blas)

    memory: list[dict] = []
    if not args.no_memory and "wide" in names:
        wide = next(c for c in configs if c.name == "wide")
        for impl in ("gpumlp", "torch"):
            if impl in impls:
                memory.append(measure_memory(impl, wide, args.seed))

    header.append(f"load average at end: {load_average()}")
    print("\n## Results\n")
    print("\n".join(header))
    print("BLAS (threadpoolctl):")
    print("\n".join("  " + line for line in blas_lines))
    print()
    print(common.format_table(rows))
    if memory:
        print("\nMemory (peak RSS of one epoch, fresh process):")
        print("\n".join("  " + line for line in memory_lines(memory)))
    targets = target_lines(rows, memory)
    if targets:
        print("\nTargets (benchmark figures, not asserted):")
        print("\n".join("  " + line for line in targets))

    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "header": header,
                    "blas": blas,
                    "rows": rows,
                    "memory": memory,
                    "targets": targets,
                    "repeats": repeats,
                    "tiny_repeats": tiny_repeats,
                    "quick": args.quick,
                    "argv": sys.argv[1:],
                },
                f,
                indent=2,
                default=str,
            )
        print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
