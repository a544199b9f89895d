"""Multi-tensor apply (issue 16): one launch updates every parameter, bit for bit as the
per-parameter kernels do; the clip's norm in one launch; the bias gradient + SGD bias update in one.

Run on the CPU emulator (tests/cuda_emulator.py) against the per-tensor kernels they replace, which
tests/backends/test_cuda_emulated.py checks against NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest

from cuda_emulator import EmulatedBackend, EmulatedIllegalAddress, available

pytestmark = pytest.mark.skipif(not available(), reason="emulating CUDA kernels needs g++ on x86-64 Linux")

SIZES = [(1,), (7, 3), (300,), (1, 1), (65, 5), (20, 33)]  # odd sizes: tensor boundaries inside blocks


@pytest.fixture(scope="module")
def emu() -> EmulatedBackend:
    return EmulatedBackend()


def _arrays(emu, rng, dtype, scale=1.0):
    return [emu.xp.asarray((rng.normal(size=s) * scale).astype(dtype)) for s in SIZES]


def _copy(emu, arrays):
    return [emu.xp.asarray(np.array(a)) for a in arrays]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("clipped", [False, True])
def test_multi_adam_equals_adam_per_tensor_bit_for_bit(emu, dtype, clipped):
    rng = np.random.default_rng(1)
    ops, xp = emu.ops, emu.xp
    p, g, m = _arrays(emu, rng, dtype), _arrays(emu, rng, dtype), _arrays(emu, rng, dtype, 0.1)
    v = [xp.asarray(np.abs(np.array(a))) for a in _arrays(emu, rng, dtype, 0.1)]
    schedule, step = xp.asarray(np.array([0.3, 0.01, 0.2], dtype=dtype)), xp.asarray(np.array([1], dtype=np.int32))
    ref = [_copy(emu, a) for a in (p, g, m, v)]
    if clipped:
        ops.clip_global_norm(ref[1], 0.5)  # the per-tensor way: scale_by each gradient, then update
    for pk, gk, mk, vk in zip(*ref):
        ops.adam_update_scheduled(pk, gk, mk, vk, schedule, step, 0.9, 0.999, 1e-8)
    scale = ops.multi_clip_factor(ops.tensor_table(g), g, 0.5) if clipped else None
    before = xp.launches
    ops.multi_adam_update_scheduled(ops.tensor_table(p, g, m, v), g, schedule, step, 0.9, 0.999, 1e-8, scale=scale)
    assert xp.launches - before == 1
    for got, want in zip((p, m, v), (ref[0], ref[2], ref[3])):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(np.array(a), np.array(b))


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_multi_sgd_equals_sgd_per_tensor_bit_for_bit(emu, momentum, nesterov):
    rng = np.random.default_rng(2)
    ops = emu.ops
    p, g, vel = _arrays(emu, rng, "float32"), _arrays(emu, rng, "float32"), _arrays(emu, rng, "float32", 0.1)
    ref_p, ref_v = _copy(emu, p), _copy(emu, vel)
    ref_g = ops.clip_global_norm(_copy(emu, g), 1.0)
    for pk, gk, vk in zip(ref_p, ref_g, ref_v):
        ops.sgd_update(pk, gk, vk if momentum else None, 0.1, momentum, nesterov)
    state = [vel] if momentum else []
    scale = ops.multi_clip_factor(ops.tensor_table(g), g, 1.0)
    ops.multi_sgd_update(ops.tensor_table(p, g, *state), g, bool(momentum), 0.1, momentum, nesterov, scale=scale)
    for a, b in zip(p + (vel if momentum else []), ref_p + (ref_v if momentum else [])):
        np.testing.assert_array_equal(np.array(a), np.array(b))


def test_the_clip_factor_is_min_of_one_and_c_over_the_global_norm(emu):
    rng = np.random.default_rng(3)
    g = _arrays(emu, rng, "float64")
    norm = np.sqrt(sum(float(np.sum(np.array(a) ** 2)) for a in g))  # independent: NumPy in float64
    for c in (0.5 * norm, 2 * norm):
        before = emu.xp.launches
        factor = emu.ops.multi_clip_factor(emu.ops.tensor_table(g), g, c)
        assert emu.xp.launches - before == 2
        assert float(factor[0]) == pytest.approx(min(1.0, c / norm), rel=1e-14)


def test_column_sums_added_to_a_bias_in_one_launch(emu):
    rng = np.random.default_rng(4)
    D = rng.normal(size=(130, 70))
    b = rng.normal(size=70)
    bd, Dd = emu.xp.asarray(b), emu.xp.asarray(D)
    before = emu.xp.launches
    assert emu.ops.add_column_sums(bd, Dd, -0.5)
    assert emu.xp.launches - before == 1
    np.testing.assert_allclose(np.array(bd), b - 0.5 * D.sum(axis=0), rtol=1e-13, atol=1e-13)
    assert not emu.ops.add_column_sums(bd, Dd[:, :3])  # strided: refused, nothing done


def test_a_table_pointer_outside_device_memory_is_an_illegal_address(emu):
    """The emulator checks every pointer of a table at launch: each must address its tensor's size."""
    rng = np.random.default_rng(5)
    p, g = _arrays(emu, rng, "float32"), _arrays(emu, rng, "float32")
    table = np.array(emu.ops.tensor_table(p, g))
    table[len(SIZES) + 1 + 2 * 2 + 1] += 4 * 300  # tensor 2's gradient pointer, one tensor's length on
    with pytest.raises(EmulatedIllegalAddress, match="pointer 1 of tensor 2"):
        emu.ops.multi_sgd_update(emu.xp.asarray(table), g, False, 0.1, 0.0, False)


