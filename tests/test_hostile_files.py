"""Hostile model files and save targets: loading is cheap and safe, saving replaces only what it should.

Memory is measured with tracemalloc (NumPy reports its array allocations to it): each test
claims a large model or array in a tiny file and asserts the refusal allocates little.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tracemalloc
import zipfile

import numpy as np
import pytest

import gpumlp as gm
import gpumlp.initializers as initializers
import gpumlp.memory as memory
import gpumlp.network as network
from gpumlp.modelfile import encode_meta

MB = 1 << 20


def _peak(call):
    """(result or exception, peak bytes traced) of ``call()``."""
    tracemalloc.start()
    try:
        try:
            result = call()
        except Exception as exc:  # the tests look at what was raised
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _arrays(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _good(tmp_path, sizes=(5, 4, 3)):
    path = tmp_path / "good.npz"
    gm.MLP(list(sizes), backend="numpy", seed=0).save(path)
    return path


def _with_meta(tmp_path, name, **changes):
    arrays = _arrays(_good(tmp_path))
    meta = json.loads(arrays["__meta__"].tobytes())
    meta.update(changes)
    arrays["__meta__"] = encode_meta(meta)
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


# ----- 1. metadata that claims huge layers ---------------------------------------------------------
def test_huge_sizes_in_the_metadata_are_refused_without_allocating(tmp_path):
    path = _with_meta(tmp_path, "huge.npz", sizes=[4000, 4000, 2])  # 128 MB of float64 weights if drawn
    assert os.path.getsize(path) < 4096
    exc, peak = _peak(lambda: gm.load(path, backend="numpy"))
    assert isinstance(exc, ValueError) and "W0 must have shape (4000, 4000)" in str(exc)
    assert peak < 2 * MB


def test_impossible_sizes_are_a_value_error_not_a_memory_error(tmp_path):
    path = _with_meta(tmp_path, "huge.npz", sizes=[10**6, 10**6, 2])
    with pytest.raises(ValueError, match=r"inconsistent gpumlp model: W0 must have shape \(1000000, 1000000\)"):
        gm.load(path, backend="numpy")


def test_load_builds_the_model_from_the_stored_arrays_without_drawing_weights(tmp_path, monkeypatch):
    path = _good(tmp_path)
    expected = _arrays(path)

    def no_drawing(*args, **kwargs):
        raise AssertionError("load drew fresh weights")

    monkeypatch.setattr(network, "init_weights", no_drawing)
    model = gm.load(path, backend="numpy")
    for i, (W, b) in enumerate(model.get_weights()):
        np.testing.assert_array_equal(W, expected[f"W{i}"])
        np.testing.assert_array_equal(b, expected[f"b{i}"])


# ----- 2. zip bombs -----------------------------------------------------------------------------------
def _zip_with(path, base, name, data):
    with zipfile.ZipFile(base) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename != name:
                dst.writestr(info.filename, src.read(info.filename))
        dst.writestr(name, data)
    return path


def _npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_an_extra_member_is_refused_without_inflating_it(tmp_path):
    bomb = _zip_with(tmp_path / "bomb.npz", _good(tmp_path), "junk.npy", _npy_bytes(np.zeros(10 * MB, np.float32)))
    assert os.path.getsize(bomb) < 200_000
    exc, peak = _peak(lambda: gm.load(bomb, backend="numpy"))
    assert isinstance(exc, ValueError) and "'junk'" in str(exc) and "does not have" in str(exc)
    assert peak < 2 * MB


def test_a_weight_member_longer_than_its_header_says_is_refused_unread(tmp_path):
    good = _good(tmp_path)
    padded = _npy_bytes(_arrays(good)["W0"]) + bytes(40 * MB)  # the right header, then 40 MB more
    bomb = _zip_with(tmp_path / "bomb.npz", good, "W0.npy", padded)
    exc, peak = _peak(lambda: gm.load(bomb, backend="numpy"))
    assert isinstance(exc, ValueError) and "'W0.npy' declares" in str(exc)
    assert peak < 2 * MB


def test_oversized_metadata_is_refused_unread(tmp_path, monkeypatch):
    import gpumlp.modelfile as modelfile

    monkeypatch.setattr(modelfile, "MAX_JSON_BYTES", 1000)
    path = _with_meta(tmp_path, "big.npz", padding="x" * 5000)
    with pytest.raises(ValueError, match="corrupted __meta__: expected JSON text of at most 1000 bytes"):
        gm.load(path, backend="numpy")


def test_deeply_nested_json_is_a_value_error(tmp_path):
    arrays = _arrays(_good(tmp_path))
    arrays["__meta__"] = np.frombuffer(b"[" * 200_000 + b"]" * 200_000, np.uint8)
    np.savez(tmp_path / "deep.npz", **arrays)
    with pytest.raises(ValueError, match="corrupted gpumlp metadata: JSON nested too deeply"):
        gm.load(tmp_path / "deep.npz", backend="numpy")


# ----- 4. NumPy integers --------------------------------------------------------------------------
def test_numpy_integers_are_accepted_and_stored_as_int(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(24, 3)).astype(np.float32), rng.integers(0, 2, 24)
    model = gm.MLP([np.int64(3), np.int32(4), np.uint8(2)], backend="numpy", seed=np.int64(7))
    assert type(model.seed) is int and all(type(n) is int for n in model.sizes)
    model.fit(X, y, epochs=np.int64(2), batch_size=np.int32(8), seed=np.int64(3), checkpoint=tmp_path / "ck.npz")
    model.save(tmp_path / "m.npz")
    meta = json.loads(_arrays(tmp_path / "m.npz")["__meta__"].tobytes())
    assert meta["seed"] == 7 and meta["sizes"] == [3, 4, 2]
    ck = gm.load_checkpoint(tmp_path / "ck.npz")
    assert ck.epoch == 2 and ck.config["batch_size"] == 8
    assert gm.load(tmp_path / "m.npz", backend="numpy").seed == 7


# ----- 5. what a save may replace -------------------------------------------------------------------
def test_save_refuses_a_fifo_and_leaves_it(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is a FIFO .*not a regular file"):
        gm.MLP([3, 2], backend="numpy").save(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def _device_node(tmp_path):
    """A character device node like /dev/null (1, 3) made in ``tmp_path``, so that no test ever
    saves onto the system's own device nodes; skipped where mknod is not permitted (not root)."""
    node = tmp_path / "null"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, AttributeError, OSError):
        pytest.skip("cannot create a device node here")
    return node


