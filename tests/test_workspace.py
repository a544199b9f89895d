"""Workspaces: buffers per batch shape, gradients by layer, bounded caching, no writes to user data."""

from __future__ import annotations

import numpy as np
import pytest

import gpumlp as gm
from gpumlp.network import MAX_WORKSPACES


def test_gradients_are_reachable_by_layer_and_are_views_of_one_buffer():
    model = gm.MLP([4, 6, 3], dtype="float64", seed=0, backend="numpy")
    ws = model.workspace(5)
    assert len(ws.grads) == 2
    for l, layer in enumerate(model.layers, 1):
        assert ws.dW(l).shape == layer.W.shape and ws.db(l).shape == layer.b.shape
        assert ws.grads[l - 1] == (ws.dW(l), ws.db(l))
        assert np.shares_memory(ws.dW(l), ws.flat_grads) and np.shares_memory(ws.db(l), ws.flat_grads)
    assert [g.shape for g in ws.flat_grad_list()] == [p.shape for p in model.params]


def test_fits_on_ever_new_batch_sizes_keep_a_bounded_number_of_workspaces():
    # Bug: one full set of buffers was kept per batch size ever seen (fit(batch_size=None) on
    # chunks of varying size kept every chunk's activations alive: 650 MiB after 20 chunks).
    rng = np.random.default_rng(0)
    model = gm.MLP([4, 6, 3], seed=0, backend="numpy")
    for n in range(10, 22):
        model.fit(rng.standard_normal((n, 4)), rng.integers(0, 3, n), epochs=1, batch_size=None)
        assert n in model._workspaces
    assert len(model._workspaces) == MAX_WORKSPACES


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fit_never_writes_to_the_users_arrays(shuffle, optimizer):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6)).astype(np.float32)  # float32, C-contiguous: used without a copy
    Y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 40)]
    X0, Y0 = X.copy(), Y.copy()
    model = gm.MLP([6, 150, 120, 3], "relu", dtype="float32", seed=0, backend="numpy")
    for bs in (None, 16):
        model.fit(X, Y, epochs=2, batch_size=bs, shuffle=shuffle, optimizer=optimizer, validation_data=(X, Y))
    model.gradients(X, Y), model.loss(X, Y), model.predict(X)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(Y, Y0)
    for ws in model._workspaces.values():
        assert not any(np.shares_memory(a, X) or np.shares_memory(a, Y) for a in ws.Z + [ws.T])
