"""The GPU options without a GPU: argument checks, the stream-capture protocol (on the NumPy
stand-in for CuPy's streams in tests/cuda_emulator.py), the epoch plan, Adam's step sizes.
tests/backends/test_cuda_emulated.py runs the device loop itself on the CPU."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import gpumlp as gm
from gpumlp.backends.cupy_ops import CupyOps
from gpumlp.optimizers import Adam
from gpumlp.training.cuda_graph import GraphCaptureError, capture, capture_unsupported, epoch_plan

from cuda_emulator import EmulatedCupy, available


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(30, 4)), rng.integers(0, 3, 30)


@pytest.mark.parametrize("option", [{"cuda_graph": True}, {"allow_tf32": True}])
def test_numpy_models_refuse_gpu_options_clearly(option):
    X, y = _data()
    model = gm.MLP([4, 5, 3], backend="numpy")
    name = next(iter(option))
    with pytest.raises(ValueError, match=rf"{name}=True needs backend='cupy'.*runs on 'numpy'"):
        model.fit(X, y, epochs=1, batch_size=8, **option)


def test_cuda_graph_auto_on_numpy_trains_exactly_as_without_it():
    X, y = _data()
    a, b = gm.MLP([4, 5, 3], backend="numpy", seed=2), gm.MLP([4, 5, 3], backend="numpy", seed=2)
    ha = a.fit(X, y, epochs=3, batch_size=7, cuda_graph="auto", seed=1)
    hb = b.fit(X, y, epochs=3, batch_size=7, seed=1)
    assert ha["loss"] == hb["loss"]
    for (Wa, ba), (Wb, bb) in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)


@pytest.mark.parametrize(
    "kw,error",
    [
        ({"cuda_graph": "always"}, ValueError),
        ({"cuda_graph": 1}, TypeError),
        ({"allow_tf32": "yes"}, TypeError),
    ],
)
def test_gpu_option_values_are_checked(kw, error):
    X, y = _data()
    with pytest.raises(error, match=next(iter(kw))):
        gm.MLP([4, 3], backend="numpy").fit(X, y, epochs=1, batch_size=8, **kw)


def test_epoch_plan_lists_full_batches_then_the_remainder():
    assert epoch_plan(10, 4) == [(4, 2), (2, 1)]
    assert epoch_plan(8, 4) == [(4, 2)]
    assert epoch_plan(3, 3) == [(3, 1)]
    assert epoch_plan(5, 1) == [(1, 5)]


def test_adam_step_size_is_the_bias_corrected_learning_rate():
    opt = Adam(lr=0.001, beta1=0.9, beta2=0.999)
    assert opt.step_size(1) == pytest.approx(0.001 * 0.001**0.5 / 0.1, rel=1e-15)  # √(1−β2)/(1−β1)
    assert opt.step_size(2) == pytest.approx(0.001 * (1 - 0.999**2) ** 0.5 / (1 - 0.81), rel=1e-15)
    assert opt.step_size(10**6) == pytest.approx(0.001, rel=1e-12)


def test_capture_is_unsupported_without_stream_capture_or_on_hip():
    old = SimpleNamespace(__version__="9.6.0", cuda=SimpleNamespace(Stream=type("Stream", (), {})))
    assert "9.6.0" in capture_unsupported(old) and "no stream capture" in capture_unsupported(old)
    hip = EmulatedCupy()
    hip.cuda.runtime.is_hip = True
    assert "HIP" in capture_unsupported(hip)
    assert capture_unsupported(EmulatedCupy()) is None
    with pytest.raises(GraphCaptureError, match="no stream capture"):
        capture(old, None, lambda: None)


def test_capture_records_the_step_and_the_graph_replays_it():
    xp = EmulatedCupy()
    ops = CupyOps(xp, cublas_lib=xp.libcublas)
    a, b = xp.asarray(np.array([[1.0, 2.0]])), xp.asarray(np.array([[3.0], [4.0]]))
    out = xp.zeros((1, 1))
    stream = xp.cuda.Stream(non_blocking=True)
    with stream:
        ops.gemm(a, b, out=out)  # outside capture: the stream's cuBLAS handle and workspace are set up
    out[0, 0] = 0.0
    graph = capture(xp, stream, lambda: ops.gemm(a, b, out=out))
    assert out[0, 0] == 0.0  # recorded, not run
    a[0, 0] = 10.0  # the graph reads the same memory when it replays
    graph.launch(stream=stream)
    assert out[0, 0] == 38.0
    assert not stream.is_capturing()


def test_cupy_matmul_under_capture_is_refused_as_cupy_refuses_it():
    """cupy_backends/cuda/libs/cublas.pyx::setStream raises this for every CuPy cuBLAS call while
    the stream captures (CuPy 14.2); gpumlp's GEMMs go through a handle of its own instead."""
    xp = EmulatedCupy()
    a, b, out = xp.ones((2, 3)), xp.ones((3, 4)), xp.zeros((2, 4))
    with pytest.raises(GraphCaptureError, match="calling cuBLAS API during stream capture is currently unsupported"):
        capture(xp, xp.cuda.Stream(non_blocking=True), lambda: xp.matmul(a, b, out=out))


