"""The model's own surface: MLP.fit's documented signature, building a model from stored arrays,
the private names other modules used to reach for."""

from __future__ import annotations

import inspect
import pydoc

import numpy as np

import gpumlp as gm
from gpumlp import training
from gpumlp.network import model_meta


def test_help_of_mlp_fit_shows_every_parameter_with_its_default():
    text = pydoc.render_doc(gm.MLP.fit, renderer=pydoc.plaintext).replace("'", "")  # annotations are strings
    for shown in (
        "batch_size: int | None = 32",
        "divergence_threshold: float | None = 10000.0",
        "cuda_graph",
        "allow_tf32: bool = False",
        "Parameters",
        "Returns",
        "Raises",
    ):
        assert shown in text, shown
    assert "**" not in text


def test_mlp_fit_passes_every_setting_to_the_training_loop_which_has_no_defaults_of_its_own():
    mine = list(inspect.signature(gm.MLP.fit).parameters.values())[3:]  # without self, X, Y
    loop = list(inspect.signature(training.fit).parameters.values())[3:]  # without model, X, Y
    assert [p.name for p in mine] == [p.name for p in loop]
    assert all(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in loop)
    assert gm.fit is gm.MLP.fit  # gpumlp.fit(model, X, Y, ...) is model.fit(X, Y, ...)


def test_from_arrays_rebuilds_what_save_stores(tmp_path):
    model = gm.MLP(
        [3, 4, 2], hidden_activation="tanh", output_activation="sigmoid", dtype="float64", backend="numpy", seed=7
    )
    arrays = {f"{k}{i}": a for i, (W, b) in enumerate(model.get_weights()) for k, a in (("W", W), ("b", b))}
    copy = gm.MLP.from_arrays(model_meta(model), arrays, backend="numpy")
    assert repr(copy) == repr(model) and copy.seed == 7
    for (W, b), (cW, cb) in zip(model.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(W, cW)
        np.testing.assert_array_equal(b, cb)


def test_public_names_for_what_other_modules_use():
    model = gm.MLP([3, 2], dtype="float64", backend="numpy")
    X, T, loss = model.check_data(np.zeros((4, 3)), np.array([0, 1, 1, 0]), "auto")
    assert loss == "cross_entropy" and T.shape == (4, 2) and T.dtype == model.xp_dtype
    assert model.to_device([[1, 2, 3]]).dtype == np.float64
