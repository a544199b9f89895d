"""gpumlp.sklearn against scikit-learn itself, float64 and no shuffling: the same weights and
``loss_curve_`` for ``alpha`` with a partial last batch and for ``sample_weight`` (sgd with and
without (Nesterov) momentum, adam; classifier and regressor)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkMLPRegressor  # noqa: E402

from gpumlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

SOLVERS = {
    "sgd": dict(solver="sgd", momentum=0.0, learning_rate_init=0.05),
    "momentum": dict(solver="sgd", momentum=0.9, nesterovs_momentum=False, learning_rate_init=0.02),
    "nesterov": dict(solver="sgd", momentum=0.9, nesterovs_momentum=True, learning_rate_init=0.02),
    "adam": dict(solver="adam", learning_rate_init=0.01),
}


def _data(task: str, n: int = 53):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((n, 5))
    if task == "multiclass":
        y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    elif task == "binary":
        y = (X[:, 0] + X[:, 2] > 0).astype(int)
    elif task == "regression":
        y = X[:, 0] - 2 * X[:, 1] + 0.1 * rng.standard_normal(n)
    else:  # two outputs
        y = np.column_stack([X[:, 0] - X[:, 1], np.sin(X[:, 2])])
    w = rng.integers(0, 4, n).astype(float) + rng.random(n)
    return X, y, w


def _pair(task: str, solver: str, **extra):
    est = (SkMLPRegressor, MLPRegressor) if task.startswith("regression") or task == "multioutput" else None
    est = est or (SkMLPClassifier, MLPClassifier)
    params = {
        "hidden_layer_sizes": (6, 4),
        "activation": "tanh",
        "alpha": 0.3,
        "batch_size": 10,  # 53 rows: five batches of 10 and one of 3
        "max_iter": 6,
        "shuffle": False,
        "random_state": 3,
        "tol": 0.0,
        **SOLVERS[solver],
        **extra,
    }
    return est[0](**params), est[1](**params, dtype="float64", backend="numpy")


def _fit_both(sk, gm, X, y, **fit_kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X, y, **fit_kw)
        gm.fit(X, y, **fit_kw)


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("task", ["multiclass", "binary", "regression", "multioutput"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
def test_weights_and_loss_curve_equal_sklearn(task, solver, weighted):
    X, y, w = _data(task)
    sk, gm = _pair(task, solver)
    _fit_both(sk, gm, X, y, **({"sample_weight": w} if weighted else {}))
    np.testing.assert_allclose(gm.loss_curve_, sk.loss_curve_, rtol=1e-11, atol=0)
    for a, b in zip(gm.coefs_ + gm.intercepts_, sk.coefs_ + sk.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert gm.n_iter_ == sk.n_iter_ and gm.t_ == sk.t_


@pytest.mark.parametrize("batch_size", [1, 4, 7, 52, 53, 200])
def test_every_batch_size_equals_sklearn(batch_size):
    X, y, w = _data("multiclass")
    sk, gm = _pair("multiclass", "adam", batch_size=batch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # batch_size 200 > 53 is clipped, with a warning, by both
        _fit_both(sk, gm, X, y, sample_weight=w)
    np.testing.assert_allclose(gm.loss_curve_, sk.loss_curve_, rtol=1e-11, atol=0)
    for a, b in zip(gm.coefs_, sk.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_partial_fit_and_score_with_sample_weight_equal_sklearn():
    X, y, w = _data("regression")
    sk, gm = _pair("regression", "momentum")
    for _ in range(3):
        sk.partial_fit(X, y, sample_weight=w)
        gm.partial_fit(X, y, sample_weight=w)
    np.testing.assert_allclose(gm.loss_curve_, sk.loss_curve_, rtol=1e-11)
    assert gm.score(X, y, sample_weight=w) == pytest.approx(sk.score(X, y, sample_weight=w), rel=1e-10)
    assert gm.score(X, y, sample_weight=w) != pytest.approx(gm.score(X, y), rel=1e-6)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_early_stopping_scores_use_the_weights(task):
    X, y, w = _data(task, n=120)
    sk, gm = _pair(task, "adam", early_stopping=True, validation_fraction=0.25, max_iter=8)
    _fit_both(sk, gm, X, y, sample_weight=w)
    np.testing.assert_allclose(gm.validation_scores_, sk.validation_scores_, rtol=1e-9)
    np.testing.assert_allclose(gm.loss_curve_, sk.loss_curve_, rtol=1e-11)
    assert gm.best_validation_score_ == pytest.approx(sk.best_validation_score_, rel=1e-9)


@pytest.mark.parametrize(
    "sample_weight, match",
    [
        (np.ones(5), r"sample_weight.shape == \(5,\), expected \(53,\)"),  # scikit-learn's checks
        (np.full(53, np.nan), "sample_weight contains NaN"),
        (np.full(53, -1.0), "sample_weight must be >= 0"),  # gpumlp's
        (np.zeros(53), "weights must contain at least one non-zero"),
    ],
)
def test_bad_sample_weight_is_named(sample_weight, match):
    X, y, _ = _data("binary")
    with pytest.raises(ValueError, match=match):
        MLPClassifier(max_iter=2).fit(X, y, sample_weight=sample_weight)
