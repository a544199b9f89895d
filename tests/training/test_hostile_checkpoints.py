"""Tampered checkpoints are refused before anything changes; a refused fit leaves the model as it was;
two fits on one model at once are refused."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import gpumlp as gm
from gpumlp.modelfile import encode_meta


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n)


@pytest.fixture
def ckpt(tmp_path):
    """A checkpoint with optimizer state and early stopping's best weights, after 3 epochs."""
    X, y = _data()
    path = tmp_path / "ck.npz"
    gm.MLP([4, 5, 3], backend="numpy", seed=0).fit(
        X, y, epochs=3, batch_size=10, momentum=0.9, validation_data=(X, y), early_stopping=True, checkpoint=path
    )
    return path


def _tamper(path, arrays=None, record=None):
    """Rewrite ``path`` with some arrays replaced and the checkpoint record changed by ``record(r)``."""
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    data.update(arrays or {})
    if record is not None:
        r = json.loads(data["__checkpoint__"].tobytes())
        record(r)
        data["__checkpoint__"] = encode_meta(r)
    np.savez(path, **data)
    return path


def _set(*keys_value):
    *keys, value = keys_value

    def change(r):
        for k in keys[:-1]:
            r = r[k]
        r[keys[-1]] = value

    return change


def test_nan_best_weights_are_refused(ckpt):
    _tamper(ckpt, {"best.0": np.full((4, 5), np.nan, np.float32)})
    with pytest.raises(
        ValueError, match=r"ck\.npz' holds an inconsistent gpumlp checkpoint: array 'best\.0' contains NaN"
    ):
        gm.load_checkpoint(ckpt)


def test_nan_optimizer_state_and_weights_are_refused(ckpt, tmp_path):
    _tamper(ckpt, {"opt.velocity.2": np.full((5, 3), np.inf, np.float32)})
    with pytest.raises(ValueError, match=r"array 'opt\.velocity\.2' contains NaN or infinite values"):
        gm.load_checkpoint(ckpt)
    _tamper(ckpt, {"opt.velocity.2": np.zeros((5, 3), np.float32), "b1": np.full(3, np.nan, np.float32)})
    with pytest.raises(ValueError, match=r"array 'b1' contains NaN"):
        gm.load_checkpoint(ckpt)


def test_resume_from_nan_best_weights_leaves_the_model_untouched(ckpt):
    _tamper(ckpt, {"best.2": np.full((5, 3), np.nan, np.float32)})
    X, y = _data()
    model = gm.MLP([4, 5, 3], backend="numpy", seed=9)
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"'best\.2' contains NaN"):
        model.fit(X, y, epochs=6, batch_size=10, momentum=0.9, validation_data=(X, y), early_stopping=True, resume=ckpt)
    for (W, b), (W0, b0) in zip(model.get_weights(), before):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


@pytest.mark.parametrize(
    "field, change, message",
    [
        ("epoch", _set("epoch", -3), r"field 'epoch' must be a whole number >= 0; got -3"),
        ("epoch", _set("epoch", 2.5), r"field 'epoch' must be a whole number >= 0; got 2\.5"),
        ("epoch", _set("epoch", True), r"field 'epoch' must be a whole number >= 0; got True"),
        ("t", _set("optimizer", "t", -1), r"field 'optimizer\.t' must be a whole number >= 0"),
        ("waited", _set("early_stopping", "waited", 0.5), r"field 'early_stopping\.waited' must be a whole number"),
        ("n_best", _set("early_stopping", "n_best", 3), r"field 'early_stopping\.n_best' must be 0 or 4"),
        ("state count", _set("optimizer", "state", "velocity", 9), r"field 'optimizer\.state\.velocity' must be"),
        ("rng state", _set("rng", "state", "state", -1), r"field 'rng\.state\.state' must hold whole numbers in \[0, "),
        ("rng state", _set("rng", "state", "state", 2**130), r"field 'rng\.state\.state' must hold whole numbers"),
        ("rng inc", _set("rng", "state", "inc", 1.5), r"field 'rng\.state\.inc' must hold whole numbers"),
        ("has_uint32", _set("rng", "has_uint32", 5), r"field 'rng\.has_uint32' must hold whole numbers in \[0, 1\]"),
        ("generator", _set("rng", "bit_generator", "Evil"), r"field 'rng' holds an unknown RNG bit generator 'Evil'"),
        ("history", _set("history", "loss", [0.5, float("nan"), 0.4]), r"field 'history\.loss' holds a NaN loss"),
        ("missing", lambda r: r.pop("epoch"), r"field 'epoch' is missing"),
        ("epoch behind history", _set("epoch", 1), r"field 'epoch' = 1 is behind field 'history\.loss', which holds 3"),
    ],
)
def test_tampered_counters_and_rng_states_are_value_errors_naming_file_and_field(ckpt, field, change, message):
    _tamper(ckpt, record=change)
    with pytest.raises(ValueError, match=r"ck\.npz' holds an inconsistent gpumlp checkpoint: " + message):
        gm.load_checkpoint(ckpt)


