"""save / load: exact round trips, clear ValueErrors for damaged or foreign files, no pickle, atomic writes."""

from __future__ import annotations

import os
import pickle
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpumlp as gm
from gpumlp.modelfile import atomic_write

ARCH = dict(
    sizes=st.lists(st.integers(1, 7), min_size=2, max_size=5),
    hidden=st.sampled_from(["relu", "tanh", "sigmoid", "identity"]),
    output=st.sampled_from(["sigmoid", "identity", "softmax"]),
    dtype=st.sampled_from(["float32", "float64"]),
    seed=st.integers(0, 2**32 - 1),
)


@settings(max_examples=40, deadline=None)
@given(**ARCH)
def test_save_load_round_trip_of_random_architectures(sizes, hidden, output, dtype, seed):
    if output == "softmax" and sizes[-1] < 2:
        sizes = sizes[:-1] + [2]
    model = gm.MLP(sizes, hidden_activation=hidden, output_activation=output, dtype=dtype, backend="numpy", seed=seed)
    X = np.random.default_rng(seed).normal(size=(5, sizes[0])).astype(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.npz")
        model.save(path)
        back = gm.load(path, backend="numpy")
        assert os.listdir(tmp) == ["m.npz"]  # no temp file left behind
    assert (back.sizes, back.hidden_activation, back.output_activation, back.dtype, back.seed) == (
        model.sizes,
        model.hidden_activation,
        model.output_activation,
        model.dtype,
        model.seed,
    )
    for (W, b), (Wb, bb) in zip(model.get_weights(), back.get_weights()):
        assert Wb.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(W, Wb)
        np.testing.assert_array_equal(b, bb)
    np.testing.assert_array_equal(model.predict(X), back.predict(X))


def test_load_onto_every_backend(backend, tmp_path):
    model = gm.MLP([4, 5, 3], backend="numpy", seed=3)
    model.save(tmp_path / "m.npz")
    back = gm.load(tmp_path / "m.npz", backend=backend)
    assert back.backend.name == backend
    for (W, b), (Wb, bb) in zip(model.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(W, Wb)
        np.testing.assert_array_equal(b, bb)


@pytest.fixture(scope="module")
def saved_model():
    model = gm.MLP([3, 4, 2], backend="numpy", seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.npz")
        model.save(path)
        with open(path, "rb") as f:
            yield model, f.read()


def _load_bytes(data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.npz")
        with open(path, "wb") as f:
            f.write(data)
        return gm.load(path, backend="numpy")


@settings(max_examples=50, deadline=None)
@given(cut=st.floats(0.0, 0.999))
def test_every_truncation_is_a_clear_value_error(saved_model, cut):
    _, data = saved_model
    with pytest.raises(ValueError, match="not a readable gpumlp model file|not a gpumlp model"):
        _load_bytes(data[: int(cut * len(data))])


@settings(max_examples=50, deadline=None)
@given(where=st.floats(0.0, 0.999), value=st.integers(0, 255))
def test_a_damaged_byte_gives_a_value_error_or_the_identical_model(saved_model, where, value):
    """Zip CRCs cover every array: a damaged byte is either caught, or was in a field the reader ignores."""
    model, data = saved_model
    damaged = bytearray(data)
    damaged[int(where * len(data))] = value
    try:
        back = _load_bytes(bytes(damaged))
    except ValueError:
        return
    for (W, b), (Wb, bb) in zip(model.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(W, Wb)
        np.testing.assert_array_equal(b, bb)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_never_unpickles(tmp_path):
    """A file that would run code when unpickled is refused, and the code does not run."""
    marker = str(tmp_path / "ran")
    with open(tmp_path / "pickle.npz", "wb") as f:
        pickle.dump(_Evil(marker), f)
    np.savez(
        tmp_path / "objects.npz",
        __meta__=np.frombuffer(b'{"format": "gpumlp", "version": 1}', np.uint8),
        W0=np.array([_Evil(marker)], dtype=object),
    )
    for name in ("pickle.npz", "objects.npz"):
        with pytest.raises(ValueError, match="not a readable gpumlp model file"):
            gm.load(tmp_path / name)
        with pytest.raises(ValueError):
            gm.load_checkpoint(tmp_path / name)
    assert not os.path.exists(marker)


def test_load_checkpoint_of_a_plain_model_file_is_a_clear_error(tmp_path):
    gm.MLP([3, 2], backend="numpy").save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="a gpumlp model file but not a training checkpoint"):
        gm.load_checkpoint(tmp_path / "m.npz")


def test_checkpoint_with_a_damaged_record_is_a_clear_error(tmp_path):
    X, y = np.zeros((8, 3)), np.zeros(8, dtype=int)
    gm.MLP([3, 2], backend="numpy").fit(X, y, epochs=1, batch_size=4, checkpoint=tmp_path / "ck.npz")
    with np.load(tmp_path / "ck.npz") as z:
        arrays = {k: z[k] for k in z.files}
    for name, record in [
        ("json", b"{oops"),
        ("version", b'{"version": 99}'),
        ("fields", b'{"version": 1}'),
        ("rng", arrays["__checkpoint__"].tobytes().replace(b'"PCG64"', b'"os.system"')),
    ]:
        np.savez(tmp_path / f"{name}.npz", **{**arrays, "__checkpoint__": np.frombuffer(record, np.uint8)})
        with pytest.raises(ValueError, match="checkpoint"):
            gm.load_checkpoint(tmp_path / f"{name}.npz")


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def half_then_fail(f):
        f.write(b"new but incomp")
        raise RuntimeError("writer died")

    with pytest.raises(RuntimeError, match="writer died"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]
    atomic_write(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["f.bin"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_saved_models_get_the_usual_file_mode(tmp_path):
    # Bug: the atomic write's mkstemp left every model and checkpoint file 0o600.
    old = os.umask(0o022)
    try:
        gm.MLP([2, 3, 2], backend="numpy").save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "m.npz").st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
