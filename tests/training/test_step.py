"""Issue 17: one training step. The eager loop, the fused CPU path and the CUDA-graph device loop
(on the CPU emulator of CuPy) all run gpumlp.training.step.train_step, and nothing else steps."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import gpumlp as gm
from gpumlp.training import cuda_graph, step

from cuda_emulator import EmulatedBackend, available

fit = importlib.import_module("gpumlp.training.fit")  # the module; gpumlp.training.fit is the function


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Count train_step calls made through either loop module (each records whether the step was fused)."""
    calls: list[bool] = []
    real = step.train_step

    def counting(model, ws, batch, losses, update, config, denom, **kw):
        calls.append(config.fused)
        return real(model, ws, batch, losses, update, config, denom, **kw)

    monkeypatch.setattr(fit, "train_step", counting)
    monkeypatch.setattr(cuda_graph, "train_step", counting)
    return calls


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(43, 5)), rng.integers(0, 3, 43)  # 5 batches of 8 and one of 3


def test_both_loops_import_the_same_step_function():
    assert fit.train_step is step.train_step
    assert cuda_graph.train_step is step.train_step


@pytest.mark.parametrize("kw,fused", [({}, True), ({"clip_norm": 1.0}, False), ({"optimizer": "adam"}, None)])
def test_eager_and_fused_epochs_step_only_through_train_step(monkeypatch, kw, fused):
    calls = _spy(monkeypatch)
    X, y = _data()
    gm.MLP([5, 8, 3], backend="numpy", seed=1).fit(X, y, epochs=2, batch_size=8, compiled=False, **kw)
    assert len(calls) == 2 * 6
    if fused is not None:
        assert set(calls) == {fused}


@pytest.mark.skipif(not available(), reason="emulating CUDA kernels needs g++ on x86-64 Linux")
@pytest.mark.parametrize("graphs", [False, True])
def test_the_device_loop_steps_only_through_train_step(monkeypatch, graphs):
    calls = _spy(monkeypatch)
    X, y = _data()
    model = gm.MLP([5, 8, 3], hidden_activation="tanh", dtype="float64", backend=EmulatedBackend(), seed=3)
    model.fit(X, y, epochs=2, batch_size=8, seed=5, cuda_graph=graphs)
    # Eager: every step is a call. With graphs, steps replayed from a graph are not Python calls,
    # but every captured or eager step still went through train_step (at least one per batch shape).
    assert len(calls) == 12 if not graphs else 2 <= len(calls) <= 12
