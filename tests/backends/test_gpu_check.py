"""scripts/gpu_check.sh and what it runs, on a machine without a GPU: it must stop within seconds
with a clear line (also written under $OUT) and a non-zero status, and the files it runs on the
GPU machine must import nothing that machine lacks (it has python3 with CuPy, NumPy, PyTorch,
pytest, hypothesis, scikit-learn, mpi4py, tqdm, matplotlib; no array_api_strict, no network)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gpumlp as gm

ROOT = Path(__file__).resolve().parents[2]
GPU_MACHINE = {"cupy", "cupyx", "numpy", "torch", "pytest", "hypothesis", "sklearn", "mpi4py", "tqdm", "matplotlib"}
GPU_MACHINE |= {"threadpoolctl", "scipy", "joblib"}  # scikit-learn's own dependencies
LOCAL = {"gpumlp", "common", "agreement", "cuda_emulator", "emulated_cublas"}

needs_no_gpu = pytest.mark.skipif(gm.has_gpu(), reason="this machine has a GPU: the check would run in full")


@needs_no_gpu
def test_gpu_check_without_a_gpu_stops_at_once_with_a_clear_line(tmp_path):
    out = tmp_path / "out"
    t0 = time.monotonic()
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")],
        env={**os.environ, "OUT": str(out), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - t0 < 60
    assert run.returncode == 2
    line = (out / "no_gpu.txt").read_text().strip()
    assert line.startswith("gpu_check: no usable CUDA GPU") and "nothing was run" in line
    assert line in run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["no_gpu.txt", "summary.md"]


@needs_no_gpu
def test_the_probe_without_a_gpu_writes_why_and_fails(tmp_path):
    import json

    path = tmp_path / "probe.json"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_probe.py"), str(path)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert run.returncode == 2
    assert json.loads(path.read_text())["error"].startswith("no usable CUDA GPU")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "path",
    [
        "benchmarks/bench_gpu.py",
        "benchmarks/common.py",
        "tests/backends/test_gpu.py",
        "tests/agreement.py",
        "tests/conftest.py",
        "scripts/gpu_probe.py",
    ],  # fmt: skip
)
def test_what_the_gpu_check_runs_imports_only_what_the_gpu_machine_has(path):
    missing = _imports(ROOT / path) - GPU_MACHINE - LOCAL - set(sys.stdlib_module_names)
    assert not missing, f"{path} imports {sorted(missing)}, which the GPU machine does not have"
    assert "pip" not in (ROOT / path).read_text().split()