def test_arrays_the_kernels_cannot_take_get_no_table(emu):
    rng = np.random.default_rng(6)
    p = _arrays(emu, rng, "float32")
    assert emu.ops.tensor_table(p, [a.astype(np.float64) for a in p]) is None  # mixed dtypes
    assert emu.ops.tensor_table(p, p[::-1]) is None  # sizes differ
    assert emu.ops.tensor_table([emu.xp.zeros((4, 4), dtype=np.float32)[:, :2]]) is None  # strided


def test_the_output_delta_and_loss_kernel_advances_the_batch_counter_once(emu):
    """Issue 16: the device loop's step[0] += 1 rides in the one-block delta + loss kernel (after the
    step's gather has read it), so no launch of its own; without a counter nothing is advanced."""
    xp, ops = emu.xp, emu.ops
    Y, T = xp.asarray(np.full((4, 3), 1 / 3)), xp.asarray(np.eye(3)[[0, 1, 2, 0]])
    total, step = xp.zeros((), dtype=np.float64), xp.asarray(np.array([5], dtype=np.int32))
    before = xp.launches
    ops.defer_loss_sum("cross_entropy", Y, T, total, step)
    ops.output_delta("softmax", "cross_entropy", Y, T, 0.25, out=xp.empty((4, 3)))
    assert xp.launches - before == 1 and ops.advanced is step
    assert int(step[0]) == 6 and float(total) == pytest.approx(4 * np.log(3), rel=1e-14)
    ops.defer_loss_sum("cross_entropy", Y, T, total)
    ops.output_delta("softmax", "cross_entropy", Y, T, 0.25, out=xp.empty((4, 3)))
    assert int(step[0]) == 6


