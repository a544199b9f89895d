"""The public API of DESIGN.md section 4: names, dtypes, array kinds, round trips, errors."""

from __future__ import annotations

import numpy as np
import pytest

import gpumlp as gm


def _data(n=40, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, k, n)


def test_public_names_exist():
    names = ["MLP", "fit", "load", "gradcheck", "get_backend", "backend_info", "has_gpu", "to_numpy", "DivergenceError"]
    for name in names:
        assert hasattr(gm, name), name
    for meth in ["fit", "predict", "loss", "gradients", "get_weights", "set_weights", "save", "forward", "to"]:
        assert callable(getattr(gm.MLP, meth)), meth
    assert issubclass(gm.DivergenceError, FloatingPointError)


def test_layers_shapes_and_initial_weights_are_backend_independent(backend):
    model = gm.MLP([5, 7, 3], backend=backend, seed=11)
    ref = gm.MLP([5, 7, 3], backend="numpy", seed=11)
    assert [tuple(l.W.shape) for l in model.layers] == [(5, 7), (7, 3)]
    assert [tuple(l.b.shape) for l in model.layers] == [(7,), (3,)]
    for (W, b), (rW, rb) in zip(model.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(W, rW)
        np.testing.assert_array_equal(b, rb)
    assert model.backend.name == backend


def test_float32_stays_float32_throughout(backend):
    X, y = _data()
    model = gm.MLP([5, 8, 3], dtype="float32", backend=backend, seed=0)
    model.fit(X.astype(np.float64), y, epochs=2, batch_size=8, momentum=0.9)
    for W, b in model.get_weights():
        assert W.dtype == np.float32 and b.dtype == np.float32
    for ws in model._workspaces.values():
        for a in ws.Z + ws.D[1:] + ws.flat_grad_list() + [ws.T]:
            assert gm.to_numpy(a).dtype == np.float32
    for dW, db in model.gradients(X, y):
        assert gm.to_numpy(dW).dtype == np.float32 and gm.to_numpy(db).dtype == np.float32
    assert model.predict(X).dtype == np.float32
    assert gm.to_numpy(model.forward(X)).dtype == np.float32


def test_float64_model(backend):
    X, y = _data()
    model = gm.MLP([5, 3], dtype="float64", backend=backend)
    assert model.predict(X).dtype == np.float64


def test_predict_returns_same_kind_as_input(backend):
    X, _ = _data()
    model = gm.MLP([5, 4, 3], backend=backend)
    assert isinstance(model.predict(X), np.ndarray)
    assert isinstance(model.predict(X.tolist()), np.ndarray)
    Xd = model.backend.asarray(X)
    assert model.backend.owns(model.predict(Xd))
    np.testing.assert_allclose(gm.to_numpy(model.predict(Xd)), model.predict(X), rtol=1e-6)


def test_predict_returns_the_kind_of_x_across_backends():
    X, _ = _data()
    model = gm.MLP([5, 4, 3], backend="numpy")
    Xs = gm.get_backend("array_api_strict").asarray(X)
    out = model.predict(Xs)
    assert gm.get_backend("array_api_strict").owns(out)
    np.testing.assert_array_equal(gm.to_numpy(out), model.predict(X))


def test_integer_and_bool_inputs_are_accepted(backend):
    model = gm.MLP([3, 2], backend=backend)
    for X in (np.array([[0, 1, 2]]), np.array([[True, False, True]])):
        xb = gm.get_backend(backend).asarray(X)
        assert gm.to_numpy(model.predict(xb)).shape == (1, 2)


def test_softmax_rows_sum_to_one_and_sigmoid_in_unit_interval():
    X, _ = _data()
    p = gm.MLP([5, 4, 3], backend="numpy").predict(X * 100)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    s = gm.MLP([5, 4, 2], output_activation="sigmoid", backend="numpy").predict(X * 1e4)
    assert np.all((s >= 0) & (s <= 1)) and np.all(np.isfinite(s))


def test_save_load_round_trip_gives_identical_predictions(tmp_path, backend):
    X, y = _data()
    model = gm.MLP([5, 6, 3], hidden_activation="tanh", backend=backend, seed=2)
    model.fit(X, y, epochs=2, batch_size=8)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = gm.load(path, backend="numpy")
    assert loaded.sizes == model.sizes and loaded.hidden_activation == "tanh" and loaded.dtype == "float32"
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_get_set_weights_round_trip():
    a, b = gm.MLP([3, 4, 2], seed=0, backend="numpy"), gm.MLP([3, 4, 2], seed=1, backend="numpy")
    b.set_weights(a.get_weights())
    X = np.ones((2, 3))
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    with pytest.raises(ValueError, match=r"weights\[0\] W must have shape \(3, 4\)"):
        b.set_weights([(np.zeros((4, 3)), np.zeros(4)), (np.zeros((4, 2)), np.zeros(2))])


def test_to_moves_between_backends():
    X, _ = _data()
    model = gm.MLP([5, 4, 3], backend="numpy", seed=5)
    before = model.predict(X)
    model.to("array_api_strict")
    assert model.backend.name == "array_api_strict"
    np.testing.assert_allclose(model.predict(X), before, rtol=1e-6)


def test_loss_value_by_hand():
    """One sample, identity output, mse: E = ½ (ŷ − t)² with ŷ = x·W + b."""
    model = gm.MLP([2, 1], output_activation="identity", dtype="float64", backend="numpy")
    model.set_weights([(np.array([[2.0], [-1.0]]), np.array([0.5]))])
    x, t = np.array([[1.0, 3.0]]), np.array([1.0])
    assert model.loss(x, t) == pytest.approx(0.5 * (2 - 3 + 0.5 - 1) ** 2)
    assert model.loss(x, t, l2=0.1) == pytest.approx(0.5 * 1.5**2 + 0.05 * 5.0)


def test_history_and_validation():
    X, y = _data(n=60)
    model = gm.MLP([5, 8, 3], backend="numpy", seed=0)
    h = model.fit(X, y, epochs=4, batch_size=16, validation_data=(X[:20], y[:20]))
    assert len(h["loss"]) == 4 and len(h["val_loss"]) == 4
    assert h["val_loss"][-1] == pytest.approx(model.loss(X[:20], y[:20]), rel=1e-5)
    assert model.history is h


def test_full_batch_equals_manual_gradient_descent():
    X, y = _data(n=12)
    model = gm.MLP([5, 4, 3], dtype="float64", backend="numpy", seed=1)
    ref = [(W.copy(), b.copy()) for W, b in model.get_weights()]
    manual = gm.MLP([5, 4, 3], dtype="float64", backend="numpy", seed=1)
    for _ in range(3):
        grads = manual.gradients(X, y, l2=0.01)
        ref = [(W - 0.1 * dW, b - 0.1 * db) for (W, b), (dW, db) in zip(ref, grads)]
        manual.set_weights(ref)
    model.fit(X, y, lr=0.1, l2=0.01, epochs=3, batch_size=None, shuffle=False)
    for (W, b), (rW, rb) in zip(model.get_weights(), ref):
        np.testing.assert_allclose(W, rW, rtol=1e-12)
        np.testing.assert_allclose(b, rb, rtol=1e-12, atol=1e-15)


def test_early_stopping_stops_and_restores_best():
    X, y = _data(n=60)
    rng = np.random.default_rng(1)
    Xv, yv = rng.normal(size=(30, 5)), rng.integers(0, 3, 30)  # unrelated labels: val loss soon rises
    model = gm.MLP([5, 32, 3], backend="numpy", seed=0)
    h = model.fit(X, y, lr=0.5, epochs=200, batch_size=8, validation_data=(Xv, yv), early_stopping=True, patience=3)
    assert len(h["loss"]) < 200
    assert model.loss(Xv, yv) == pytest.approx(min(h["val_loss"]), rel=1e-5)


def test_early_stopping_restores_best_even_when_patience_never_runs_out():
    X, y = _data(n=60)
    rng = np.random.default_rng(1)
    Xv, yv = rng.normal(size=(30, 5)), rng.integers(0, 3, 30)
    model = gm.MLP([5, 32, 3], backend="numpy", seed=0)
    h = model.fit(X, y, lr=0.5, epochs=25, batch_size=8, validation_data=(Xv, yv), early_stopping=True, patience=100)
    assert len(h["loss"]) == 25 and int(np.argmin(h["val_loss"])) < 24  # the last epoch was not the best
    assert model.loss(Xv, yv) == pytest.approx(min(h["val_loss"]), rel=1e-5)


def test_same_seed_same_training_and_shuffles_differ_across_epochs():
    X, y = _data(n=50)
    runs = []
    for _ in range(2):
        m = gm.MLP([5, 6, 3], backend="numpy", seed=7)
        m.fit(X, y, epochs=3, batch_size=10, momentum=0.5)
        runs.append(m.get_weights())
    for (a, _), (b, _) in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_backend_selection(monkeypatch):
    assert gm.get_backend("numpy").name == "numpy"
    monkeypatch.setenv("GPUMLP_BACKEND", "numpy")
    assert gm.get_backend("auto").name == "numpy"
    monkeypatch.setenv("GPUMLP_BACKEND", "array_api_strict")
    assert gm.MLP([2, 2]).backend.name == "array_api_strict"
    monkeypatch.setenv("GPUMLP_BACKEND", "tpu")
    with pytest.raises(ValueError, match="GPUMLP_BACKEND"):
        gm.get_backend("auto")
    info = gm.backend_info("numpy")
    assert info["backend"] == "numpy" and info["numpy"] == np.__version__


@pytest.mark.skipif(gm.has_gpu(), reason="checks the error raised where no GPU is present")
def test_forcing_cupy_without_gpu_says_how_to_fix():
    with pytest.raises(RuntimeError, match=r"pip install cupy-cuda13x.*backend='numpy'"):
        gm.MLP([2, 2], backend="cupy")


BAD_INPUTS = [
    ("X and Y of different lengths", lambda m, X, y: m.fit(X, y[:-1]), ValueError, "different lengths"),
    ("wrong feature count", lambda m, X, y: m.fit(X[:, :4], y), ValueError, "X has 4 features.*expects 5"),
    ("NaN in X", lambda m, X, y: m.fit(np.where(X > 1, np.nan, X), y), ValueError, "X contains NaN"),
    ("inf in X", lambda m, X, y: m.predict(np.full((2, 5), np.inf)), ValueError, "X contains NaN or infinite"),
    ("labels out of range", lambda m, X, y: m.fit(X, y + 1), ValueError, r"labels must lie in \[0, 2\]"),
    ("unknown optimizer", lambda m, X, y: m.fit(X, y, optimizer="rmsprop"), ValueError, "optimizer must be one of"),
    ("unknown loss", lambda m, X, y: m.fit(X, y, loss="hinge"), ValueError, "loss must be one of"),
    ("empty data", lambda m, X, y: m.fit(X[:0], y[:0]), ValueError, "X is empty"),
    ("lr 0", lambda m, X, y: m.fit(X, y, lr=0), ValueError, "lr must be > 0"),
    ("lr nan", lambda m, X, y: m.fit(X, y, lr=float("nan")), ValueError, "lr must be finite"),
    ("epochs 0", lambda m, X, y: m.fit(X, y, epochs=0), ValueError, "epochs must be > 0"),
    ("epochs float", lambda m, X, y: m.fit(X, y, epochs=2.5), TypeError, "epochs must be an integer"),
    ("batch size -1", lambda m, X, y: m.fit(X, y, batch_size=-1), ValueError, "batch_size must be > 0"),
    ("1-D X", lambda m, X, y: m.predict(X[0]), ValueError, "X must be 2-D"),
    ("string X", lambda m, X, y: m.predict(np.array([["a"] * 5])), TypeError, "X must hold numbers"),
    (
        "cross-entropy with identity output",
        lambda m, X, y: gm.MLP([5, 3], output_activation="identity").loss(X, y, loss="cross_entropy"),
        ValueError,
        "needs outputs in",
    ),
]


@pytest.mark.parametrize("what,call,exc,match", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_raises_clear_error(what, call, exc, match):
    X, y = _data()
    model = gm.MLP([5, 4, 3], backend="numpy")
    before = model.get_weights()
    with pytest.raises(exc, match=match):
        call(model, X, y)
    for (a, _), (b, _) in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)  # a rejected call loses nothing


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"sizes": [5]}, ValueError, "at least an input and an output"),
        ({"sizes": [5, 0, 3]}, ValueError, r"sizes\[1\] must be > 0"),
        ({"sizes": "5,3"}, TypeError, "sizes must be a list"),
        ({"hidden_activation": "swish"}, ValueError, "hidden_activation must be one of"),
        ({"output_activation": "relu6"}, ValueError, "output_activation must be one of"),
        ({"backend": "tpu"}, ValueError, "backend must be one of"),
        ({"dtype": "float16"}, ValueError, "dtype must be one of"),
        ({"sizes": [5, 1], "output_activation": "softmax"}, ValueError, "softmax' needs at least 2 outputs"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, match):
    args = {"sizes": [5, 3], **kwargs}
    with pytest.raises(exc, match=match):
        gm.MLP(**args)


def test_batch_size_larger_than_data_is_clipped_with_warning():
    X, y = _data(n=10)
    with pytest.warns(UserWarning, match="batch_size=64 is larger than the 10 samples"):
        gm.MLP([5, 3], backend="numpy").fit(X, y, batch_size=64, epochs=1)


def test_stratified_split_refuses_an_empty_part():
    X, y = np.zeros((10, 2)), np.repeat([0, 1], 5)
    with pytest.raises(ValueError, match="test_size=0.999 with stratify=True leaves no training samples out of 10"):
        gm.train_test_split(X, y, test_size=0.999, stratify=True)
    with pytest.raises(ValueError, match="leaves no test samples"):
        gm.train_test_split(X, y, test_size=0.05, stratify=True)


def test_readme_api_example_runs(tmp_path, monkeypatch):
    """The README's API block, as a user would paste it (it once used undefined names)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## API\n\n```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block.replace("epochs=30", "epochs=2"), "README.md", "exec"), {})
    assert (tmp_path / "digits.npz").exists()