def test_a_cublas_handle_first_used_under_capture_is_refused():
    """Creating the handle (and its workspace) is setup that must happen before capture."""
    xp = EmulatedCupy()
    ops = CupyOps(xp, cublas_lib=xp.libcublas)
    a, b, out = xp.ones((2, 3)), xp.ones((3, 4)), xp.zeros((2, 4))
    with pytest.raises(GraphCaptureError, match="allocated device memory|during stream capture"):
        capture(xp, xp.cuda.Stream(non_blocking=True), lambda: ops.gemm(a, b, out=out))


def test_cublas_under_capture_needs_the_workspace_set_after_the_stream():
    """cublasSetStream_v2 resets the workspace to cuBLAS's pool: a GEMM captured after it, without
    cublasSetWorkspace_v2, would allocate under capture (the emulated libcublas refuses it)."""
    xp = EmulatedCupy()
    ops = CupyOps(xp, cublas_lib=xp.libcublas)
    a, b, out = xp.ones((2, 3)), xp.ones((3, 4)), xp.zeros((2, 4))
    stream = xp.cuda.Stream(non_blocking=True)
    with stream:
        handle = ops.cublas_handle()
        xp.libcublas.cublasSetStream_v2(handle._h, stream.ptr)  # the workspace is gone again
    with pytest.raises(GraphCaptureError, match="cuBLAS would allocate its workspace during stream capture"):
        capture(xp, stream, lambda: ops.gemm(a, b, out=out))
    with stream:
        handle.bind(stream.ptr)  # stream, then workspace: capture is legal again
    np.testing.assert_array_equal(out, 0.0)
    capture(xp, stream, lambda: ops.gemm(a, b, out=out)).launch(stream=stream)
    np.testing.assert_array_equal(out, 3.0)


def test_a_gemm_on_another_streams_handle_is_refused_under_capture():
    xp = EmulatedCupy()
    ops = CupyOps(xp, cublas_lib=xp.libcublas)
    a, b, out = xp.ones((2, 3)), xp.ones((3, 4)), xp.zeros((2, 4))
    handle = ops.cublas_handle()  # bound to the null stream
    stream = xp.cuda.Stream(non_blocking=True)
    with pytest.raises(GraphCaptureError, match="would not be part of the graph"):
        capture(xp, stream, lambda: handle.gemm_arrays(a, b, out))


def test_host_reads_transfers_and_syncs_under_capture_fail_as_in_cupy():
    xp = EmulatedCupy()
    stream = xp.cuda.Stream(non_blocking=True)
    total = xp.zeros(())
    with pytest.raises(GraphCaptureError, match="D2H transfers are disallowed"):
        capture(xp, stream, lambda: float(total))
    with pytest.raises(GraphCaptureError, match="D2H transfers are disallowed"):
        capture(xp, stream, lambda: xp.asnumpy(total))
    with pytest.raises(GraphCaptureError, match="H2D transfers are disallowed"):
        capture(xp, stream, lambda: xp.asarray(np.ones(3)))
    with pytest.raises(GraphCaptureError, match="cudaErrorStreamCaptureUnsupported"):
        capture(xp, stream, stream.synchronize)
    assert float(total) == 0.0  # outside capture a host read is fine
    with pytest.raises(RuntimeError, match="cannot capture on the default"):
        xp.cuda.Stream.null.begin_capture()


@pytest.mark.skipif(not available(), reason="emulating CUDA kernels needs g++ on x86-64 Linux")
def test_first_use_kernel_compile_under_capture_is_refused():
    xp = EmulatedCupy()
    ops = CupyOps(xp, cublas_lib=xp.libcublas)
    y, x = xp.zeros((4,)), xp.ones((4,))
    with pytest.raises(GraphCaptureError, match="get_function.*during stream capture"):
        capture(xp, xp.cuda.Stream(non_blocking=True), lambda: ops.add_scaled(y, 2.0, x))
    ops.add_scaled(y, 2.0, x)  # compiled (and run) eagerly: now it may be captured
    stream = xp.cuda.Stream(non_blocking=True)
    capture(xp, stream, lambda: ops.add_scaled(y, 2.0, x)).launch(stream=stream)
    np.testing.assert_array_equal(y, 4.0)


def test_capture_leaves_capture_mode_when_the_step_fails():
    xp = EmulatedCupy()
    stream = xp.cuda.Stream(non_blocking=True)

    def failing():
        raise RuntimeError("cudaErrorStreamCaptureUnsupported")

    with pytest.raises(GraphCaptureError, match="failed under capture.*CaptureUnsupported"):
        capture(xp, stream, failing)
    assert not stream.is_capturing() and xp.recording is None
    capture(xp, stream, lambda: None)  # the stream can capture again


def test_capture_rejects_a_step_that_allocates():
    xp = EmulatedCupy()
    stream = xp.cuda.Stream(non_blocking=True)
    with pytest.raises(GraphCaptureError, match="allocated device memory 2 time"):
        capture(xp, stream, lambda: (xp.empty((3,)), xp.zeros((2, 2))))
    assert xp.hooks == []  # the counting hook is removed again
