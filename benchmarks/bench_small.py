"""Fresh-process timings of small fits: the seeds' XOR 2-2-1 net and the quick start, before and after.

Each measurement is a new interpreter (so numba's import and cache load count where they happen),
the variants taking turns round-robin; the table gives min and median of ``--repeats`` runs.

- **xor**: sigmoid 2-2-1, MSE, lr 2, 5000 full-batch epochs, float64 (the seeds' worked example).
  Variants: ``plain`` (compiled=False, GPUMLP_JIT=0), ``auto`` (the default), ``compiled``
  (compiled=True: numba loaded in the process), ``compiled-warm`` (the same fit a second time in
  that process). ``--before PATH`` adds ``before``: the same fit on another checkout (e.g. the
  commit before the compiled epoch), which has no ``compiled`` argument.
- **quickstart**: ``examples/quickstart.py`` as scripts/run.sh runs it (after its install check),
  whole process wall time, for this checkout and ``--before``.

    python benchmarks/bench_small.py --repeats 5 --before /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

XOR = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import gpumlp as gm
X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
Y = np.array([[0], [1], [1], [0]], float)
kw = dict(loss="mse", lr=2.0, epochs=5000, batch_size=None, shuffle=False)
if {compiled!r} is not None:
    kw["compiled"] = {compiled!r}
out = {{}}
for name in ("fit", "fit2")[: 1 + {warm!r}]:
    m = gm.MLP([2, 2, 1], "sigmoid", "sigmoid", dtype="float64", backend="numpy", seed=0)
    t = time.perf_counter()
    m.fit(X, Y, **kw)
    out[name] = time.perf_counter() - t
out["process"] = time.perf_counter() - t0
out["numba"] = sys.modules.get("numba") is not None
out["pred"] = m.predict(X).ravel().round(3).tolist()
print(json.dumps(out))
"""


def run(code: str, checkout: str, env_extra: dict[str, str]) -> dict:
    env = {**os.environ, "PYTHONPATH": checkout, **env_extra}
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=checkout)
    wall = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(p.stderr)
    last = p.stdout.strip().splitlines()[-1]
    out = json.loads(last) if last.startswith("{") else {"stdout": last}
    out["wall"] = wall
    return out


def variants(before: str | None) -> dict:
    v = {
        "xor plain": (XOR.format(compiled=False, warm=False), HERE, {"GPUMLP_JIT": "0"}),
        "xor auto": (XOR.format(compiled="auto", warm=False), HERE, {}),
        "xor compiled": (XOR.format(compiled=True, warm=True), HERE, {}),
    }
    quick = (
        "import runpy, sys; sys.argv = ['quickstart.py']; runpy.run_path('examples/quickstart.py', run_name='__main__')"
    )
    v["quickstart"] = (quick, HERE, {})
    if before:
        v["xor before"] = (XOR.format(compiled=None, warm=False), before, {})
        v["quickstart before"] = (quick, before, {})
    return v


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--before", help="another gpumlp checkout to time the same way")
    args = p.parse_args()
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; load average at start: {os.getloadavg()}", flush=True)
    vs = variants(args.before)
    results: dict[str, list[dict]] = {k: [] for k in vs}
    for _ in range(args.repeats):
        for name, (code, checkout, env) in vs.items():
            results[name].append(run(code, checkout, env))
    print(f"load average at end: {os.getloadavg()}")
    print("| variant | measure | min s | median s | runs | numba imported |")
    print("|---|---|---:|---:|---:|---|")
    for name, rs in results.items():
        for key in ("fit", "fit2", "process", "wall"):
            xs = [r[key] for r in rs if key in r]
            if xs:
                label = {"fit": "fit", "fit2": "2nd fit, same process", "process": "in-process total", "wall": "wall"}
                print(
                    f"| {name} | {label[key]} | {min(xs):.3f} | {statistics.median(xs):.3f} | {len(xs)} | "
                    f"{rs[0].get('numba', '-')} |"
                )
    preds = {name: rs[0]["pred"] for name, rs in results.items() if "pred" in rs[0]}
    print("XOR predictions:", json.dumps(preds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
