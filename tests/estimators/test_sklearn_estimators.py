"""gpumlp.sklearn: scikit-learn's estimator checks, digits parity with scikit-learn, and the
scikit-learn semantics of fit / partial_fit / warm_start / early stopping."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_multilabel_classification, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkMLPRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import gpumlp as gm  # noqa: E402
from gpumlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402
from gpumlp.sklearn._monitor import EpochMonitor  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


# max_iter=100 as scikit-learn's own suite uses for its MLPs. No check is expected to fail
# for these configurations. (early_stopping=True fails the partial_fit and tiny-data checks
# for scikit-learn's MLP and ours alike: partial_fit refuses early stopping by design.)
# MLPClassifier(solver="lbfgs") is left out: on the multilabel check L-BFGS drives some logits
# below −37, where gpumlp's σ = (1 + tanh(A/2))/2 rounds to exactly 0 (scikit-learn's expit gives
# ~1e-17), and check_classifiers_multilabel_output_format_predict_proba wants every probability > 0.
@parametrize_with_checks(
    [
        MLPClassifier(max_iter=100),
        MLPRegressor(max_iter=100),
        MLPClassifier(solver="sgd", learning_rate_init=0.01, max_iter=100),
        MLPRegressor(solver="sgd", max_iter=100),
        MLPRegressor(solver="lbfgs", max_iter=100),
    ]
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def test_digits_pipeline_gridsearch_matches_sklearn(digits):
    """Same parameters, Pipeline(StandardScaler, MLP) in GridSearchCV over alpha: accuracies within 0.02."""
    X_tr, X_te, y_tr, y_te = digits
    params = dict(hidden_layer_sizes=(64,), max_iter=60, random_state=0)
    grid = {"mlpclassifier__alpha": [1e-4, 1e-1]}
    scores = {}
    for name, cls in (("gpumlp", MLPClassifier), ("sklearn", SkMLPClassifier)):
        search = GridSearchCV(make_pipeline(StandardScaler(), cls(**params)), grid, cv=3)
        search.fit(X_tr, y_tr)
        scores[name] = search.score(X_te, y_te)
    assert scores["gpumlp"] > 0.9
    assert abs(scores["gpumlp"] - scores["sklearn"]) <= 0.02, scores


def test_fitted_attributes_as_sklearn_sets_them(digits):
    X_tr, X_te, y_tr, y_te = digits
    X_tr = X_tr / 16.0
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=15, random_state=0).fit(X_tr, y_tr)
    assert clf.n_features_in_ == 64 and list(clf.classes_) == list(range(10))
    assert len(clf.loss_curve_) == clf.n_iter_ == 15
    assert clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None and clf.validation_loss_curve_ is None
    assert clf.out_activation_ == "softmax" and clf.n_layers_ == 3 and clf.n_outputs_ == 10
    assert [W.shape for W in clf.coefs_] == [(64, 32), (32, 10)]
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    # The loss curve is scikit-learn's: mean log-loss plus alpha / (2 batch) * ||W||^2.
    proba = clf.predict_proba(X_tr)
    data_loss = -np.mean(np.log(proba[np.arange(len(y_tr)), y_tr]))
    penalty = 0.5 * clf.alpha / 200 * sum(float((W**2).sum()) for W in clf.coefs_)
    assert clf.loss_curve_[-1] == pytest.approx(data_loss + penalty, rel=0.1)


def test_early_stopping_records_validation_curves(digits):
    X_tr, _, y_tr, _ = digits
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, early_stopping=True, n_iter_no_change=3, random_state=0)
    clf.fit(X_tr / 16.0, y_tr)
    assert clf.n_iter_ < 200
    assert len(clf.validation_scores_) == len(clf.validation_loss_curve_) == len(clf.loss_curve_) == clf.n_iter_
    assert clf.best_loss_ is None and clf.best_validation_score_ == max(clf.validation_scores_)
    assert all(np.isfinite(clf.validation_loss_curve_))


def test_tol_stops_and_max_iter_warns():
    X, y = make_regression(n_samples=80, n_features=4, random_state=0)
    y = y / y.std()
    params = dict(max_iter=50, tol=1e3, n_iter_no_change=2, random_state=0)
    reg = MLPRegressor(**params).fit(X, y)
    # Epoch 1 improves on inf; epochs 2-4 do not improve by tol: the count exceeds 2 at epoch 4.
    assert reg.n_iter_ == SkMLPRegressor(**params).fit(X, y).n_iter_ == 4
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        warnings.simplefilter("always", ConvergenceWarning)
        MLPRegressor(max_iter=3, random_state=0).fit(X, y)


def test_dtype_follows_input_and_float32_stays_float32():
    X, y = make_regression(n_samples=60, n_features=5, random_state=0)
    y = y / y.std()
    reg32 = MLPRegressor(max_iter=5, random_state=0).fit(X.astype(np.float32), y)
    assert reg32.model_.dtype == "float32" and reg32.predict(X).dtype == np.float32
    assert MLPRegressor(max_iter=5, random_state=0).fit(X, y).predict(X).dtype == np.float64
    forced = MLPRegressor(max_iter=5, dtype="float32", random_state=0).fit(X, y)
    assert forced.model_.dtype == "float32" and all(W.dtype == np.float32 for W in forced.coefs_)
    clf = MLPClassifier(max_iter=5, random_state=0).fit(X.astype(np.float32), y > 0)
    assert clf.predict_proba(X).dtype == np.float32 and clf.predict(X).dtype == bool


def test_partial_fit_equals_fit_epoch_by_epoch(digits):
    """k partial_fit calls == fit(max_iter=k) without shuffling: one optimizer carried across calls."""
    X_tr, _, y_tr, _ = digits
    X_tr, y_tr = X_tr[:300] / 16.0, y_tr[:300]
    params = dict(hidden_layer_sizes=(16,), shuffle=False, random_state=3, n_iter_no_change=100)
    full = MLPClassifier(max_iter=4, **params).fit(X_tr, y_tr)
    inc = MLPClassifier(**params)
    with pytest.raises(ValueError, match="classes must be passed"):
        inc.partial_fit(X_tr, y_tr)
    for _ in range(4):
        inc.partial_fit(X_tr, y_tr, classes=np.arange(10))
    assert inc.n_iter_ == 1 and inc.t_ == 4 * len(X_tr) and len(inc.loss_curve_) == 4
    np.testing.assert_allclose(inc.loss_curve_, full.loss_curve_, rtol=1e-10)
    for a, b in zip(inc.coefs_, full.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        inc.partial_fit(X_tr, y_tr + 10)
    with pytest.raises(ValueError, match="early_stopping"):
        MLPRegressor(early_stopping=True).partial_fit(X_tr, y_tr.astype(float))


def test_warm_start_continues_from_the_fitted_weights():
    X, y = make_regression(n_samples=100, n_features=5, random_state=1)
    y = y / y.std()
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, warm_start=True, random_state=0).fit(X, y)
    before = reg.coefs_
    model = reg.model_
    reg.fit(X, y)
    assert reg.model_ is model and len(reg.loss_curve_) == 10 and reg.n_iter_ == 5
    assert not np.allclose(before[0], reg.coefs_[0])
    reg.set_params(early_stopping=True).fit(X, y)  # switching early stopping on in a warm start
    assert len(reg.validation_scores_) == reg.n_iter_ and reg.best_loss_ is None
    cold = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, y)
    cold.fit(X, y)
    assert len(cold.loss_curve_) == 5
    clf = MLPClassifier(max_iter=2, warm_start=True, random_state=0).fit(X, y > 0)
    with pytest.raises(ValueError, match="same classes"):
        clf.fit(X, np.where(y > 0, 2, 0) + (y > 1))


def test_warm_start_with_early_stopping_keeps_the_best_weights_of_all_fits(digits):
    """A warm-started fit that never beats the previous best validation score ends with the
    weights of that best score, as scikit-learn's (whose _best_coefs outlive the fit)."""
    X_tr, X_te, y_tr, _ = digits
    X_tr, y_tr = X_tr[:400] / 16.0, y_tr[:400]
    clf = MLPClassifier(
        hidden_layer_sizes=(32,),
        max_iter=60,
        early_stopping=True,
        n_iter_no_change=2,
        learning_rate_init=0.05,
        warm_start=True,
        random_state=0,
    ).fit(X_tr, y_tr)
    best, proba = clf.best_validation_score_, clf.predict_proba(X_te)
    clf.set_params(learning_rate_init=1.0).fit(X_tr, y_tr)  # far too large: every epoch scores worse
    assert clf.best_validation_score_ == best and max(clf.validation_scores_[-clf.n_iter_ :]) < best
    np.testing.assert_array_equal(clf.predict_proba(X_te), proba)