def test_save_refuses_a_device_node_and_never_replaces_it(tmp_path):
    node = _device_node(tmp_path)
    before = os.stat(node)
    with pytest.raises(ValueError, match="is a device node"):
        gm.MLP([3, 2], backend="numpy").save(node)
    after = os.stat(node)
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_save_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "real.npz"
    gm.MLP([3, 2], backend="numpy", seed=0).save(target)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    model = gm.MLP([3, 2], backend="numpy", seed=5)
    model.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    np.testing.assert_array_equal(gm.load(target, backend="numpy").get_weights()[0][0], model.get_weights()[0][0])


def test_save_refuses_a_read_only_file_and_leaves_it(tmp_path):
    path = tmp_path / "kept.npz"
    gm.MLP([3, 2], backend="numpy", seed=0).save(path)
    os.chmod(path, 0o444)
    data = path.read_bytes()
    with pytest.raises(PermissionError, match="is read-only"):
        gm.MLP([3, 2], backend="numpy", seed=5).save(path)
    assert path.read_bytes() == data


def test_fit_refuses_a_device_checkpoint_before_training(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    model = gm.MLP([3, 2], backend="numpy")
    before = model.get_weights()
    with pytest.raises(ValueError, match="checkpoint=.* is a FIFO"):
        model.fit(np.zeros((4, 3)), [0, 1, 0, 1], epochs=1, checkpoint=fifo)
    np.testing.assert_array_equal(model.get_weights()[0][0], before[0][0])
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


# ----- 7. errors name the target; paths checked before training ------------------------------------
def test_a_failed_write_names_the_target_not_the_temporary_file(tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    path = tmp_path / "m.npz"
    with pytest.raises(OSError, match="No space left") as info:
        gm.MLP([3, 2], backend="numpy").save(path)
    assert str(path) in str(info.value) and ".tmp-" not in str(info.value)
    assert os.listdir(tmp_path) == []


def test_fit_refuses_an_over_long_checkpoint_name_before_training(tmp_path):
    model = gm.MLP([3, 2], backend="numpy")
    before = model.get_weights()
    with pytest.raises(ValueError, match="the file name is 304 bytes long; this file system allows"):
        model.fit(np.zeros((4, 3)), [0, 1, 0, 1], epochs=1, checkpoint=tmp_path / ("a" * 300 + ".npz"))
    np.testing.assert_array_equal(model.get_weights()[0][0], before[0][0])
    assert model.history == {}


# ----- 9. memory estimates ------------------------------------------------------------------------
def test_a_model_larger_than_the_memory_available_is_a_value_error(monkeypatch):
    monkeypatch.setattr(memory, "host_available", lambda: 5_000_000)
    with pytest.raises(ValueError, match=r"needs about 0\.00802 GB of memory, but only 0\.005 GB is available"):
        gm.MLP([1000, 1000, 2], dtype="float64", backend="numpy")  # (1000·1000 + 1000 + 1000·2 + 2) · 8 bytes


def test_fit_refuses_training_larger_than_the_memory_available(monkeypatch):
    model = gm.MLP([50, 1000, 2], backend="numpy")
    before = model.get_weights()
    # 53,002 parameters x 4 bytes x (grad 1 + momentum 1 + rollback copies 2) = 848,032 bytes, plus the
    # workspace of 100 rows x (2 x 1002 + 50 + 2) values x 4 bytes = 822,400: 1,670,432 bytes.
    monkeypatch.setattr(memory, "host_available", lambda: 1_600_000)
    with pytest.raises(ValueError, match=r"training an MLP .* needs about 0\.00167 GB of memory, but only 0\.0016"):
        model.fit(np.zeros((100, 50)), np.zeros(100, int), epochs=1, batch_size=100, momentum=0.9)
    np.testing.assert_array_equal(model.get_weights()[0][0], before[0][0])


def test_float32_weights_are_drawn_without_a_full_float64_temporary():
    nbytes = 2000 * 2000 * 4
    model, peak = _peak(lambda: gm.MLP([2000, 2000, 2], dtype="float32", backend="numpy", seed=3))
    assert model.layers[0].W.dtype == np.float32
    assert peak < 1.5 * nbytes  # a float64 draw of the whole matrix alone would be 2 x nbytes


@pytest.mark.parametrize("hidden", ["relu", "tanh"])
def test_chunked_initial_weights_equal_one_float64_draw(hidden, monkeypatch):
    monkeypatch.setattr(initializers, "_INIT_CHUNK", 7)  # many chunks, one row or less each
    model = gm.MLP([9, 6, 2], hidden_activation=hidden, dtype="float32", backend="numpy", seed=11)
    rng = np.random.default_rng(11)  # the documented draw: one float64 matrix per layer, then cast
    if hidden == "relu":
        W0 = rng.standard_normal((9, 6)) * np.sqrt(2.0 / 9)
    else:
        W0 = rng.uniform(-np.sqrt(6.0 / 15), np.sqrt(6.0 / 15), (9, 6))
    W1 = rng.uniform(-np.sqrt(6.0 / 8), np.sqrt(6.0 / 8), (6, 2))
    np.testing.assert_array_equal(model.layers[0].W, W0.astype(np.float32))
    np.testing.assert_array_equal(model.layers[1].W, W1.astype(np.float32))


# ----- 16. predict and loss in chunks ---------------------------------------------------------------
def _reference_forward(model, X):
    Z = X.astype(np.float64)
    for i, (W, b) in enumerate(model.get_weights()):
        A = Z @ W.astype(np.float64) + b
        Z = np.maximum(A, 0) if i < len(model.layers) - 1 else A
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def test_predict_and_loss_evaluate_in_chunks_with_bounded_temporaries():
    rng = np.random.default_rng(0)
    n = 50_000
    X = rng.normal(size=(n, 8)).astype(np.float32)
    y = rng.integers(0, 3, n)
    model = gm.MLP([8, 512, 3], backend="numpy", seed=0)  # a full-batch hidden layer: n x 512 x 4 = 102 MB
    P, peak_predict = _peak(lambda: model.predict(X))
    E, peak_loss = _peak(lambda: model.loss(X, y))
    assert peak_predict < 40 * MB and peak_loss < 40 * MB
    ref = _reference_forward(model, X)
    np.testing.assert_allclose(P, ref, rtol=1e-4, atol=1e-6)
    assert E == pytest.approx(-np.mean(np.log(ref[np.arange(n), y])), rel=1e-5)


def test_every_kind_of_integer_is_accepted_and_returned_as_int():
    from gpumlp.validation import check_number

    class Index:
        def __index__(self):
            return 4

    for value in (np.int8(4), np.uint64(4), np.int64(4), Index(), np.array(4)):
        got = check_number(value, "n", integer=True)
        assert got == 4 and type(got) is int
    for value in (np.bool_(True), True, np.float64(4.0), 4.0, "4"):
        with pytest.raises(TypeError, match="n must be an integer"):
            check_number(value, "n", integer=True)


def test_chunked_predict_and_loss_match_on_every_backend(backend, monkeypatch):
    import gpumlp.evaluation as evaluation

    rng = np.random.default_rng(1)
    X = rng.normal(size=(1000, 6))  # float64 input to a float32 model: converted chunk by chunk
    y = rng.integers(0, 3, 1000)
    model = gm.MLP([6, 16, 3], backend=backend, seed=2)
    monkeypatch.setattr(evaluation, "EVAL_CHUNK_ROWS", 64)  # 16 chunks, the last one short
    ref = _reference_forward(model, X)
    P = model.predict(X)
    assert isinstance(P, np.ndarray) and P.shape == (1000, 3)
    np.testing.assert_allclose(P, ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gm.to_numpy(model.forward(X)), ref, rtol=1e-4, atol=1e-6)
    assert model.loss(X, y) == pytest.approx(-np.mean(np.log(ref[np.arange(1000), y])), rel=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not gm.has_gpu(), reason="no CUDA GPU with CuPy on this machine")
def test_free_device_memory_is_what_the_gpu_check_compares_with(monkeypatch):
    backend = gm.get_backend("cupy")
    free = backend.free_memory()
    assert isinstance(free, int) and free > 0
    monkeypatch.setattr(type(backend), "free_memory", lambda self: 1_000_000)
    with pytest.raises(ValueError, match=r"needs about 0\.00401 GB of memory, but only 0\.001 GB is free on the cupy"):
        gm.MLP([1000, 1000, 2], backend="cupy")  # (1000·1000 + 1000 + 1000·2 + 2) · 4 bytes


def test_save_writes_nothing_that_load_would_refuse(tmp_path):
    model = gm.MLP([3, 2], backend="numpy")
    with pytest.raises(ValueError, match="cannot store array 'junk' .* the format has no such member"):
        network.save(model, tmp_path / "m.npz", extra={"junk": np.zeros(3)})
    with pytest.raises(ValueError, match=r"cannot store array 'best\.0' of shape \(2, 2\)"):
        network.save(model, tmp_path / "m.npz", extra={"best.0": np.zeros((2, 2))})
    assert os.listdir(tmp_path) == []
