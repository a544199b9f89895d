"""The first minute of a GPU check (scripts/gpu_check.sh): the facts that matter most, as JSON.

Versions, device, NVRTC compile + module load time, float32 flush-to-zero, the libcublas in use,
whether a training step really is captured as a CUDA graph (and how many nodes it has), CPU/GPU
agreement of forward, loss and gradients on the mnist net (784-256-256-10) in float32 and
float64, and milliseconds per step eager vs graph. Each fact is recorded as it is found, so a
failure later leaves the earlier ones in the file.

    python3 scripts/gpu_probe.py OUT.json
"""

from __future__ import annotations

import json
import platform
import sys
import time
import traceback
import warnings
from typing import Any

import numpy as np

RESULT: dict[str, Any] = {}


def _save(path: str) -> None:
    with open(path, "w") as f:
        json.dump(RESULT, f, indent=2, default=str)


def _rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def versions(cp: Any) -> dict[str, Any]:
    import gpumlp as gm

    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cupy": cp.__version__,
        "gpumlp": gm.__version__,
        "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
        "cuda_driver": cp.cuda.runtime.driverGetVersion(),
        "device": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
        "compute_capability": dev.compute_capability,
        "memory_gib": round(dev.mem_info[1] / 2**30, 1),
    }


def compile_and_ftz(cp: Any) -> dict[str, Any]:
    """NVRTC compile + load of the float32 module (first get_function), and whether a float32
    kernel flushes a subnormal (1e-40) to zero (CuPy's -ftz=true)."""
    from gpumlp.backends.cupy_ops import CupyOps

    ops = CupyOps(cp)
    t0 = time.perf_counter()
    ops._kernel("axpy", "float32")
    t1 = time.perf_counter()
    ops._kernel("axpy", "float64")
    t2 = time.perf_counter()
    y, x = cp.zeros(1, dtype=cp.float32), cp.full(1, 1e-40, dtype=cp.float32)
    ops.add_scaled(y, 1.0, x)
    yd, xd = cp.zeros(1), cp.full(1, 1e-40)
    ops.add_scaled(yd, 1.0, xd)
    from gpumlp.backends import _cublas_lib

    lib = _cublas_lib.load_library()
    return {
        "nvrtc_compile_load_s": {"float32": round(t1 - t0, 3), "float64": round(t2 - t1, 3)},
        "float32_subnormal_flushed": float(y[0]) == 0.0,
        "float64_subnormal_kept": float(yd[0]) != 0.0,
        "libcublas": getattr(lib, "_gpumlp_source", "?"),
    }


def capture(cp: Any) -> dict[str, Any]:
    """Does fit's device loop really capture? Node count of the captured step (DOT text)."""
    import gpumlp as gm
    from gpumlp.optimizers import SGD
    from gpumlp.training import Trainer
    from gpumlp.training.cuda_graph import device_loop

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(256, 784)), rng.integers(0, 10, 256)  # 2 steps: the warm-up, then a 1-step graph
    out: dict[str, Any] = {}
    for name, opt in (("sgd", SGD(lr=0.01)), ("momentum", SGD(lr=0.01, momentum=0.9))):
        model = gm.MLP([784, 256, 256, 10], dtype="float32", backend="cupy", seed=0)
        Xd, Td, loss = model.check_data(X, y, "auto")
        trainer = Trainer(model, loss, opt, 0.0, 128, True, np.random.default_rng(0))
        loop = device_loop(trainer, cuda_graph=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loop.run_epoch(Xd, Td)
        graph = loop.captured.get((128, 1))
        nodes = None
        if graph is not None and hasattr(graph, "debug_dot_str"):
            try:
                dot = graph.debug_dot_str()
                nodes = sum(1 for line in dot.splitlines() if "->" not in line and "[" in line and "node" in line)
            except Exception as exc:  # the count is a detail; the capture itself is the fact
                nodes = f"{type(exc).__name__}: {exc}"
        out[name] = {"captured": graph is not None, "graph_nodes": nodes, "warnings": [str(w.message) for w in caught]}
    return out


def agreement(cp: Any) -> dict[str, Any]:
    import gpumlp as gm

    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(128, 784)), rng.integers(0, 10, 128)
    T = np.eye(10)[y]
    out = {}
    for dtype in ("float32", "float64"):
        dev, ref = (gm.MLP([784, 256, 256, 10], dtype=dtype, backend=b, seed=3) for b in ("cupy", "numpy"))
        grads = [
            max(_rel(gm.to_numpy(d), r) for d, r in zip(dg, rg))
            for dg, rg in zip(dev.gradients(X, T, l2=1e-3), ref.gradients(X, T, l2=1e-3))
        ]
        out[dtype] = {
            "forward_rel": _rel(gm.to_numpy(dev.forward(X)), ref.forward(X)),
            "loss_rel": abs(dev.loss(X, T) - ref.loss(X, T)) / abs(ref.loss(X, T)),
            "gradient_rel_max": max(grads),
        }
    return out


def _stamper(stamps: list[float]) -> Any:
    def stamp(model: Any, epoch: int, logs: Any) -> None:
        stamps.append(time.perf_counter())  # each epoch ends reading its loss: the device is idle here

    return stamp


def step_times(cp: Any) -> dict[str, Any]:
    import gpumlp as gm

    rng = np.random.default_rng(2)
    X, y = cp.asarray(rng.normal(size=(128 * 100, 784)), dtype=cp.float32), cp.asarray(rng.integers(0, 10, 12800))
    out = {}
    for graph in (False, True):
        model = gm.MLP([784, 256, 256, 10], dtype="float32", backend="cupy", seed=0)
        stamps: list[float] = []
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            model.fit(X, y, epochs=3, batch_size=128, lr=0.01, cuda_graph=graph, callbacks=[_stamper(stamps)])
        epoch = min(np.diff(stamps))  # epochs 2-3: warm
        out["graph" if graph else "eager"] = {"ms_per_step": round(1e3 * epoch / 100, 4)}
    return out


def main(path: str) -> int:
    try:
        import cupy as cp

        cp.cuda.runtime.getDeviceCount()
    except Exception as exc:
        RESULT["error"] = f"no usable CUDA GPU: {type(exc).__name__}: {exc}"
        _save(path)
        print(RESULT["error"], file=sys.stderr)
        return 2
    status = 0
    for name, fn in (("versions", versions), ("compile", compile_and_ftz), ("capture", capture),
                     ("agreement", agreement), ("step_times", step_times)):  # fmt: skip
        t0 = time.perf_counter()
        try:
            RESULT[name] = fn(cp)
        except Exception as exc:
            RESULT[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            status = 1
        RESULT.setdefault("stage_s", {})[name] = round(time.perf_counter() - t0, 2)
        _save(path)
        print(f"probe {name}: {json.dumps(RESULT[name], default=str)[:400]}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "gpu_probe.json"))
