"""The GPU code path on the CPU: CupyOps' CUDA kernels and the CUDA-graph epoch loop, run
through tests/cuda_emulator.py and checked against the NumPy backend.

The NumPy backend is an independent implementation (ufuncs, OpenBLAS); the emulator runs the
very CUDA source the GPU compiles, with a graph replay that repeats recorded launches only.
What this cannot check (cuBLAS, real stream-capture rules, host syncs, speed) is in
tests/backends/test_gpu.py, which needs a GPU.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pytest

import gpumlp as gm
from gpumlp.optimizers import SGD, Adam
from gpumlp.training import Trainer
from gpumlp.training.cuda_graph import device_loop
from gpumlp.workspace import Workspace

from agreement import HIDDEN, OUTPUT_LOSS, flat, rel, targets
from cuda_emulator import EmulatedBackend, available

pytestmark = pytest.mark.skipif(not available(), reason="emulating CUDA kernels needs g++ on x86-64 Linux")

TOL = {"float64": 1e-10, "float32": 1e-4}  # max |a − b| / max |b|, as in tests/backends/test_gpu.py


@pytest.fixture(scope="module")
def emu() -> EmulatedBackend:
    return EmulatedBackend()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("output,loss", OUTPUT_LOSS)
def test_kernels_give_numpys_forward_loss_and_gradients(emu, dtype, hidden, output, loss):
    rng = np.random.default_rng(zlib.crc32(f"{dtype} {hidden} {output} {loss}".encode()))  # stable across runs
    hidden_sizes = [int(rng.integers(1, 9)) for _ in range(rng.integers(0, 3))]
    sizes = [int(rng.integers(1, 9)), *hidden_sizes, int(rng.integers(2, 6))]
    n = int(rng.integers(1, 40))
    X, T = rng.normal(size=(n, sizes[0])), targets(rng, loss, n, sizes[-1])
    kw = dict(hidden_activation=hidden, output_activation=output, dtype=dtype, seed=7)
    dev, ref = gm.MLP(sizes, backend=emu, **kw), gm.MLP(sizes, backend="numpy", **kw)
    tol = TOL[dtype]
    assert rel(dev.forward(X), ref.forward(X)) < tol
    expected = ref.loss(X, T, loss=loss, l2=0.1)
    assert abs(dev.loss(X, T, loss=loss, l2=0.1) - expected) <= tol * abs(expected)
    for (dW, db), (rW, rb) in zip(dev.gradients(X, T, loss=loss, l2=0.1), ref.gradients(X, T, loss=loss, l2=0.1)):
        assert gm.to_numpy(dW).dtype == np.dtype(dtype)
        assert rel(dW, rW) < tol and rel(db, rb) < tol


def test_kernels_on_shapes_that_need_many_blocks(emu):
    """Grid-stride loops, several row warps per block, several column blocks, a loss over more
    elements than the reduction block has threads."""
    rng = np.random.default_rng(3)
    sizes = [70, 300, 45]
    X, T = rng.normal(size=(600, 70)), np.eye(45)[rng.integers(0, 45, 600)]
    dev, ref = (gm.MLP(sizes, hidden_activation="tanh", dtype="float64", backend=b, seed=1) for b in (emu, "numpy"))
    assert rel(dev.forward(X), ref.forward(X)) < 1e-12
    assert abs(dev.loss(X, T) - ref.loss(X, T)) < 1e-12 * ref.loss(X, T)
    for (dW, db), (rW, rb) in zip(dev.gradients(X, T), ref.gradients(X, T)):
        assert rel(dW, rW) < 1e-12 and rel(db, rb) < 1e-12


def test_nan_reaches_the_loss(emu):
    """relu, the clip of Ŷ and the softmax keep NaN, so a diverged run reports a NaN loss."""
    model = gm.MLP([2, 3, 2], dtype="float64", backend=emu, seed=0)
    model.layers[0].W[0, 0] = np.nan
    Y = model.forward_into(Workspace.unbuffered(model, model.to_device(np.ones((4, 2)))))
    assert np.isnan(float(model.ops.loss_sum("cross_entropy", Y, model.to_device(np.eye(2)[[0, 1, 0, 1]]))))


OPTIMIZERS = [
    dict(optimizer="sgd", lr=0.2),
    dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, l2=0.01),
    dict(optimizer="adam", lr=0.01),
    dict(optimizer="sgd", lr=0.1, momentum=0.5, clip_norm=0.05),
]


def _fit(backend, dtype="float64", epochs=3, **kw):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(43, 5)), rng.integers(0, 3, 43)  # 43 = 5 batches of 8 and one of 3
    model = gm.MLP([5, 8, 3], hidden_activation="tanh", dtype=dtype, backend=backend, seed=3)
    history = model.fit(X, y, epochs=epochs, batch_size=8, seed=5, **kw)
    return model, history


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_device_training_matches_numpy(emu, opt):
    ref, h_ref = _fit("numpy", **opt)
    dev, h_dev = _fit(emu, **opt)
    assert rel(flat(dev), flat(ref)) < 1e-10
    np.testing.assert_allclose(h_dev["loss"], h_ref["loss"], rtol=1e-12)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_graph_replay_equals_eager_steps_exactly(emu, opt):
    eager, h_eager = _fit(emu, **opt)
    gemms = len(emu.xp.libcublas.compute_types)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed capture warns: that must not happen here
        graphed, h_graph = _fit(emu, cuda_graph=True, **opt)
    np.testing.assert_array_equal(flat(graphed), flat(eager))
    assert h_graph["loss"] == h_eager["loss"]
    # 3 epochs of 5 steps of 8 rows and 1 of 3. Epoch 1: a warm-up step of each shape runs eagerly,
    # the other 4 steps of 8 are captured as one graph; epoch 2 captures a 5-step graph (8 rows)
    # and a 1-step graph (3 rows); epoch 3 only replays, which calls nothing on the host. 5 GEMMs
    # a step (2 forward, 2 weight gradients, 1 delta): (2 eager + 4 + 5 + 1 captured) x 5.
    assert len(emu.xp.libcublas.compute_types) - gemms == 12 * 5


def test_the_device_loop_never_reads_past_its_permutation_or_schedule(emu):
    """Issue 16 item 2: run_epoch leaves step[0] at the end of the epoch; one more step would read
    perm[64:80] of 64 and lr_schedule[4] of 4 (an illegal address on a GPU). The loop refuses it on
    the host, before launching anything."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 8)), rng.integers(0, 3, 64)
    model = gm.MLP([8, 16, 3], dtype="float32", backend=emu, seed=0)
    Xd, Td, loss = model.check_data(X, y, "auto")
    trainer = Trainer(model, loss, Adam(lr=0.01), 1e-3, 16, True, np.random.default_rng(0), clip_norm=1.0)
    for graphs in (False, True):
        loop = device_loop(trainer, cuda_graph=graphs, allow_tf32=True)
        loop.run_epoch(Xd, Td)
        launches = emu.xp.launches
        with pytest.raises(RuntimeError, match="past the 4 steps of the epoch"):
            loop._enqueue_step(16)
        assert emu.xp.launches == launches  # refused before anything was launched
        with pytest.raises(RuntimeError, match="past the 4 steps of the epoch"):
            loop._run(16, 1)
        loop.rewind(4)
        loop._enqueue_step(16)  # a new epoch's first step is fine


