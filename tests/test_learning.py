"""The network learns: the seeds' XOR nets, and digits against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

import gpumlp as gm


def _learns_xor(hidden: int, seed: int, backend: str) -> bool:
    X, c = gm.load_dataset("xor")
    model = gm.MLP(
        [2, hidden, 1],
        hidden_activation="sigmoid",
        output_activation="sigmoid",
        dtype="float64",
        backend=backend,
        seed=seed,
    )
    model.fit(X, c, loss="mse", lr=2.0, epochs=5000, batch_size=None, shuffle=False)  # full-batch GD
    return bool(np.all((model.predict(X).ravel() > 0.5) == (c > 0.5)))


def test_xor_2_2_1_learns_for_most_seeds():
    """The seeds' 2-2-1 sigmoid net with E = 1/(2N) Σ (c − y)²: local minima exist, most seeds escape them."""
    wins = sum(_learns_xor(2, seed, "numpy") for seed in range(10))
    assert wins >= 7


def test_xor_2_4_1_learns_for_every_seed():
    assert all(_learns_xor(4, seed, "numpy") for seed in range(10))


def test_xor_learns_on_every_backend(backend):
    assert _learns_xor(4, 0, backend)


@pytest.fixture(scope="module")
def digits_split():
    pytest.importorskip("sklearn", reason="the digits dataset ships with scikit-learn")
    X, y = gm.load_dataset("digits")
    return gm.train_test_split(X, y, test_size=0.25, seed=0, stratify=True)


def test_digits_small_relu_net_reaches_95_percent(digits_split, backend):
    Xtr, Xte, ytr, yte = digits_split
    model = gm.MLP([64, 64, 10], hidden_activation="relu", backend=backend, seed=0)
    model.fit(Xtr, ytr, lr=0.1, momentum=0.9, epochs=30, batch_size=32)
    acc = float(np.mean(gm.to_numpy(model.predict(Xte)).argmax(axis=1) == yte))
    assert acc >= 0.95


def test_digits_within_two_points_of_sklearn(digits_split):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    Xtr, Xte, ytr, yte = digits_split
    epochs, bs, lr = 40, 32, 0.05
    ref = MLPClassifier(
        hidden_layer_sizes=(64,),
        activation="relu",
        solver="sgd",
        learning_rate_init=lr,
        momentum=0.9,
        nesterovs_momentum=False,
        batch_size=bs,
        max_iter=epochs,
        alpha=0.0,
        tol=0.0,
        n_iter_no_change=epochs + 1,
        random_state=0,
    )
    with pytest.warns(ConvergenceWarning):
        ref.fit(Xtr, ytr)
    model = gm.MLP([64, 64, 10], hidden_activation="relu", backend="numpy", seed=0)
    model.fit(Xtr, ytr, optimizer="sgd", lr=lr, momentum=0.9, epochs=epochs, batch_size=bs)
    ours = float(np.mean(model.predict(Xte).argmax(axis=1) == yte))
    theirs = ref.score(Xte, yte)
    assert abs(ours - theirs) <= 0.02, (ours, theirs)


def test_spirals_need_hidden_layers():
    X, y = gm.load_dataset("spirals", n_samples=600, noise=0.02)
    model = gm.MLP([2, 32, 32, 2], hidden_activation="tanh", backend="numpy", seed=0)
    model.fit(X, y, optimizer="adam", lr=0.03, epochs=200, batch_size=32)
    assert np.mean(model.predict(X).argmax(axis=1) == y) > 0.9
