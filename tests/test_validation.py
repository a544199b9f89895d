"""Input validation at every public entry: each bad input gets a ValueError or TypeError that
names the argument, what was wrong and what was expected; large inputs are checked in place."""

from __future__ import annotations

import math
import os
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpumlp as gm
from gpumlp.validation import check_inputs, check_number, check_targets

from reliability_cases import CASES, Context

FAST = settings(max_examples=40, deadline=None)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.entry}: {c.what}" for c in CASES])
def test_bad_input_gets_a_clear_error(case, tmp_path):
    ctx = Context(str(tmp_path))
    before = [m.get_weights() for m in (ctx.m, ctx.mb, ctx.mr)]
    with pytest.raises(case.exc, match=case.match) as info:
        case.call(ctx)
    assert type(info.value) is case.exc
    for model, weights in zip((ctx.m, ctx.mb, ctx.mr), before):  # a rejected call changes nothing
        for (W, b), (W0, b0) in zip(model.get_weights(), weights):
            np.testing.assert_array_equal(W, W0)
            np.testing.assert_array_equal(b, b0)
    assert not os.path.exists(ctx.marker), "loading ran code from the file"


def test_every_entry_point_is_covered():
    assert {c.entry for c in CASES} >= {"MLP", "fit", "predict", "loss", "gradients", "set_weights", "save", "load"}


def test_batch_size_larger_than_data_is_clipped_with_a_warning_and_equals_full_batch():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(10, 4)), rng.integers(0, 2, 10)
    a = gm.MLP([4, 3, 2], backend="numpy", seed=3)
    b = gm.MLP([4, 3, 2], backend="numpy", seed=3)
    with pytest.warns(UserWarning, match="batch_size=64 is larger than the 10 samples; using 10"):
        ha = a.fit(X, y, batch_size=64, epochs=3, seed=0)
    hb = b.fit(X, y, batch_size=None, epochs=3, seed=0)
    assert ha == hb
    for (Wa, ba), (Wb, bb) in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)


def test_numpy_scalars_and_arrays_are_accepted_where_python_ones_are():
    model = gm.MLP(np.array([3, 4, 2]), backend="numpy", seed=np.int64(0))
    X, y = np.ones((6, 3), dtype=np.float32), np.array([0, 1, 0, 1, 1, 0])
    h = model.fit(X, y, epochs=np.int64(2), batch_size=np.int32(3), lr=np.float32(0.1), shuffle=np.bool_(True))
    assert len(h["loss"]) == 2
    assert model.sizes == (3, 4, 2)


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_large_float32_inputs_are_checked_without_a_copy():
    X = np.zeros((1 << 19, 16), dtype=np.float32)  # 32 MiB
    T = np.zeros((X.shape[0], 16), dtype=np.float32)
    T[:, 0] = 1.0
    assert _peak_bytes(lambda: check_inputs(X, 16)) < 2 << 20  # one bounded isfinite chunk, no copy
    assert check_inputs(X, 16) is X
    peak = _peak_bytes(lambda: check_targets(T, X.shape[0], "cross_entropy", 16))
    assert peak < T.nbytes // 4  # (n,) row sums only: no float64 copy of T
    model = gm.MLP([16, 2], output_activation="sigmoid", backend="numpy")
    assert _peak_bytes(lambda: model.predict(X)) < X.nbytes // 2  # the output, not a copy of X


def test_nan_far_into_a_large_array_is_found():
    X = np.zeros((3 << 19, 2), dtype=np.float32)
    X[-1, -1] = np.nan  # in the last isfinite chunk
    with pytest.raises(ValueError, match="X contains NaN"):
        check_inputs(X, 2)


# ----- property tests: random shapes, dtypes and garbage against an independent oracle -----------
DTYPES = st.sampled_from(
    ["float32", "float64", "float16", "int64", "int8", "uint8", "bool", "complex64", "U3", "datetime64[s]"]
)


def _x_should_pass(a: np.ndarray, n_features: int) -> bool:
    return (
        a.dtype.kind in "biuf"
        and a.ndim == 2
        and a.shape[0] > 0
        and a.shape[1] == n_features
        and bool(np.all(np.isfinite(a.astype(np.float64))))
    )


@FAST
@given(
    a=DTYPES.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))),
    n_features=st.integers(1, 4),
)
def test_check_inputs_accepts_exactly_the_valid_arrays(a, n_features):
    if _x_should_pass(a, n_features):
        assert check_inputs(a, n_features, "Xq") is a
    else:
        with pytest.raises((ValueError, TypeError), match="Xq"):
            check_inputs(a, n_features, "Xq")