def test_an_out_of_bounds_kernel_read_is_an_illegal_address(emu):
    """The emulator's own guard: a kernel indexing past an array it was given raises (on a GPU:
    cudaErrorIllegalAddress) instead of reading host memory."""
    from cuda_emulator import EmulatedIllegalAddress

    xp, ops = emu.xp, emu.ops
    X, T = xp.zeros((4, 2), dtype=np.float32), xp.zeros((4, 3), dtype=np.float32)
    perm, step = xp.arange(4, dtype=np.int64), xp.ones((1,), dtype=np.int32)  # batch 1 of 4 rows: perm[4:8]
    out_x, out_t = xp.zeros((4, 2), dtype=np.float32), xp.zeros((4, 3), dtype=np.float32)
    with pytest.raises(EmulatedIllegalAddress, match=r"gather_batch: perm\[4\] is outside its 4 elements"):
        ops.gather_batch(X, T, perm, step, 4, out_x, out_t)


def test_a_host_read_under_capture_fails_as_in_cupy(emu, monkeypatch):
    original = emu.ops.defer_loss_sum

    def reading(loss, Y, T, total, *counter):
        original(loss, Y, T, total, *counter)
        float(total)  # a D2H copy and a sync: CuPy refuses it while capturing

    monkeypatch.setattr(emu.ops, "defer_loss_sum", reading)
    with pytest.warns(RuntimeWarning, match="D2H transfers are disallowed"):
        _fit(emu, cuda_graph=True, optimizer="sgd", lr=0.1)


