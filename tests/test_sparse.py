"""Sparse X (scipy.sparse CSR/CSC/COO; cupyx on the GPU): the same results as the dense path, memory
proportional to nnz, clear errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sp = pytest.importorskip("scipy.sparse")

import gpumlp as gm  # noqa: E402

GPU = pytest.mark.skipif(not gm.has_gpu(), reason="no CUDA GPU with CuPy on this machine")


def _data(n: int = 57, d: int = 30, seed: int = 1):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.1, format="csr", random_state=seed, dtype=np.float64)
    y = rng.integers(0, 3, n)
    return X, y, rng.random(n)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "lbfgs"])
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
@pytest.mark.parametrize("backend", ["numpy", pytest.param("cupy", marks=[pytest.mark.gpu, GPU])])
def test_sparse_fit_equals_dense(backend, fmt, optimizer):
    X, y, w = _data()
    models, hist = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lbfgs stops at epochs=3 before converging
        for data in (X.asformat(fmt), X.toarray()):
            m = gm.MLP([30, 8, 3], hidden_activation="tanh", dtype="float64", backend=backend, seed=0)
            kw = dict(optimizer=optimizer, epochs=3, batch_size=10, l2=0.1, l2_per_sample=True, sample_weight=w)
            hist.append(m.fit(data, y, validation_data=(data, y), **kw))
            models.append(m)
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(hist[0][key], hist[1][key], rtol=1e-12)
    for (Wa, ba), (Wb, bb) in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_allclose(Wa, Wb, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(ba, bb, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(models[0].predict(X), models[1].predict(X.toarray()), rtol=1e-11)
    assert models[0].loss(X, y) == pytest.approx(models[1].loss(X.toarray(), y), rel=1e-12)


def test_sparse_gradients_equal_dense():
    X, y, _ = _data()
    m = gm.MLP([30, 5, 3], dtype="float64", backend="numpy", seed=2)
    for (a, b), (c, d) in zip(m.gradients(X, y, l2=0.3), m.gradients(X.toarray(), y, l2=0.3)):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(b, d, rtol=1e-12, atol=1e-15)


def test_estimators_take_sparse_x():
    from sklearn.neural_network import MLPRegressor as SkMLPRegressor

    from gpumlp.sklearn import MLPClassifier, MLPRegressor

    X, y, w = _data(n=80)
    params = dict(hidden_layer_sizes=(6,), max_iter=5, batch_size=16, random_state=0, shuffle=False, alpha=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fmt in ("csr", "csc", "coo"):
            a = MLPClassifier(**params, dtype="float64").fit(X.asformat(fmt), y, sample_weight=w)
            b = MLPClassifier(**params, dtype="float64").fit(X.toarray(), y, sample_weight=w)
            np.testing.assert_allclose(a.predict_proba(X.asformat(fmt)), b.predict_proba(X.toarray()), rtol=1e-10)
            np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-12)
            assert a.score(X, y, sample_weight=w) == b.score(X.toarray(), y, sample_weight=w)
            a.partial_fit(X.asformat(fmt), y)
            b.partial_fit(X.toarray(), y)
            np.testing.assert_allclose(a.coefs_[0], b.coefs_[0], rtol=1e-10, atol=1e-13)
        # and against scikit-learn itself on the sparse matrix
        t = X @ np.arange(30.0)
        ours = MLPRegressor(**params, dtype="float64", backend="numpy").fit(X, t)
        theirs = SkMLPRegressor(**params).fit(X, t)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9, atol=1e-12)


def test_sparse_errors_name_the_problem():
    X, y, _ = _data()
    m = gm.MLP([30, 4, 3], backend="numpy")
    bad = X.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or infinite values"):
        m.fit(bad, y)
    with pytest.raises(ValueError, match="X has 30 features per sample; the model expects 31"):
        gm.MLP([31, 3], backend="numpy").predict(X)
    with pytest.raises(ValueError, match="does not support sparse X"):
        m.fit(X, y, batch_size=10, cuda_graph=True)
    with pytest.raises(TypeError, match="only X .* may be sparse"):
        gm.MLP([30, 1], output_activation="identity", backend="numpy").fit(X, sp.csr_matrix(np.ones((57, 1))))
    with pytest.raises(TypeError, match="array_api_strict' has no sparse matrices"):
        gm.MLP([30, 3], backend="array_api_strict").predict(X)


@pytest.mark.slow
def test_memory_stays_proportional_to_nnz():
    """100,000 x 50,000 at 0.1% density: 5e6 stored values (~40 MB as CSR float32) against 20 GB dense.
    fit + validation + predict in a fresh process must peak far below the dense size (< 2 GB, 10%)."""
    worker = Path(__file__).with_name("sparse_memory_worker.py")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run([sys.executable, str(worker)], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    peak = int(re.search(r"peak_rss=(\d+)", out.stdout).group(1))
    dense = 100_000 * 50_000 * 4
    assert peak < dense / 10, out.stdout