@pytest.mark.parametrize("classes", [3, 1000])  # 1000: 70 x 1000 outputs, beyond the fused kernel: an advance launch
def test_adam_reads_its_step_size_at_the_right_counter_either_way(emu, classes):
    import gpumlp as gm

    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(140, 6)), rng.integers(0, classes, 140)
    kw = dict(epochs=2, batch_size=70, seed=1, optimizer="adam", lr=0.01)
    fits = {}
    for name, backend, extra in (("numpy", "numpy", {}), ("eager", emu, {}), ("graph", emu, {"cuda_graph": True})):
        model = gm.MLP([6, 9, classes], dtype="float64", backend=backend, seed=2)
        model.fit(X, y, **kw, **extra)
        fits[name] = np.concatenate([np.ravel(gm.to_numpy(p)) for p in model.params])
    np.testing.assert_allclose(fits["eager"], fits["numpy"], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(fits["graph"], fits["eager"])


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "identity"])
def test_backprop_and_bias_update_in_one_launch_equal_the_two_kernels(emu, activation):
    rng = np.random.default_rng(8)
    xp, ops = emu.xp, emu.ops
    Z, D, b = rng.random(size=(37, 45)), rng.normal(size=(37, 45)), rng.normal(size=45)
    D1, b1 = xp.asarray(D), xp.asarray(b)
    D2, b2 = xp.asarray(D), xp.asarray(b)
    ops.backprop_activation(activation, xp.asarray(Z), D1)
    ops.add_column_sums(b1, D1, -0.5)
    db1 = ops.sum_rows(D1, out=xp.empty(45))
    before = xp.launches
    assert ops.backprop_add_bias(activation, xp.asarray(Z), D2, b2, -0.5)
    assert xp.launches - before == 1
    np.testing.assert_array_equal(np.array(D2), np.array(D1))
    np.testing.assert_array_equal(np.array(b2), np.array(b1))
    D3, db3 = xp.asarray(D), xp.empty(45)
    assert ops.backprop_add_bias(activation, xp.asarray(Z), D3, db3, assign=True)  # db = 1ᵀD, col_sum's bits
    np.testing.assert_array_equal(np.array(db3), np.array(db1))
    assert not ops.backprop_add_bias(activation, xp.asarray(Z), D2[:, :5], b2[:5])  # strided D: refused


def test_the_output_delta_kernel_adds_the_bias_gradient_where_it_makes_the_loss(emu):
    xp, ops = emu.xp, emu.ops
    rng = np.random.default_rng(9)
    Y = rng.random(size=(21, 4))
    Y /= Y.sum(axis=1, keepdims=True)
    T, b = np.eye(4)[rng.integers(0, 4, 21)], rng.normal(size=4)
    Yd, Td, bd, total = xp.asarray(Y), xp.asarray(T), xp.asarray(b), xp.zeros((), dtype=np.float64)
    out, done = ops.output_delta_add_bias("softmax", "cross_entropy", Yd, Td, -0.1, xp.empty((21, 4)), bd)
    assert not done  # no deferred loss sum: the plain delta kernel, no bias update
    np.testing.assert_array_equal(np.array(bd), b)
    ops.defer_loss_sum("cross_entropy", Yd, Td, total)
    out, done = ops.output_delta_add_bias("softmax", "cross_entropy", Yd, Td, -0.1, xp.empty((21, 4)), bd)
    assert done
    np.testing.assert_allclose(np.array(out), -0.1 * (Y - T), rtol=1e-13)
    np.testing.assert_allclose(np.array(bd), b - 0.1 * (Y - T).sum(axis=0), rtol=1e-13, atol=1e-15)
    ref = xp.asarray(b)
    ops.add_column_sums(ref, out)
    np.testing.assert_array_equal(np.array(bd), np.array(ref))  # col_sum's order: the same bits


FITS = [
    dict(optimizer="sgd", lr=0.1, l2=0.01),
    dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, l2=0.01),
    dict(optimizer="adam", lr=0.01, clip_norm=0.1),
    dict(optimizer="sgd", lr=0.1, clip_norm=0.1),
]


@pytest.mark.parametrize("fit", FITS, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "identity"])
def test_folded_biases_and_one_update_launch_train_as_numpy(emu, activation, fit):
    """Two hidden layers: bias gradients made by the kernels that make D_l (added to b_l for plain
    SGD, into db_l for the rest), every gradient collected for one multi-tensor update (+ clip)."""
    import gpumlp as gm

    rng = np.random.default_rng(10)
    X, y = rng.normal(size=(50, 6)), rng.integers(0, 4, 50)
    kw = dict(epochs=2, batch_size=16, seed=1, **fit)
    fits = {}
    for name, backend, extra in (("numpy", "numpy", {}), ("eager", emu, {}), ("graph", emu, {"cuda_graph": True})):
        model = gm.MLP([6, 9, 7, 4], hidden_activation=activation, dtype="float64", backend=backend, seed=2)
        model.fit(X, y, **kw, **extra)
        fits[name] = np.concatenate([np.ravel(gm.to_numpy(p)) for p in model.params])
    np.testing.assert_allclose(fits["eager"], fits["numpy"], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(fits["graph"], fits["eager"])