@FAST
@given(
    y=st.one_of(
        hnp.arrays(np.int64, st.integers(1, 12), elements=st.integers(-2, 5)),
        hnp.arrays(
            st.sampled_from([np.float32, np.float64]),
            st.integers(1, 12),
            elements=st.one_of(st.integers(-2, 5).map(float), st.floats(-1, 5, width=32), st.just(np.nan)),
        ),
    ),
    k=st.integers(2, 4),
)
def test_class_labels_accepted_exactly_when_integers_in_range(y, k):
    finite = bool(np.all(np.isfinite(y)))
    ok = finite and bool(np.all(y == np.round(y))) and y.min() >= 0 and y.max() < k
    if ok:
        T = check_targets(y, y.shape[0], "cross_entropy", k)
        np.testing.assert_array_equal(T.argmax(axis=1), y.astype(int))  # one-hot of the labels
        np.testing.assert_array_equal(T.sum(axis=1), 1.0)
    else:
        with pytest.raises(ValueError, match="Y"):
            check_targets(y, y.shape[0], "cross_entropy", k)


@FAST
@given(
    Y=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(1, 3)),
        elements=st.one_of(st.floats(-0.5, 1.5), st.sampled_from([np.nan, np.inf, -np.inf])),
    )
)
def test_binary_targets_accepted_exactly_when_finite_in_unit_interval(Y):
    ok = bool(np.all(np.isfinite(Y))) and Y.min() >= 0 and Y.max() <= 1
    if ok:
        np.testing.assert_array_equal(check_targets(Y, Y.shape[0], "binary_cross_entropy", Y.shape[1]), Y)
    else:
        with pytest.raises(ValueError, match="Y"):
            check_targets(Y, Y.shape[0], "binary_cross_entropy", Y.shape[1])


GARBAGE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@FAST
@given(value=GARBAGE, integer=st.booleans())
def test_check_number_accepts_exactly_finite_positive_numbers(value, integer):
    kind_ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if kind_ok and math.isfinite(value) and value > 0:
        assert check_number(value, "knob", integer=integer) == value
    else:
        with pytest.raises((ValueError, TypeError), match="knob"):
            check_number(value, "knob", integer=integer)


@FAST
@given(
    sizes=st.one_of(GARBAGE, st.lists(GARBAGE, min_size=0, max_size=4)),
    hidden=st.one_of(st.sampled_from(["relu", "tanh", "sigmoid", "identity"]), GARBAGE),
    dtype=st.one_of(st.sampled_from(["float32", "float64"]), GARBAGE),
)
def test_constructor_garbage_raises_only_value_or_type_errors(sizes, hidden, dtype):
    try:
        model = gm.MLP(sizes, hidden_activation=hidden, output_activation="sigmoid", dtype=dtype, backend="numpy")
    except (ValueError, TypeError) as exc:
        assert any(name in str(exc) for name in ("sizes", "hidden_activation", "dtype"))
        return
    assert len(model.sizes) >= 2 and all(isinstance(s, int) and s > 0 for s in model.sizes)


@FAST
@given(
    X=st.one_of(
        GARBAGE, DTYPES.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)))
    ),
    Y=st.one_of(GARBAGE, hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=2, max_side=4))),
    lr=st.one_of(st.floats(allow_nan=True, allow_infinity=True), GARBAGE),
    batch=st.one_of(st.integers(-2, 6), GARBAGE),
)
def test_fit_garbage_raises_only_value_or_type_errors_and_keeps_weights(X, Y, lr, batch):
    model = gm.MLP([2, 3, 1], output_activation="sigmoid", backend="numpy", seed=0)
    before = model.get_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # batch_size clipping
        try:
            model.fit(X, Y, lr=lr, batch_size=batch, epochs=1)
        except (ValueError, TypeError):
            for (W, b), (W0, b0) in zip(model.get_weights(), before):
                np.testing.assert_array_equal(W, W0)
                np.testing.assert_array_equal(b, b0)
            return
    assert all(np.all(np.isfinite(W)) for W, _ in model.get_weights())


def test_callbacks_may_be_any_iterable_and_each_runs_every_epoch():
    seen = []
    X, y = np.ones((4, 2)), np.array([0, 1, 0, 1])
    gm.MLP([2, 2], backend="numpy").fit(
        X, y, epochs=3, batch_size=2, callbacks=(cb for cb in [lambda m, e, l: seen.append(e)])
    )
    assert seen == [1, 2, 3]