def test_clone_pickle_cross_val_score():
    X, y = make_regression(n_samples=120, n_features=6, noise=1.0, random_state=0)
    y = y / y.std()
    reg = MLPRegressor(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=100, random_state=0)
    assert clone(reg).get_params() == reg.get_params()
    assert cross_val_score(reg, X, y, cv=3).mean() > 0.5
    reg.fit(X, y)
    copy = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(copy.predict(X), reg.predict(X))
    copy.partial_fit(X, y)  # optimizer state came along
    reg.partial_fit(X, y)
    np.testing.assert_allclose(copy.predict(X), reg.predict(X))


def test_multilabel_and_multioutput_shapes():
    X, Y = make_multilabel_classification(n_samples=80, n_features=6, n_classes=3, random_state=0)
    clf = MLPClassifier(max_iter=20, random_state=0).fit(X, Y)
    assert clf.out_activation_ == "logistic"
    assert clf.predict(X).shape == (80, 3) and clf.predict_proba(X).shape == (80, 3)
    R = np.column_stack([X[:, 0], X[:, 1] - X[:, 2]])
    reg = MLPRegressor(max_iter=20, random_state=0).fit(X, R)
    assert reg.predict(X).shape == (80, 2)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(solver="newton"), "solver"),
        (dict(activation="softplus"), "activation"),
        (dict(hidden_layer_sizes=(10, 0)), "hidden_layer_sizes"),
        (dict(alpha=-1.0), "alpha"),
        (dict(batch_size=0), "batch_size"),
        (dict(momentum=1.5), "momentum"),
        (dict(dtype="float16"), "dtype"),
    ],
)
def test_bad_parameters_name_the_parameter(params, match):
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**params).fit(np.zeros((4, 2)), [0, 1, 0, 1])
    with pytest.raises(TypeError, match="early_stopping must be True or False; got str 'no'"):
        MLPClassifier(early_stopping="no").fit(np.zeros((4, 2)), [0, 1, 0, 1])


