"""solver="lbfgs" against scikit-learn, and the core's optimizer="lbfgs" against ridge regression's closed form."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkMLPRegressor  # noqa: E402

import gpumlp as gm  # noqa: E402
from gpumlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


def test_digits_accuracy_within_two_points_of_sklearn_lbfgs():
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    params = dict(solver="lbfgs", hidden_layer_sizes=(32,), max_iter=40, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(**params).fit(X_tr, y_tr).score(X_te, y_te)
        theirs = SkMLPClassifier(**params).fit(X_tr, y_tr).score(X_te, y_te)
    assert ours > 0.9
    assert abs(ours - theirs) <= 0.02, (ours, theirs)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("est", ["classifier", "regressor"])
def test_lbfgs_equals_sklearn_in_float64(est, weighted):
    """Same start, same objective and gradient: scipy takes the same steps (to rounding)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    if est == "classifier":
        y, classes = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5), (SkMLPClassifier, MLPClassifier)
    else:
        y, classes = np.c_[X[:, 0] - X[:, 1], np.sin(X[:, 2])], (SkMLPRegressor, MLPRegressor)
    kw = {"sample_weight": rng.random(40) * 3} if weighted else {}
    params = dict(solver="lbfgs", hidden_layer_sizes=(5,), activation="tanh", alpha=0.3, max_iter=15, random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = classes[0](**params).fit(X, y, **kw)
        ours = classes[1](**params, dtype="float64", backend="numpy").fit(X, y, **kw)
    assert ours.n_iter_ == sk.n_iter_
    assert ours.loss_ == pytest.approx(sk.loss_, rel=1e-10)
    for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)
    assert len(ours.loss_curve_) == ours.n_iter_ and ours.loss_curve_[-1] == pytest.approx(ours.loss_)


def test_lbfgs_warns_at_max_iter_and_has_no_partial_fit():
    X, y = load_digits(return_X_y=True)
    clf = MLPClassifier(solver="lbfgs", hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    with pytest.warns(ConvergenceWarning, match=r"lbfgs failed to converge after 3 iteration\(s\)"):
        clf.fit(X[:200] / 16.0, y[:200])
    assert clf.n_iter_ == 3
    assert not hasattr(clf, "partial_fit")
    with pytest.raises(AttributeError, match="has no attribute 'partial_fit'"):
        clf.partial_fit(X, y)
    with pytest.raises(ValueError, match="max_fun"):
        MLPClassifier(solver="lbfgs", max_fun=0).fit(X[:20], y[:20])


@pytest.mark.parametrize("l2_per_sample", [False, True])
def test_core_lbfgs_reaches_the_ridge_solution(backend, l2_per_sample):
    """A linear net (no hidden layer, identity output, mse) with L2 on W: the minimiser of
    (1/Σw) Σ w_n ½(x_n·W + b − t_n)² + (λ'/2)‖W‖² solves weighted ridge's normal equations."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 3))
    t = X @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.standard_normal(60)
    w = rng.random(60) + 0.1
    lam = 0.4
    lam_eff = lam / w.sum() if l2_per_sample else lam
    A = np.c_[X, np.ones(60)]
    M = A.T @ (w[:, None] * A) / w.sum() + lam_eff * np.diag([1.0, 1, 1, 0])
    exact = np.linalg.solve(M, A.T @ (w * t) / w.sum())
    model = gm.MLP([3, 1], output_activation="identity", dtype="float64", backend=backend, seed=0)
    h = model.fit(X, t, optimizer="lbfgs", epochs=100, l2=lam, l2_per_sample=l2_per_sample, sample_weight=w)
    ((W, b),) = model.get_weights()
    np.testing.assert_allclose(np.r_[W.ravel(), b], exact, rtol=1e-4, atol=1e-5)
    best = w @ (0.5 * (A @ exact - t) ** 2) / w.sum() + 0.5 * lam_eff * (exact[:3] ** 2).sum()
    assert h["loss"][-1] == pytest.approx(best, rel=1e-7)
    assert len(h["loss"]) < 100  # converged: no max_iter warning


def test_core_lbfgs_refuses_minibatch_settings():
    model = gm.MLP([3, 1], output_activation="identity", backend="numpy")
    X, t = np.zeros((5, 3)), np.zeros(5)
    with pytest.raises(ValueError, match="optimizer='lbfgs' .* does not support clip_norm=1.0"):
        model.fit(X, t, optimizer="lbfgs", batch_size=None, clip_norm=1.0)
    with pytest.raises(ValueError, match="does not support early_stopping=True"):
        model.fit(X, t, optimizer="lbfgs", batch_size=None, early_stopping=True)