def test_deeply_nested_checkpoint_record_is_a_value_error(ckpt):
    _tamper(ckpt, {"__checkpoint__": np.frombuffer(b"[" * 200_000 + b"]" * 200_000, np.uint8)})
    with pytest.raises(ValueError, match="corrupted checkpoint record: JSON nested too deeply"):
        gm.load_checkpoint(ckpt)


# ----- 15. a refused fit changes nothing; one fit per model at a time ---------------------------------
def test_a_refused_resume_leaves_the_rng_and_weights_untouched(tmp_path):
    X, y = _data()
    bad = tmp_path / "bad.npz"
    gm.MLP([4, 5, 3], backend="numpy").save(bad)  # a model file, not a checkpoint
    model = gm.MLP([4, 5, 3], backend="numpy", seed=1)
    rng_before, weights_before = model.rng.bit_generator.state, model.get_weights()
    with pytest.raises(ValueError, match="not a training checkpoint"):
        model.fit(X, y, epochs=2, seed=5, resume=bad)
    assert model.rng.bit_generator.state == rng_before
    np.testing.assert_array_equal(model.get_weights()[0][0], weights_before[0][0])
    assert model.history == {}


def test_a_resume_of_another_architecture_leaves_the_rng_untouched(tmp_path):
    X, y = _data()
    path = tmp_path / "ck.npz"
    gm.MLP([4, 6, 3], backend="numpy").fit(X, y, epochs=1, checkpoint=path)
    model = gm.MLP([4, 5, 3], backend="numpy", seed=1)
    before = model.rng.bit_generator.state
    with pytest.raises(ValueError, match="sizes"):
        model.fit(X, y, epochs=2, seed=5, resume=path)
    assert model.rng.bit_generator.state == before


def test_fit_inside_a_callback_on_the_same_model_is_refused():
    X, y = _data()
    model = gm.MLP([4, 5, 3], backend="numpy")

    def nested(m, epoch, logs):
        m.fit(X, y, epochs=1)

    with pytest.raises(RuntimeError, match="fit is already running on this model"):
        model.fit(X, y, epochs=2, callbacks=[nested])
    model.fit(X, y, epochs=1)  # the guard is released after the refusal


def test_two_threads_fitting_one_model_the_second_is_refused():
    X, y = _data()
    model = gm.MLP([4, 5, 3], backend="numpy")
    started, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def wait_in_epoch(m, epoch, logs):
        started.set()
        release.wait(30)

    def first():
        try:
            model.fit(X, y, epochs=2, callbacks=[wait_in_epoch])
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert started.wait(30)
        with pytest.raises(RuntimeError, match="fit is already running on this model"):
            model.fit(X, y, epochs=1)
    finally:
        release.set()
        thread.join(30)
    assert errors == [] and len(model.history["loss"]) == 2
    other = gm.MLP([4, 5, 3], backend="numpy")  # other models train at the same time freely
    other.fit(X, y, epochs=1)
