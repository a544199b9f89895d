"""Checkpoints: atomic writes (even under SIGKILL), exact resume, Ctrl-C saves and re-raises."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpumlp as gm
import gpumlp.training.state as state_module
from gpumlp.optimizers import SGD, Adam

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(n=120, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, k, n)


def _weights(model):
    return [a for pair in model.get_weights() for a in pair]


def _assert_same_weights(a, b, exact=True):
    for x, y in zip(_weights(a), _weights(b)):
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


RUNS = {
    "sgd+nesterov+l2+clip+val+early-stopping": dict(
        optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, l2=1e-3, clip_norm=0.5, early_stopping=True, patience=50
    ),
    "adam": dict(optimizer="adam", lr=0.01),
}


@pytest.mark.parametrize("run", list(RUNS))
def test_interrupted_and_resumed_equals_unbroken(run, backend, tmp_path):
    X, y = _data()
    kw = dict(RUNS[run], batch_size=16, seed=7, validation_data=(X[:30], y[:30]))
    exact = backend != "cupy"
    unbroken = gm.MLP([6, 10, 3], backend=backend, seed=1)
    h_unbroken = unbroken.fit(X, y, epochs=8, **kw)

    path = tmp_path / "ck.npz"
    first = gm.MLP([6, 10, 3], backend=backend, seed=1)
    first.fit(X, y, epochs=3, checkpoint=path, **kw)  # "interrupted" after epoch 3
    resumed = gm.MLP([6, 10, 3], backend=backend, seed=99)  # other initial weights: all come from the file
    h_resumed = resumed.fit(X, y, epochs=8, resume=path, **{**kw, "seed": 12345})  # seed ignored on resume

    _assert_same_weights(resumed, unbroken, exact)
    if exact:
        assert h_resumed == h_unbroken
        assert resumed.rng.bit_generator.state == unbroken.rng.bit_generator.state
    else:
        np.testing.assert_allclose(h_resumed["loss"], h_unbroken["loss"], rtol=1e-5)


@settings(max_examples=12, deadline=None)
@given(stop=st.integers(1, 5), every=st.integers(1, 3), opt=st.sampled_from(["sgd", "momentum", "adam"]))
def test_resume_from_any_epoch_equals_unbroken(stop, every, opt):
    X, y = _data(n=60)
    kw = {"sgd": dict(lr=0.1), "momentum": dict(lr=0.05, momentum=0.9), "adam": dict(optimizer="adam", lr=0.01)}[opt]
    kw.update(batch_size=8, seed=3)
    unbroken = gm.MLP([6, 5, 3], backend="numpy", seed=0)
    unbroken.fit(X, y, epochs=6, **kw)

    class StopAt:
        def __call__(self, model, epoch, logs):
            if epoch == stop:
                raise KeyboardInterrupt

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ck.npz")
        first = gm.MLP([6, 5, 3], backend="numpy", seed=0)
        with pytest.raises(KeyboardInterrupt):
            first.fit(X, y, epochs=6, checkpoint=path, checkpoint_every=every, callbacks=[StopAt()], **kw)
        ck = gm.load_checkpoint(path)
        assert ck.epoch == stop - 1  # Ctrl-C in epoch `stop`'s callbacks: that epoch was not complete
        resumed = gm.MLP([6, 5, 3], backend="numpy", seed=0)
        resumed.fit(X, y, epochs=6, resume=path, **kw)
    _assert_same_weights(resumed, unbroken)


class InterruptAtStep(SGD):
    """SGD that raises KeyboardInterrupt in the middle of step ``at`` (after updating one parameter)."""

    def __init__(self, at, **kw):
        super().__init__(**kw)
        self.at = at

    def step(self, params, grads):
        if self.t + 1 == self.at:
            self._ops.sgd_update(params[0], grads[0], self.state["velocity"][0], self.lr, self.momentum, False)
            raise KeyboardInterrupt  # a torn step: one layer updated, the rest not
        super().step(params, grads)


def test_ctrl_c_mid_epoch_rolls_back_saves_and_reraises(tmp_path):
    X, y = _data(n=64)
    kw = dict(lr=0.05, batch_size=16, seed=5)  # 4 steps per epoch
    unbroken = gm.MLP([6, 5, 3], backend="numpy", seed=0)
    h_unbroken = unbroken.fit(X, y, epochs=6, optimizer=SGD(lr=0.05, momentum=0.8), **kw)
    at_3 = gm.MLP([6, 5, 3], backend="numpy", seed=0)
    at_3.fit(X, y, epochs=3, optimizer=SGD(lr=0.05, momentum=0.8), **kw)

    path = tmp_path / "ck.npz"
    model = gm.MLP([6, 5, 3], backend="numpy", seed=0)
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            X,
            y,
            epochs=6,
            optimizer=InterruptAtStep(14, lr=0.05, momentum=0.8),
            checkpoint=path,
            checkpoint_every=100,
            **kw,
        )  # step 14 is in epoch 4
    _assert_same_weights(model, at_3)  # rolled back to the end of epoch 3, not left torn
    assert model.history["loss"] == h_unbroken["loss"][:3]
    ck = gm.load_checkpoint(path)
    assert ck.epoch == 3 and ck.optimizer["t"] == 12
    resumed = gm.MLP([6, 5, 3], backend="numpy", seed=0)
    h = resumed.fit(X, y, epochs=6, optimizer=SGD(lr=0.05, momentum=0.8), resume=path, **kw)
    _assert_same_weights(resumed, unbroken)
    assert h == h_unbroken


def test_ctrl_c_without_checkpoint_rolls_back_and_reraises(tmp_path):
    X, y = _data(n=64)
    model = gm.MLP([6, 5, 3], backend="numpy", seed=0)
    before = model.get_weights()
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=3, optimizer=InterruptAtStep(2, lr=0.05, momentum=0.8), batch_size=16)
    for (W, b), (W0, b0) in zip(model.get_weights(), before):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    assert model.history == {"loss": []} and os.listdir(tmp_path) == []


def test_checkpoint_every_k_epochs_and_at_the_end(monkeypatch, tmp_path):
    written = []
    real = state_module.save_checkpoint
    monkeypatch.setattr(state_module, "save_checkpoint", lambda *a, **k: written.append(a[3]) or real(*a, **k))
    X, y = _data(n=40)
    model = gm.MLP([6, 3], backend="numpy")
    model.fit(X, y, epochs=7, batch_size=8, checkpoint=tmp_path / "ck.npz", checkpoint_every=3)
    assert written == [3, 6, 7]
    assert gm.load_checkpoint(tmp_path / "ck.npz").epoch == 7
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []


def test_checkpoint_contents_and_it_is_also_a_model_file(tmp_path):
    X, y = _data(n=40)
    model = gm.MLP([6, 4, 3], backend="numpy", seed=2)
    opt = Adam(lr=0.01)
    h = model.fit(X, y, optimizer=opt, epochs=4, batch_size=10, checkpoint=tmp_path / "ck.npz")
    ck = gm.load_checkpoint(tmp_path / "ck.npz")
    assert ck.epoch == 4 and ck.history == h and ck.optimizer["t"] == opt.t == 16
    assert ck.optimizer["hyper"] == opt.hyper() and ck.rng_state == model.rng.bit_generator.state
    for k in ("m", "v"):
        for saved, live in zip(ck.optimizer["state"][k], opt.state[k]):
            np.testing.assert_array_equal(saved, live)
    assert ck.config == {
        "loss": "cross_entropy",
        "batch_size": 10,
        "shuffle": True,
        "l2": 0.0,
        "clip_norm": None,
        "n_samples": 40,
    }
    _assert_same_weights(gm.load(tmp_path / "ck.npz", backend="numpy"), model)


def test_resume_refuses_another_architecture_or_optimizer_and_warns_on_changed_settings(tmp_path):
    X, y = _data(n=40)
    path = tmp_path / "ck.npz"
    gm.MLP([6, 4, 3], backend="numpy").fit(X, y, epochs=2, batch_size=10, checkpoint=path)
    with pytest.raises(ValueError, match=r"sizes=\[6, 4, 3\], but this model has sizes=\[6, 5, 3\]"):
        gm.MLP([6, 5, 3], backend="numpy").fit(X, y, epochs=4, batch_size=10, resume=path)
    with pytest.raises(ValueError, match="dtype='float32', but this model has dtype='float64'"):
        gm.MLP([6, 4, 3], dtype="float64", backend="numpy").fit(X, y, epochs=4, batch_size=10, resume=path)
    with pytest.raises(ValueError, match="written with optimizer='sgd'; resume with the same optimizer"):
        gm.MLP([6, 4, 3], backend="numpy").fit(X, y, epochs=4, batch_size=10, optimizer="adam", resume=path)
    with pytest.warns(UserWarning, match=r"batch_size=20 \(checkpoint: 10\)"):
        gm.MLP([6, 4, 3], backend="numpy").fit(X, y, epochs=4, batch_size=20, resume=path)


def test_resume_past_the_requested_epochs_trains_nothing(tmp_path):
    X, y = _data(n=40)
    path = tmp_path / "ck.npz"
    done = gm.MLP([6, 3], backend="numpy")
    h = done.fit(X, y, epochs=5, batch_size=10, checkpoint=path)
    again = gm.MLP([6, 3], backend="numpy", seed=4)
    assert again.fit(X, y, epochs=3, batch_size=10, resume=path) == h
    _assert_same_weights(again, done)


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    X, y = _data(n=40)
    path = tmp_path / "ck.npz"
    model = gm.MLP([6, 3], backend="numpy")
    model.fit(X, y, epochs=2, batch_size=10, checkpoint=path)
    before = gm.load_checkpoint(path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        model.fit(X, y, epochs=2, batch_size=10, checkpoint=path)
    after = gm.load_checkpoint(path)
    assert after.epoch == before.epoch == 2 and after.history == before.history
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]


# ----- SIGKILL while a checkpoint is being written -------------------------------------------------
_CHILD_TORN = textwrap.dedent("""
    import io, os, signal, sys
    import numpy as np
    import gpumlp as gm
    path, mode = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 20)), rng.integers(0, 4, 64)
    model = gm.MLP([20, 64, 4], backend="numpy", seed=0)
    model.fit(X, y, epochs=2, batch_size=16, checkpoint=path)          # a complete checkpoint at epoch 2
    np.save(path + ".expected.npy", model.get_weights()[0][0])
    real_savez, real_fsync = np.savez, os.fsync
    def torn_savez(f, **arrays):                                       # write half the file, then die
        buf = io.BytesIO(); real_savez(buf, **arrays); data = buf.getvalue()
        f.write(data[: len(data) // 2]); f.flush(); real_fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    def fsync_then_die(fd):                                           # the whole temp file, not yet renamed
        real_fsync(fd); os.kill(os.getpid(), signal.SIGKILL)
    if mode == "torn":
        np.savez = torn_savez
    else:
        os.fsync = fsync_then_die
    model.fit(X, y, epochs=3, batch_size=16, checkpoint=path)
    print("not killed")
""")


@pytest.mark.parametrize("mode", ["torn", "before-rename"])
def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_loadable(mode, tmp_path):
    path = str(tmp_path / "ck.npz")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD_TORN, path, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    ck = gm.load_checkpoint(path)
    assert ck.epoch == 2
    np.testing.assert_array_equal(ck.weights[0][0], np.load(path + ".expected.npy"))
    leftovers = glob.glob(str(tmp_path / ".tmp-*.npz"))
    assert len(leftovers) == 1  # the killed write's temp file: never renamed over the checkpoint
    with pytest.raises(ValueError) if mode == "torn" else _no_error():
        gm.load_checkpoint(leftovers[0])


class _no_error:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_CHILD_LOOP = textwrap.dedent("""
    import sys
    import numpy as np
    import gpumlp as gm
    from gpumlp.optimizers import SGD
    path = sys.argv[1]
    model = gm.MLP([256, 512, 256], output_activation="sigmoid", backend="numpy", dtype="float64", seed=0)
    opt = SGD(lr=0.1, momentum=0.9)
    opt.bind(model.params, model.ops)
    base = model.get_weights()
    epoch = 0
    while True:  # every checkpoint holds weights base + epoch: a mixed or torn file would show
        gm.save_checkpoint(path, model, opt, epoch, {"loss": [float(epoch)]})
        if epoch == 0:
            print("ready", flush=True)
        epoch += 1
        model.set_weights([(W + epoch, b + epoch) for W, b in base])
""")


def test_sigkill_at_random_moments_of_a_checkpoint_loop(tmp_path):
    rng = np.random.default_rng(0)
    path = str(tmp_path / "ck.npz")
    base = gm.MLP([256, 512, 256], output_activation="sigmoid", backend="numpy", dtype="float64", seed=0).get_weights()
    for delay in rng.uniform(0.05, 0.4, 3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD_LOOP, path],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": ROOT},
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        ck = gm.load_checkpoint(path)
        assert ck.history == {"loss": [float(ck.epoch)]}
        np.testing.assert_array_equal(ck.weights[1][0], base[1][0] + ck.epoch)
        np.testing.assert_array_equal(ck.weights[0][1], base[0][1] + ck.epoch)


# ----- round trips ----------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    hidden=st.sampled_from(["relu", "tanh", "sigmoid", "identity"]),
    dtype=st.sampled_from(["float32", "float64"]),
    opt=st.sampled_from(["sgd", "momentum", "adam"]),
    steps=st.integers(0, 3),
    generator=st.sampled_from(["PCG64", "Philox", "MT19937", "SFC64"]),
)
def test_checkpoint_round_trip_of_random_runs(sizes, hidden, dtype, opt, steps, generator):
    model = gm.MLP(sizes, hidden_activation=hidden, output_activation="sigmoid", dtype=dtype, backend="numpy", seed=1)
    model.rng = np.random.Generator(getattr(np.random, generator)(5))
    optimizer = {"sgd": SGD(0.1), "momentum": SGD(0.1, momentum=0.9), "adam": Adam(0.01)}[opt]
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(8, sizes[0])), rng.uniform(size=(8, sizes[-1]))
    history = {"loss": []}
    if steps:
        history = model.fit(X, Y, optimizer=optimizer, epochs=steps, batch_size=4)
    else:
        optimizer.bind(model.params, model.ops)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ck.npz")
        gm.save_checkpoint(path, model, optimizer, steps, history)
        ck = gm.load_checkpoint(path)
    assert ck.epoch == steps and ck.history == history and ck.meta["sizes"] == sizes and ck.meta["dtype"] == dtype
    for (W, b), (Wc, bc) in zip(model.get_weights(), ck.weights):
        np.testing.assert_array_equal(W, Wc)
        np.testing.assert_array_equal(b, bc)
        assert Wc.dtype == np.dtype(dtype)
    assert ck.optimizer["t"] == optimizer.t
    for k, arrays in optimizer.state.items():
        for live, saved in zip(arrays, ck.optimizer["state"][k]):
            np.testing.assert_array_equal(live, saved)
    fresh = np.random.Generator(getattr(np.random, generator)())
    fresh.bit_generator.state = ck.rng_state
    np.testing.assert_array_equal(fresh.random(4), model.rng.random(4))  # the same stream continues
