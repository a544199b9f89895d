"""The fused CPU path (gpumlp.training.fused): when fit takes it, what buffers it keeps, and that it
ends at the reference's weights on remainder batches, depths 1 and 4, layers past the BLAS
threshold and the non-canonical output/loss pairs. tests/backends/test_numpy_ops.py compares
NumpyOps with the reference on the common cases.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpumlp as gm
from gpumlp.backends import Backend, _blas
from gpumlp.backends.numpy_ops import NumpyOps
from gpumlp.optimizers import SGD, Adam
from gpumlp.training import Trainer

from agreement import max_rel_diff


def _data(n=200, d=7, k=3, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = rng.integers(0, k, n)
    return X, y


def test_the_fused_path_is_what_numpy_fit_uses():
    model = gm.MLP([4, 5, 2], backend="numpy", seed=0)
    assert Trainer(model, "cross_entropy", SGD(lr=0.1), 0.0, 8, True, model.rng).config.fused
    assert Trainer(model, "cross_entropy", Adam(), 0.0, 8, True, model.rng).config.fused
    # steps that need the whole gradient first take the reference order
    assert not Trainer(model, "cross_entropy", SGD(lr=0.1), 0.0, 8, True, model.rng, clip_norm=1.0).config.fused

    class OwnStep(SGD):
        def step(self, params, grads):
            super().step(params, grads)

    assert not OwnStep(lr=0.1).fusable
    assert not Trainer(model, "cross_entropy", OwnStep(lr=0.1), 0.0, 8, True, model.rng).config.fused
    ref = gm.MLP([4, 5, 2], backend=gm.get_backend("numpy", fast=False), seed=0)
    assert not Trainer(ref, "cross_entropy", SGD(lr=0.1), 0.0, 8, True, ref.rng).config.fused


def test_fused_workspaces_hold_no_full_gradient_and_gain_it_on_demand():
    X, y = _data(n=64)
    ops = NumpyOps(np)
    ops.gemm_update_min_size = 0  # one-call GEMM updates even for these small matrices
    model = gm.MLP([7, 6, 3], backend=Backend(np, ops), seed=0)
    model.fit(X, y, epochs=1, batch_size=16, compiled=False)  # plain SGD: W ← W − η Zᵀ D in the GEMM itself
    ws = model._workspaces[16]
    assert ws.grads == []
    assert (ws.update_plan is None) == (_blas.routine(np.float64) is not None)
    model.fit(X, y, epochs=1, batch_size=16, optimizer="adam", compiled=False)  # Adam: gradient blocks
    assert ws.grads == [] and ws.update_plan is not None
    model.fit(X, y, epochs=1, batch_size=16, clip_norm=1.0, compiled=False)  # needs the full gradient: allocated now
    assert len(model._workspaces[16].grads) == 2  # (dW, db) of each layer
    assert len(model._workspaces[16].flat_grad_list()) == 4
    g = model.gradients(X[:5], y[:5])
    assert len(g) == 2 and g[0][0].shape == (7, 6)


# ----- what tests/backends/test_numpy_ops.py leaves out: remainder batches, depth 1 and 4, layers
# past the BLAS threshold, the non-canonical output/loss pairs (regressions found in review) ---------
REF = gm.get_backend("numpy", fast=False)


def _targets(rng, n, k, loss, output):
    if loss == "cross_entropy":
        return rng.integers(0, k, n)
    if loss == "binary_cross_entropy":
        return (rng.random((n, k)) > 0.5).astype(float)
    return rng.random((n, k)) if output in ("softmax", "sigmoid") else rng.standard_normal((n, k))


GAP_OPTIMIZERS = {
    "sgd": lambda: SGD(lr=0.05),
    "momentum": lambda: SGD(lr=0.05, momentum=0.9),
    "nesterov": lambda: SGD(lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda: Adam(lr=0.003),
}
GAP_CASES = [
    # (sizes, hidden, output, loss, l2): 53 samples in batches of 16 leave a remainder batch of 5
    ([5, 3], "relu", "softmax", "cross_entropy", 0.01),  # depth 1
    ([5, 7, 6, 7, 3], "sigmoid", "sigmoid", "cross_entropy", 0.0),  # depth 4, non-canonical pair
    ([5, 7, 3], "tanh", "softmax", "binary_cross_entropy", 0.01),
    ([5, 7, 3], "identity", "softmax", "mse", 0.01),
    ([5, 200, 200, 3], "relu", "identity", "mse", 0.01),  # 200x200: W updated inside one BLAS GEMM
    ([5, 200, 200, 3], "tanh", "sigmoid", "mse", 0.0),
]


@pytest.mark.parametrize("opt", sorted(GAP_OPTIMIZERS))
@pytest.mark.parametrize("case", range(len(GAP_CASES)))
def test_fused_path_matches_reference_in_float64_on_remainders_depths_and_odd_pairs(case, opt):
    sizes, hidden, output, loss, l2 = GAP_CASES[case]
    rng = np.random.default_rng(case)
    X = rng.standard_normal((53, sizes[0]))
    Y = _targets(rng, 53, sizes[-1], loss, output)
    kw = dict(loss=loss, l2=l2, epochs=3, batch_size=16, seed=2)
    ref = gm.MLP(sizes, hidden, output, dtype="float64", backend=REF, seed=1)
    fast = gm.MLP(sizes, hidden, output, dtype="float64", backend="numpy", seed=1)
    o_ref, o_fast = GAP_OPTIMIZERS[opt](), GAP_OPTIMIZERS[opt]()
    h_ref, h_fast = ref.fit(X, Y, optimizer=o_ref, **kw), fast.fit(X, Y, optimizer=o_fast, **kw)
    assert o_ref.t == o_fast.t == 12
    assert max_rel_diff(fast, ref) < 1e-10
    np.testing.assert_allclose(h_fast["loss"], h_ref["loss"], rtol=1e-12)
    for k, arrays in o_ref.state.items():
        for a, b in zip(o_fast.state[k], arrays):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-15)