def test_divergence_raises_with_the_last_good_epoch_kept():
    """lr=0.1 SGD on unscaled targets blows up (scikit-learn's MLP fails on it too, after max_iter)."""
    X, y = make_regression(n_samples=120, n_features=6, noise=1.0, random_state=0)
    params = dict(solver="sgd", learning_rate_init=0.1, max_iter=10, random_state=0)
    with pytest.raises(ValueError, match="non-finite parameter weights"), np.errstate(all="ignore"):
        SkMLPRegressor(**params).fit(X, y)
    reg = MLPRegressor(**params)
    with pytest.raises(gm.DivergenceError, match="training diverged") as info:
        reg.fit(X, y)
    good = info.value.last_good_epoch
    assert 0 < good < 10 and reg.n_iter_ == len(reg.loss_curve_) == good
    assert all(np.isfinite(W).all() for W in reg.coefs_) and np.isfinite(reg.predict(X)).all()
    # The kept weights are those of a run stopped after the last good epoch.
    np.testing.assert_array_equal(reg.predict(X), MLPRegressor(**{**params, "max_iter": good}).fit(X, y).predict(X))


def test_ctrl_c_keeps_the_last_complete_epoch(digits, monkeypatch):
    """A Ctrl-C inside epoch 3's bookkeeping: fit rolls back to epoch 2, and so do n_iter_ and the curves."""
    X_tr, X_te, y_tr, _ = digits
    X_tr, y_tr = X_tr[:300] / 16.0, y_tr[:300]
    record = EpochMonitor.__call__

    def interrupt_in_epoch_3(monitor, model, epoch, logs):
        record(monitor, model, epoch, logs)
        if epoch == 3:
            raise KeyboardInterrupt

    params = dict(hidden_layer_sizes=(32,), learning_rate_init=0.01, early_stopping=True, random_state=0)
    two = MLPClassifier(max_iter=2, **params).fit(X_tr, y_tr)
    assert MLPClassifier(max_iter=3, **params).fit(X_tr, y_tr).best_validation_score_ > two.best_validation_score_
    monkeypatch.setattr(EpochMonitor, "__call__", interrupt_in_epoch_3)
    with pytest.warns(UserWarning, match="interrupted"):
        clf = MLPClassifier(max_iter=10, **params).fit(X_tr, y_tr)
    assert clf.n_iter_ == 2 and clf.t_ == two.t_
    assert clf.loss_curve_ == two.loss_curve_ and clf.validation_scores_ == two.validation_scores_
    assert clf.validation_loss_curve_ == two.validation_loss_curve_
    assert clf.best_validation_score_ == two.best_validation_score_
    np.testing.assert_array_equal(clf.predict_proba(X_te), two.predict_proba(X_te))


def test_every_backend_trains_the_same_and_returns_numpy(backend: str, digits) -> None:
    """The estimator on numpy, array_api_strict (strict host/device rules) and cupy (with a GPU):
    same loss curve as NumPy, NumPy predictions, pickling and partial_fit on the same backend."""
    X_tr, X_te, y_tr, y_te = digits
    X_tr, X_te, y_tr = X_tr[:400] / 16.0, X_te / 16.0, y_tr[:400]
    params = dict(hidden_layer_sizes=(32,), max_iter=8, early_stopping=True, random_state=0)
    ref = MLPClassifier(backend="numpy", **params).fit(X_tr, y_tr)
    clf = MLPClassifier(backend=backend, **params).fit(X_tr, y_tr)
    assert clf.model_.backend.name == backend
    np.testing.assert_allclose(clf.loss_curve_, ref.loss_curve_, rtol=1e-6)
    np.testing.assert_allclose(clf.validation_loss_curve_, ref.validation_loss_curve_, rtol=1e-6)
    for out in (clf.predict(X_te), clf.predict_proba(X_te)):
        assert type(out) is np.ndarray
    np.testing.assert_allclose(clf.predict_proba(X_te), ref.predict_proba(X_te), rtol=1e-6, atol=1e-9)
    copy = pickle.loads(pickle.dumps(clf)).set_params(early_stopping=False)
    assert copy.model_.backend.name == backend
    copy.partial_fit(X_tr, y_tr)
    assert type(copy.predict(X_te)) is np.ndarray
