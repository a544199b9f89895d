"""Issue 16: the output layer's bias + activation made by the one-block output-delta + loss kernel
(CupyOps.defer_output_activation), on the CPU CUDA emulator.

The device loop defers Ŷ = g(A_L + b_L) into the kernel that makes the output delta, the loss sum,
the output bias update and the batch-counter advance (one launch fewer per step). It must give the
bits of the separate bias + activation kernel, for every output activation and loss, on graph
replays as on eager steps, and agree with NumPy; an op that reads Ŷ before that kernel (a loss sum
of its own, an output delta that cannot take the fold) makes the bias + activation first.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpumlp as gm
from gpumlp.workspace import Workspace

from agreement import OUTPUT_LOSS, flat, rel, targets
from cuda_emulator import EmulatedBackend, available

pytestmark = pytest.mark.skipif(not available(), reason="emulating CUDA kernels needs g++ on x86-64 Linux")


@pytest.fixture(scope="module")
def emu() -> EmulatedBackend:
    return EmulatedBackend()


def _fit(backend, output, loss, dtype, opt, **kw):
    rng = np.random.default_rng(11)
    X, T = rng.normal(size=(37, 6)), targets(rng, loss, 37, 4)  # 37 = 4 batches of 8 and one of 5
    model = gm.MLP([6, 7, 4], hidden_activation="tanh", output_activation=output, dtype=dtype, backend=backend, seed=2)
    history = model.fit(X, T, loss=loss, epochs=2, batch_size=8, seed=3, **opt, **kw)
    return model, history


@pytest.mark.parametrize("opt", [dict(optimizer="sgd", lr=0.1), dict(optimizer="adam", lr=0.01)], ids=["sgd", "adam"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("output,loss", OUTPUT_LOSS)
def test_the_folded_output_forward_gives_the_bits_of_the_separate_kernel(emu, output, loss, dtype, opt):
    plain, h_plain = _fit(emu, output, loss, dtype, opt)  # the plain loop: bias + activation kernel of its own
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graphed, h_graph = _fit(emu, output, loss, dtype, opt, cuda_graph=True)
    np.testing.assert_array_equal(flat(graphed), flat(plain))
    assert h_graph["loss"] == h_plain["loss"]
    ref, h_ref = _fit("numpy", output, loss, dtype, opt)
    assert rel(flat(graphed), flat(ref)) < (1e-10 if dtype == "float64" else 1e-4)


def _deferred(emu, output):
    """A model, its workspace of 5 rows with Z[L] holding only the output GEMM (the bias + activation
    deferred), and Ŷ made without deferring, for comparison."""
    rng = np.random.default_rng(5)
    model = gm.MLP([3, 4], output_activation=output, dtype="float64", backend=emu, seed=1)
    ws = Workspace.unbuffered(model, model.to_device(rng.normal(size=(5, 3))))
    expected = np.array(model.forward_into(ws))
    ops, launches = model.ops, emu.xp.launches
    ops.defer_output_activation(ws.Z[1])
    Y = model.forward_into(ws)
    assert emu.xp.launches == launches  # the GEMM only: no bias + activation kernel yet
    return model, ws, Y, expected


@pytest.mark.parametrize("output,loss", [("softmax", "cross_entropy"), ("sigmoid", "mse"), ("identity", "mse")])
def test_whatever_reads_the_output_first_makes_the_deferred_bias_and_activation(emu, output, loss):
    T = emu.xp.asarray(targets(np.random.default_rng(6), loss, 5, 4))
    readers = [
        lambda m, Y: m.ops.loss_sum(loss, Y, T),
        lambda m, Y: m.ops.output_delta(output, loss, Y, T, 0.2),  # no deferred loss sum: the plain delta
        lambda m, Y: m.ops.flush_loss_sum(),
        lambda m, Y: m.ops.add_loss_sum(loss, Y, T, emu.xp.zeros((), dtype=np.float64)),
    ]
    for read in readers:
        model, ws, Y, expected = _deferred(emu, output)
        read(model, Y)
        np.testing.assert_array_equal(np.array(Y), expected)


def test_a_step_that_fails_leaves_nothing_deferred(emu, monkeypatch):
    """A device-loop step that fails between its gather and its output layer drops the deferral, so a
    later forward into the same workspace makes its bias + activation as usual."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, 3)), rng.integers(0, 4, 16)
    model = gm.MLP([3, 4], dtype="float64", backend=emu, seed=1)
    ops, gemm = model.ops, model.ops.gemm

    def failing(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(ops, "gemm", failing)
    with pytest.raises(RuntimeError, match="injected"):
        model.fit(X, y, epochs=1, batch_size=8, cuda_graph=True)
    monkeypatch.setattr(ops, "gemm", gemm)
    ws = model.workspace(8)
    ws.Z[0][...] = model.to_device(X[:8])
    launches = emu.xp.launches
    Y = model.forward_into(ws)
    assert emu.xp.launches == launches + 1  # the bias + softmax kernel (the GEMM is counted apart)
    np.testing.assert_allclose(np.array(Y), model.predict(X[:8]), rtol=1e-14)