def test_a_kernel_first_compiled_under_capture_fails(emu, monkeypatch):
    """The eager warm-up step compiles and loads every kernel; one left for the capture is refused."""
    from gpumlp.training.cuda_graph import DeviceLoop

    original = DeviceLoop._capture

    def forgetful(self, rows, k):
        self.ops._kernels.clear()
        return original(self, rows, k)

    monkeypatch.setattr(DeviceLoop, "_capture", forgetful)
    with pytest.warns(RuntimeWarning, match="RawModule.get_function"):
        model, _ = _fit(emu, cuda_graph=True, optimizer="sgd", lr=0.1, momentum=0.5)
    monkeypatch.undo()
    eager, _ = _fit(emu, optimizer="sgd", lr=0.1, momentum=0.5)
    np.testing.assert_array_equal(flat(model), flat(eager))


def test_graphs_are_captured_once_per_batch_shape_and_replayed(emu):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(43, 5)), rng.integers(0, 3, 43)
    model = gm.MLP([5, 8, 3], dtype="float32", backend=emu, seed=3)
    opt = Adam(lr=0.01)
    Xd, Td, loss = model.check_data(X, y, "auto")
    trainer = Trainer(model, loss, opt, 0.0, 8, True, np.random.default_rng(1))
    loop = device_loop(trainer, cuda_graph=True)
    launches = []
    for _ in range(3):
        before = emu.xp.launches
        loop.run_epoch(Xd, Td)
        launches.append(emu.xp.launches - before)
    assert sorted(loop.captured) == [(3, 1), (8, 4), (8, 5)] and loop.graphs  # 4 steps after the warm-up, then 5
    assert opt.t == 18
    # epoch 2 captures the graphs of its 5 full steps and of its remainder step; epoch 3 is graph
    # replays only: no kernel launched from Python, one graph launch for the 5 full steps
    assert launches[1] > 0 and launches[2] == 0
    for a in [*model.params, *opt.state["m"], *model.workspace(8).flat_grad_list()]:
        assert a.dtype == np.float32
    assert loop.total.dtype == np.float64  # the epoch's loss sum


def test_graphs_are_recaptured_when_a_callback_changes_the_learning_rate(emu):
    def halve(model, epoch, logs):
        halve.opt.lr *= 0.5

    results = []
    for cuda_graph in (False, True):
        halve.opt = SGD(lr=0.2, momentum=0.5)
        model, _ = _fit(emu, optimizer=halve.opt, callbacks=[halve], cuda_graph=cuda_graph)
        results.append(flat(model))
    np.testing.assert_array_equal(results[1], results[0])


def test_cuda_graph_auto_uses_graphs_on_the_device(emu):
    auto, _ = _fit(emu, optimizer="adam", lr=0.01, cuda_graph="auto")
    eager, _ = _fit(emu, optimizer="adam", lr=0.01)
    np.testing.assert_array_equal(flat(auto), flat(eager))


def test_failed_capture_warns_and_training_goes_on_eagerly(emu, monkeypatch):
    def refuse(self, mode=None):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(emu.xp.cuda.Stream, "begin_capture", refuse)
    with pytest.warns(RuntimeWarning, match="capture failed.*not permitted"):
        model, history = _fit(emu, cuda_graph=True, optimizer="adam", lr=0.01)
    eager, h_eager = _fit(emu, optimizer="adam", lr=0.01)
    np.testing.assert_array_equal(flat(model), flat(eager))
    assert history["loss"] == h_eager["loss"]


def test_a_step_that_allocates_under_capture_is_not_replayed(emu, monkeypatch):
    original = emu.ops.defer_loss_sum

    def allocating(*args):
        emu.xp.empty((16,))  # a temporary: its memory could go to another array after capture
        original(*args)

    monkeypatch.setattr(emu.ops, "defer_loss_sum", allocating)
    with pytest.warns(RuntimeWarning, match=r"allocated device memory 4 time"):  # once in each of 4 captured steps
        model, _ = _fit(emu, cuda_graph=True, optimizer="sgd", lr=0.1)
    monkeypatch.undo()
    eager, _ = _fit(emu, optimizer="sgd", lr=0.1)
    np.testing.assert_array_equal(flat(model), flat(eager))


