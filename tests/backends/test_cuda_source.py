"""kernels.cu expanded by cuda_source: every kernel CupyOps launches is there, no placeholder is left,
every activation and loss has its kernels, and the source compiles with NVRTC where NVRTC is installed.

CupyOps runs here on NumPy arrays with a RawModule that records the kernel names asked for and
launches nothing, so this needs neither a GPU nor a compiler (tests/test_cuda_emulated.py runs
the kernels themselves).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from gpumlp.activations import ACTIVATIONS, OUTPUT_ACTIVATIONS
from gpumlp.backends._cuda_source import cuda_source
from gpumlp.backends.cupy_ops import CupyOps
from gpumlp.losses import LOSSES

DTYPES = ["float32", "float64"]


class _RecordingModule:
    """A RawModule that compiles nothing and records the kernels asked for."""

    def __init__(self, code: str, options: tuple[str, ...], log: dict[str, Any]) -> None:
        log["sources"].append(code)
        self._log = log

    def get_function(self, name: str) -> Any:
        self._log["kernels"].add(name)
        return lambda grid, block, args: None


class _RecordingNamespace:
    """NumPy, with a RawModule that records instead of compiling."""

    def __init__(self) -> None:
        self.log: dict[str, Any] = {"sources": [], "kernels": set()}

    def RawModule(self, code: str, options: tuple[str, ...] = ()) -> _RecordingModule:
        return _RecordingModule(code, options, self.log)

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


# Kernels every dtype's module must define, whatever the activation and loss tables hold.
CORE_KERNELS = {
    "bias_softmax",
    "col_sum",
    "axpy",
    "sgd",
    "sgd_momentum",
    "adam",
    "adam_scheduled",
    "gather_batch",
    "advance",
    "sq_partial",
    "clip_factor",
    "scale_by",
}


def _launched_kernels(dtype: str) -> tuple[set[str], list[str]]:
    """Drive every CupyOps method down its kernel path; the kernel names and sources it asked for."""
    xp = _RecordingNamespace()
    ops = CupyOps(xp)
    ops.gemm = lambda a, b, out=None, trans_a=False, trans_b=False: out  # cuBLAS: not a kernel of ours
    rng = np.random.default_rng(0)

    def a(*shape: int) -> np.ndarray:
        return rng.random(shape).astype(dtype)

    X, W, b, T = a(6, 4), a(4, 3), a(3), a(6, 3)
    for act in ACTIVATIONS:
        ops.affine_activate(X, W, b, act, out=np.empty((6, 3), dtype=dtype))
        ops.backprop_activation(act, a(6, 3), a(6, 3))
        for loss in LOSSES:
            ops.output_delta(act, loss, a(6, 3), T, 0.5, out=np.empty((6, 3), dtype=dtype))
    for loss in LOSSES:
        ops.loss_sum(loss, a(6, 3), T)
        ops.add_loss_sum(loss, a(6, 3), T, np.zeros((), dtype=np.float64))
        ops.add_loss_sum(loss, a(300, 300), a(300, 300), np.zeros((), dtype=np.float64))  # two-pass
        Y, total = a(6, 3), np.zeros((), dtype=np.float64)
        ops.defer_loss_sum(loss, Y, T, total)
        ops.output_delta("softmax" if loss == "cross_entropy" else "sigmoid", loss, Y, T, 0.5, out=a(6, 3))
    ops.sum_rows(a(6, 3), out=np.empty(3, dtype=dtype))
    ops.add_scaled(a(4, 3), 0.1, a(4, 3))
    ops.sgd_update(a(4, 3), a(4, 3), None, 0.1, 0.0, False)
    ops.sgd_update(a(4, 3), a(4, 3), a(4, 3), 0.1, 0.9, True)
    ops.adam_update(a(4, 3), a(4, 3), a(4, 3), a(4, 3), 0.01, 0.9, 0.999, 1e-8)
    ops.clip_global_norm([a(4, 3), a(3)], 1.0)
    step = np.zeros(1, dtype=np.int32)
    ops.gather_batch(X, T, np.arange(6, dtype=np.int64), step, 3, a(3, 4), a(3, 3))
    ops.adam_update_scheduled(a(4, 3), a(4, 3), a(4, 3), a(4, 3), a(5), step, 0.9, 0.999, 1e-8)
    ops.advance(step, np.dtype(dtype))
    ps, gs, ms, vs = ([a(4, 3), a(3)] for _ in range(4))
    ops.multi_sgd_update(ops.tensor_table(ps, gs), gs, False, 0.1, 0.0, False)
    ops.multi_sgd_update(ops.tensor_table(ps, gs, vs), gs, True, 0.1, 0.9, True)
    factor = ops.multi_clip_factor(ops.tensor_table(gs), gs, 1.0)
    ops.multi_adam_update_scheduled(ops.tensor_table(ps, gs, ms, vs), gs, a(5), step, 0.9, 0.999, 1e-8, factor, -1)
    ops.add_column_sums(a(3), a(6, 3))
    for act in ACTIVATIONS:
        ops.backprop_add_bias(act, a(6, 3), a(6, 3), a(3))
    ops.defer_loss_sum("cross_entropy", Y, T, np.zeros((), dtype=np.float64), step)
    ops.output_delta_add_bias("softmax", "cross_entropy", Y, T, 0.5, a(6, 3), a(3))
    return xp.log["kernels"], xp.log["sources"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_kernel_cupyops_launches_is_in_the_source(dtype):
    launched, sources = _launched_kernels(dtype)
    assert sources == [cuda_source(dtype)]  # one module per dtype, built from cuda_source
    defined = set(re.findall(r'extern "C" __global__ void (\w+)\(', cuda_source(dtype)))
    assert launched <= defined, sorted(launched - defined)
    for act in ACTIVATIONS:
        for loss in LOSSES:
            assert f"delta_{act}_{loss}" in launched
    assert (
        CORE_KERNELS
        | {
            "loss_total_mse",
            "loss_partial_cross_entropy",
            "add_partials",
            "delta_loss_softmax_cross_entropy",
            "delta_loss_sigmoid_binary_cross_entropy",
            "multi_sgd",
            "multi_sgd_momentum",
            "multi_adam",
            "multi_sq_partial",
            "col_sum_axpy",
            "backprop_bias_relu",
            "backprop_bias_tanh",
            "backprop_bias_sigmoid",
        }
        <= launched
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_placeholder_is_left_unexpanded(dtype):
    source = cuda_source(dtype)
    assert "{{" not in source and "}}" not in source and "$" not in source
    assert "//@begin" not in source and "//@end" not in source
    scalar, other = ("float", "double") if dtype == "float32" else ("double", "float")
    assert f"typedef {scalar} T;" in source and f"typedef {other} T;" not in source


def test_every_activation_and_loss_has_a_cuda_kernel():
    names = set(re.findall(r'extern "C" __global__ void (\w+)\(', cuda_source("float32")))
    for act in OUTPUT_ACTIVATIONS:
        for loss in LOSSES:
            assert f"delta_{act}_{loss}" in names
    for loss in LOSSES:
        assert f"loss_{loss}" in names
    for act in set(OUTPUT_ACTIVATIONS) - {"softmax"}:
        assert {f"bias_act_{act}", f"backprop_{act}"} <= names
    assert CORE_KERNELS <= names


def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception:  # CuPy or its NVRTC library not installed
        return None
    return nvrtc


NVRTC_MISSING = "needs CuPy with the NVRTC library (pip install cupy-cuda13x nvidia-cuda-nvrtc)"


@pytest.mark.skipif(_nvrtc() is None, reason=NVRTC_MISSING)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_source_compiles_with_nvrtc_and_float32_stays_float32(dtype):
    nvrtc = _nvrtc()
    prog = nvrtc.createProgram(cuda_source(dtype), f"gpumlp_{dtype}.cu", [], [])
    try:
        nvrtc.compileProgram(prog, ["-arch=compute_80", "--fmad=false"])
    except Exception:
        pytest.fail(nvrtc.getProgramLog(prog))
    assert nvrtc.getProgramLog(prog).strip() == ""  # no warnings either
    ptx = nvrtc.getPTX(prog)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    if dtype == "float32":
        assert ".f64" not in ptx  # no silent promotion to double in a float32 run