def test_a_step_that_a_graph_would_not_replay_falls_back(emu, monkeypatch):
    scratch = emu.xp.zeros((1,), dtype=np.int32)

    def flush_and_copy():
        emu.xp.copyto(scratch, scratch)  # not a kernel of the graph: the emulator refuses it under capture

    monkeypatch.setattr(emu.ops, "flush_loss_sum", flush_and_copy)
    with pytest.warns(RuntimeWarning, match="failed under capture"):
        model, _ = _fit(emu, cuda_graph=True, optimizer="adam", lr=0.01)
    monkeypatch.undo()
    eager, _ = _fit(emu, optimizer="adam", lr=0.01)
    np.testing.assert_array_equal(flat(model), flat(eager))


def test_allow_tf32_switches_float32_matmuls_only_while_training(emu):
    linalg, gemms = emu.xp._core._routines_linalg, emu.xp.libcublas.compute_types
    linalg.log.clear()
    start = len(gemms)
    _fit(emu, dtype="float32", epochs=2, allow_tf32=True)
    assert linalg.log == [linalg.COMPUTE_TYPE_TF32, linalg.COMPUTE_TYPE_DEFAULT] * 2
    assert set(gemms[start:]) == {77}  # every GEMM of the fit: CUBLAS_COMPUTE_32F_FAST_TF32
    emu.ops.gemm(*(emu.xp.ones((2, 2), dtype=np.float32) for _ in range(3)))
    assert gemms[-1] == 68  # after it: CUBLAS_COMPUTE_32F again
    assert linalg.get_compute_type(np.float32) == linalg.COMPUTE_TYPE_DEFAULT
    linalg.log.clear()
    _fit(emu, dtype="float32", epochs=2, cuda_graph=True)
    assert linalg.log == []  # off by default


def test_device_loop_refuses_what_it_cannot_run(emu):
    class Custom(SGD):
        pass

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(10, 5)), rng.integers(0, 3, 10)
    model = gm.MLP([5, 3], backend=emu)
    with pytest.raises(ValueError, match="cuda_graph=True supports the built-in optimizers"):
        model.fit(X, y, optimizer=Custom(lr=0.1), batch_size=4, cuda_graph=True)
    model.fit(X, y, optimizer=Custom(lr=0.1), batch_size=4, cuda_graph="auto", epochs=1)  # auto: the plain loop


# Launches per step of the mnist net (784-256-256-10, batch 128, float32): kernels + cuBLAS GEMMs +
# other array calls of one step, and the nodes of its captured graph. The table in docs/gpu.md.
LAUNCHES = [
    ("sgd", lambda: SGD(lr=0.01), {}, 14),
    ("momentum", lambda: SGD(lr=0.01, momentum=0.9), {}, 15),
    ("adam", lambda: Adam(lr=0.001), {}, 15),
    ("sgd l2", lambda: SGD(lr=0.01), {"l2": 1e-4}, 14),
    ("adam clip", lambda: Adam(lr=0.001), {"clip_norm": 1.0}, 17),
]


@pytest.mark.parametrize("name,make,kw,expected", LAUNCHES, ids=[c[0] for c in LAUNCHES])
def test_launches_per_mnist_step_are_those_of_the_docs_table(emu, name, make, kw, expected):
    from cuda_emulator import launches_per_step

    counts = launches_per_step(emu, [784, 256, 256, 10], 128, make(), **kw)
    assert counts == {"eager": expected, "graph": expected}  # the graph holds exactly the step's launches


def test_a_large_output_takes_the_two_pass_loss_sum_and_agrees_with_numpy(emu):
    """Batches of 70 x 1000 outputs (70,000 elements, above the one-block fused delta + loss): the
    loss is summed by 128 blocks, then one; the epoch loss agrees with NumPy's, graphs with eager."""
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(140, 6)), rng.integers(0, 1000, 140)
    kw = dict(epochs=2, batch_size=70, seed=1, optimizer="sgd", lr=0.1, momentum=0.5)
    fits = {}
    for name, backend, extra in (("numpy", "numpy", {}), ("eager", emu, {}), ("graph", emu, {"cuda_graph": True})):
        model = gm.MLP([6, 9, 1000], dtype="float64", backend=backend, seed=2)
        fits[name] = (model, model.fit(X, y, **kw, **extra))
    np.testing.assert_allclose(fits["eager"][1]["loss"], fits["numpy"][1]["loss"], rtol=1e-12)
    # the plain loop sums the loss in one block, the device loop in 128 + 1: same terms, other order
    np.testing.assert_allclose(fits["graph"][1]["loss"], fits["eager"][1]["loss"], rtol=1e-13)
    np.testing.assert_array_equal(flat(fits["graph"][0]), flat(fits["eager"][0]))
