"""Bad inputs at every public entry and the error each must raise: one table, two readers.

tests/test_validation.py asserts every row; scripts/reliability_table.py runs the same rows
and writes the table in docs/reliability.md from what they actually raised.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

import gpumlp as gm
from gpumlp.cli.errors import CLIError
from gpumlp.modelfile import encode_meta


class Case(NamedTuple):
    entry: str  # the public call that gets the bad input
    what: str  # the bad input, in words
    call: Callable[[Context], Any]
    exc: type[BaseException]
    match: str  # a regex the message must contain (names the argument and what was expected)


class _Evil:
    """Unpickling this would create a file: the load tests check that it never runs."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (self.marker, "w"))


class Context:
    """Models, data and a scratch directory for the cases."""

    def __init__(self, tmp: str) -> None:
        rng = np.random.default_rng(0)
        self.tmp = tmp
        self.X = rng.normal(size=(20, 5)).astype(np.float32)
        self.y = rng.integers(0, 3, 20)
        self.m = gm.MLP([5, 4, 3], backend="numpy", seed=0)  # softmax: cross_entropy
        self.mb = gm.MLP([5, 4, 1], output_activation="sigmoid", backend="numpy", seed=0)  # binary_cross_entropy
        self.mr = gm.MLP([5, 4, 2], output_activation="identity", backend="numpy", seed=0)  # mse
        self.good = os.path.join(tmp, "good.npz")
        self.m.save(self.good)
        self.marker = os.path.join(tmp, "PWNED")

    def path(self, name: str) -> str:
        return os.path.join(self.tmp, name)

    def write(self, name: str, data: bytes) -> str:
        with open(self.path(name), "wb") as f:
            f.write(data)
        return self.path(name)

    def npz(self, name: str, **arrays: Any) -> str:
        np.savez(self.path(name), **arrays)
        return self.path(name)

    def good_arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.good) as z:
            return {k: z[k] for k in z.files}

    def with_meta(self, name: str, **changes: Any) -> str:
        arrays = self.good_arrays()
        meta = json.loads(arrays["__meta__"].tobytes())
        meta.update(changes)
        arrays["__meta__"] = encode_meta(meta)
        return self.npz(name, **arrays)

    def with_array(self, name: str, key: str, value: Any) -> str:
        arrays = self.good_arrays()
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
        return self.npz(name, **arrays)

    def evil_object_file(self) -> str:
        return self.npz(
            "evil.npz",
            __meta__=encode_meta({"format": "gpumlp", "version": 1}),
            W0=np.array([_Evil(self.marker)], dtype=object),
        )

    def evil_pickle_file(self) -> str:
        return self.write("evil.pkl", pickle.dumps(_Evil(self.marker)))

    def npy_file(self) -> str:
        buf = io.BytesIO()
        np.save(buf, np.zeros(3))
        return self.write("single.npy", buf.getvalue())

    def zip_without_arrays(self) -> str:
        with zipfile.ZipFile(self.path("plain.zip"), "w") as z:
            z.writestr("readme.txt", "not a model")
        return self.path("plain.zip")

    def truncated(self) -> str:
        with open(self.good, "rb") as f:
            data = f.read()
        return self.write("truncated.npz", data[: len(data) // 2])

    def compressed_damaged(self) -> str:
        np.savez_compressed(self.path("packed.npz"), **self.good_arrays())
        with zipfile.ZipFile(self.path("packed.npz")) as z:
            at = z.getinfo("W0.npy").header_offset
        with open(self.path("packed.npz"), "rb") as f:
            data = bytearray(f.read())
        start = (
            at
            + 30
            + int.from_bytes(data[at + 26 : at + 28], "little")
            + int.from_bytes(data[at + 28 : at + 30], "little")
        )
        data[start] = 0xFF  # the first deflate block header becomes the reserved type 3: zlib.error
        return self.write("packed.npz", bytes(data))

    def bomb(self) -> str:
        """The good model plus a member of 40 MB of zeros (deflated to about 40 kB)."""
        buf = io.BytesIO()
        np.save(buf, np.zeros(10 << 20, np.float32))
        with zipfile.ZipFile(self.path("bomb.npz"), "w", zipfile.ZIP_DEFLATED) as z:
            for name, a in self.good_arrays().items():
                one = io.BytesIO()
                np.save(one, a)
                z.writestr(f"{name}.npy", one.getvalue())
            z.writestr("junk.npy", buf.getvalue())
        return self.path("bomb.npz")

    def deep_json(self) -> str:
        return self.with_array("deep.npz", "__meta__", np.frombuffer(b"[" * 200_000 + b"]" * 200_000, np.uint8))

    def fifo(self) -> str:
        os.mkfifo(self.path("pipe.npz"))
        return self.path("pipe.npz")

    def read_only(self) -> str:
        self.m.save(self.path("ro.npz"))
        os.chmod(self.path("ro.npz"), 0o444)
        return self.path("ro.npz")

    def checkpoint(self, name: str, change: Callable[[dict[str, Any]], None] | None = None, **arrays: Any) -> str:
        """A checkpoint of a copy of ``self.m`` after one epoch, with its record changed by ``change``
        and the given arrays replaced."""
        path = self.path(name)
        model = gm.MLP([5, 4, 3], backend="numpy", seed=0)
        model.fit(self.X, self.y, epochs=1, batch_size=4, momentum=0.9, early_stopping=True, checkpoint=path)
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
        record = json.loads(data["__checkpoint__"].tobytes())
        if change is not None:
            change(record)
        data.update(arrays, __checkpoint__=encode_meta(record))
        np.savez(path, **data)
        return path

    def flipped(self) -> str:
        with open(self.good, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 3] ^= 0xFF  # inside W0's bytes: the zip CRC no longer matches
        return self.write("flipped.npz", bytes(data))


def _fit(model: gm.MLP, X: Any, y: Any, **kw: Any) -> Any:
    return model.fit(X, y, **{"epochs": 1, "batch_size": 4, **kw})


nan_X = lambda c: np.where(c.X > 1, np.nan, c.X)  # noqa: E731

CASES: list[Case] = [
    # ----- MLP(...)
    Case("MLP", "sizes not a list", lambda c: gm.MLP("5,3"), TypeError, "sizes must be a list"),
    Case(
        "MLP",
        "one layer width only",
        lambda c: gm.MLP([5]),
        ValueError,
        "sizes must list at least an input and an output",
    ),
    Case("MLP", "zero width", lambda c: gm.MLP([5, 0, 3]), ValueError, r"sizes\[1\] must be > 0"),
    Case("MLP", "negative width", lambda c: gm.MLP([5, -2, 3]), ValueError, r"sizes\[1\] must be > 0"),
    Case("MLP", "float width", lambda c: gm.MLP([5, 2.5, 3]), TypeError, r"sizes\[1\] must be an integer"),
    Case("MLP", "bool width", lambda c: gm.MLP([5, True, 3]), TypeError, r"sizes\[1\] must be an integer"),
    Case(
        "MLP",
        "unknown hidden activation",
        lambda c: gm.MLP([5, 3], hidden_activation="swish"),
        ValueError,
        "hidden_activation must be one of",
    ),
    Case(
        "MLP",
        "softmax as a hidden activation",
        lambda c: gm.MLP([5, 4, 3], hidden_activation="softmax"),
        ValueError,
        "hidden_activation must be one of",
    ),
    Case(
        "MLP",
        "unknown output activation",
        lambda c: gm.MLP([5, 3], output_activation="relu6"),
        ValueError,
        "output_activation must be one of",
    ),
    Case("MLP", "softmax with one output", lambda c: gm.MLP([5, 1]), ValueError, "softmax' needs at least 2 outputs"),
    Case("MLP", "unknown dtype", lambda c: gm.MLP([5, 3], dtype="float16"), ValueError, "dtype must be one of"),
    Case("MLP", "integer dtype", lambda c: gm.MLP([5, 3], dtype=int), ValueError, "dtype must be one of"),
    Case("MLP", "unknown backend", lambda c: gm.MLP([5, 3], backend="tpu"), ValueError, "backend must be one of"),
    Case("MLP", "backend not a string", lambda c: gm.MLP([5, 3], backend=3), TypeError, "backend must be a string"),
    Case("MLP", "negative seed", lambda c: gm.MLP([5, 3], seed=-1), ValueError, "seed must be >= 0"),
    Case("MLP", "float seed", lambda c: gm.MLP([5, 3], seed=1.5), TypeError, "seed must be an integer"),
    # ----- fit: the data
    Case("fit", "X 1-D", lambda c: _fit(c.m, c.X[:, 0], c.y), ValueError, r"X must be 2-D .*reshape\(-1, 1\)"),
    Case("fit", "X 3-D", lambda c: _fit(c.m, c.X[None], c.y), ValueError, "X must be 2-D"),
    Case(
        "fit",
        "wrong feature count",
        lambda c: _fit(c.m, c.X[:, :4], c.y),
        ValueError,
        "X has 4 features per sample; the model expects 5",
    ),
    Case(
        "fit",
        "X and Y of different lengths",
        lambda c: _fit(c.m, c.X, c.y[:-1]),
        ValueError,
        "X and Y have different lengths: X has 20 samples, Y has 19",
    ),
    Case("fit", "empty X and Y", lambda c: _fit(c.m, c.X[:0], c.y[:0]), ValueError, "X is empty"),
    Case("fit", "NaN in X", lambda c: _fit(c.m, nan_X(c), c.y), ValueError, "X contains NaN or infinite values"),
    Case(
        "fit",
        "inf in X",
        lambda c: _fit(c.m, np.where(c.X > 1, np.inf, c.X), c.y),
        ValueError,
        "X contains NaN or infinite values",
    ),
    Case(
        "fit",
        "NaN in Y",
        lambda c: _fit(c.mr, c.X, np.full((20, 2), np.nan)),
        ValueError,
        "Y contains NaN or infinite values",
    ),
    Case("fit", "X of strings", lambda c: _fit(c.m, c.X.astype(str), c.y), TypeError, "X must hold numbers"),
    Case("fit", "X complex", lambda c: _fit(c.m, c.X.astype(complex), c.y), TypeError, "X must hold numbers"),
    Case("fit", "X of Python objects", lambda c: _fit(c.m, c.X.astype(object), c.y), TypeError, "X must hold numbers"),
    Case(
        "fit",
        "X ragged nested lists",
        lambda c: _fit(c.m, [[1.0] * 5, [1.0] * 4], c.y[:2]),
        TypeError,
        "X must be a numeric array",
    ),
    Case("fit", "X None", lambda c: _fit(c.m, None, c.y), TypeError, "X must be an array; got None"),
    Case("fit", "Y sparse matrix", lambda c: _fit(c.m, c.X, _Sparse()), TypeError, r"Y is a sparse matrix.*toarray"),
    Case("fit", "Y of strings", lambda c: _fit(c.m, c.X, c.y.astype(str)), TypeError, "Y must hold numbers"),
    Case(
        "fit",
        "class labels out of range",
        lambda c: _fit(c.m, c.X, c.y + 1),
        ValueError,
        r"Y class labels must lie in \[0, 2\] .*got labels in \[1, 3\]",
    ),
    Case(
        "fit",
        "negative class labels",
        lambda c: _fit(c.m, c.X, c.y - 1),
        ValueError,
        r"Y class labels must lie in \[0, 2\]",
    ),
    Case(
        "fit",
        "non-integer class labels",
        lambda c: _fit(c.m, c.X, c.y + 0.5),
        ValueError,
        "Y class labels must be integers",
    ),
    Case(
        "fit",
        "one-hot rows not summing to 1",
        lambda c: _fit(c.m, c.X, np.eye(3)[c.y] * 2 / 3),
        ValueError,
        r"Y rows for cross_entropy must sum to 1.*row 0 sums to 0.666",
    ),
    Case(
        "fit",
        "cross_entropy targets outside [0, 1]",
        lambda c: _fit(c.m, c.X, np.eye(3)[c.y] * 2 - 0.5),
        ValueError,
        r"Y for cross_entropy must lie in \[0, 1\]",
    ),
    Case(
        "fit",
        "binary_cross_entropy targets outside [0, 1]",
        lambda c: _fit(c.mb, c.X, c.y),
        ValueError,
        r"Y for binary_cross_entropy must lie in \[0, 1\]; got values in \[0, 2\]",
    ),
    Case(
        "fit",
        "Y shape not matching the outputs",
        lambda c: _fit(c.mr, c.X, c.X[:, :3]),
        ValueError,
        r"Y must have shape \(20, 2\) to match the model's 2 outputs",
    ),
    Case(
        "fit",
        "integer labels as a column",
        lambda c: _fit(c.m, c.X, c.y[:, None]),
        ValueError,
        r"or integer class labels of shape \(n_samples,\)",
    ),
    # ----- fit: the settings
    Case("fit", "unknown loss", lambda c: _fit(c.m, c.X, c.y, loss="hinge"), ValueError, "loss must be one of"),
    Case(
        "fit",
        "cross_entropy on an identity output",
        lambda c: _fit(c.mr, c.X, c.y, loss="cross_entropy"),
        ValueError,
        "needs outputs in",
    ),
    Case(
        "fit",
        "unknown optimizer",
        lambda c: _fit(c.m, c.X, c.y, optimizer="rmsprop"),
        ValueError,
        "optimizer must be one of",
    ),
    Case(
        "fit",
        "optimizer not a string",
        lambda c: _fit(c.m, c.X, c.y, optimizer=3),
        TypeError,
        "optimizer must be a string",
    ),
    Case("fit", "lr = 0", lambda c: _fit(c.m, c.X, c.y, lr=0), ValueError, "lr must be > 0"),
    Case("fit", "lr < 0", lambda c: _fit(c.m, c.X, c.y, lr=-0.1), ValueError, "lr must be > 0"),
    Case("fit", "lr NaN", lambda c: _fit(c.m, c.X, c.y, lr=float("nan")), ValueError, "lr must be finite"),
    Case("fit", "lr inf", lambda c: _fit(c.m, c.X, c.y, lr=float("inf")), ValueError, "lr must be finite"),
    Case("fit", "lr a string", lambda c: _fit(c.m, c.X, c.y, lr="0.1"), TypeError, "lr must be a real number"),
    Case("fit", "epochs = 0", lambda c: _fit(c.m, c.X, c.y, epochs=0), ValueError, "epochs must be > 0"),
    Case(
        "fit",
        "epochs not an integer",
        lambda c: _fit(c.m, c.X, c.y, epochs=2.5),
        TypeError,
        "epochs must be an integer",
    ),
    Case("fit", "batch_size = 0", lambda c: _fit(c.m, c.X, c.y, batch_size=0), ValueError, "batch_size must be > 0"),
    Case(
        "fit",
        "batch_size not an integer",
        lambda c: _fit(c.m, c.X, c.y, batch_size=8.0),
        TypeError,
        "batch_size must be an integer",
    ),
    Case("fit", "momentum >= 1", lambda c: _fit(c.m, c.X, c.y, momentum=1.0), ValueError, "momentum must be < 1"),
    Case(
        "fit",
        "nesterov without momentum",
        lambda c: _fit(c.m, c.X, c.y, nesterov=True),
        ValueError,
        "nesterov=True needs momentum > 0",
    ),
    Case(
        "fit",
        "momentum with adam",
        lambda c: _fit(c.m, c.X, c.y, optimizer="adam", momentum=0.9),
        ValueError,
        "momentum and nesterov apply to optimizer='sgd' only",
    ),
    Case("fit", "l2 < 0", lambda c: _fit(c.m, c.X, c.y, l2=-1e-3), ValueError, "l2 must be >= 0"),
    Case(
        "fit",
        "patience = 0",
        lambda c: _fit(c.m, c.X, c.y, early_stopping=True, patience=0),
        ValueError,
        "patience must be > 0",
    ),
    Case(
        "fit",
        "shuffle not a bool",
        lambda c: _fit(c.m, c.X, c.y, shuffle="no"),
        TypeError,
        "shuffle must be True or False; got str 'no'",
    ),
    Case("fit", "clip_norm = 0", lambda c: _fit(c.m, c.X, c.y, clip_norm=0), ValueError, "clip_norm must be > 0"),
    Case(
        "fit",
        "clip_norm NaN",
        lambda c: _fit(c.m, c.X, c.y, clip_norm=float("nan")),
        ValueError,
        "clip_norm must be finite",
    ),
    Case(
        "fit",
        "divergence_threshold <= 1",
        lambda c: _fit(c.m, c.X, c.y, divergence_threshold=0.5),
        ValueError,
        "divergence_threshold must be > 1",
    ),
    Case(
        "fit",
        "checkpoint_every = 0",
        lambda c: _fit(c.m, c.X, c.y, checkpoint_every=0),
        ValueError,
        "checkpoint_every must be > 0",
    ),
    Case(
        "fit",
        "checkpoint in a missing directory",
        lambda c: _fit(c.m, c.X, c.y, checkpoint=c.path("no/such/dir/ck.npz")),
        FileNotFoundError,
        "checkpoint=.*directory .* does not exist",
    ),
    Case(
        "fit",
        "checkpoint is a directory",
        lambda c: _fit(c.m, c.X, c.y, checkpoint=c.tmp),
        ValueError,
        "checkpoint=.* is a directory",
    ),
    Case(
        "fit",
        "checkpoint not a path",
        lambda c: _fit(c.m, c.X, c.y, checkpoint=3),
        TypeError,
        "checkpoint must be a file path",
    ),
    Case(
        "fit",
        "resume from a missing file",
        lambda c: _fit(c.m, c.X, c.y, resume=c.path("none.npz")),
        FileNotFoundError,
        "no model file at",
    ),
    Case(
        "fit",
        "resume from a model file, not a checkpoint",
        lambda c: _fit(c.m, c.X, c.y, resume=c.good),
        ValueError,
        "not a training checkpoint",
    ),
    Case(
        "fit",
        "callbacks not callable",
        lambda c: _fit(c.m, c.X, c.y, callbacks=[1]),
        TypeError,
        r"callbacks\[0\] must be callable",
    ),
    Case(
        "fit",
        "validation_data not a pair",
        lambda c: _fit(c.m, c.X, c.y, validation_data=(c.X,)),
        TypeError,
        "validation_data must be a pair",
    ),
    Case(
        "fit",
        "validation_data with wrong feature count",
        lambda c: _fit(c.m, c.X, c.y, validation_data=(c.X[:, :4], c.y)),
        ValueError,
        "validation_data X has 4 features per sample",
    ),
    # ----- predict / loss / gradients / set_weights
    Case("predict", "X 1-D", lambda c: c.m.predict(c.X[0]), ValueError, "X must be 2-D"),
    Case(
        "predict",
        "wrong feature count",
        lambda c: c.m.predict(c.X[:, :2]),
        ValueError,
        "X has 2 features per sample; the model expects 5",
    ),
    Case(
        "predict",
        "inf in X",
        lambda c: c.m.predict(np.full((2, 5), np.inf)),
        ValueError,
        "X contains NaN or infinite values",
    ),
    Case("predict", "empty X", lambda c: c.m.predict(np.zeros((0, 5))), ValueError, "X is empty"),
    Case("predict", "X of strings", lambda c: c.m.predict([["a"] * 5]), TypeError, "X must hold numbers"),
    Case(
        "loss",
        "X and Y of different lengths",
        lambda c: c.m.loss(c.X, c.y[:3]),
        ValueError,
        "X and Y have different lengths",
    ),
    Case("loss", "l2 NaN", lambda c: c.m.loss(c.X, c.y, l2=float("nan")), ValueError, "l2 must be finite"),
    Case(
        "gradients",
        "labels out of range",
        lambda c: c.m.gradients(c.X, c.y + 5),
        ValueError,
        r"Y class labels must lie in \[0, 2\]",
    ),
    Case("gradients", "unknown loss", lambda c: c.m.gradients(c.X, c.y, loss="l1"), ValueError, "loss must be one of"),
    Case(
        "set_weights",
        "not a list",
        lambda c: c.m.set_weights(None),
        TypeError,
        r"weights must be a list of \(W, b\) pairs",
    ),
    Case(
        "set_weights",
        "wrong layer count",
        lambda c: c.m.set_weights(c.m.get_weights()[:1]),
        ValueError,
        r"weights must hold 2 \(W, b\) pairs; got 1",
    ),
    Case(
        "set_weights",
        "wrong shape",
        lambda c: c.m.set_weights([(np.zeros((4, 4)), np.zeros(4)), (np.zeros((4, 3)), np.zeros(3))]),
        ValueError,
        r"weights\[0\] W must have shape \(5, 4\)",
    ),
    Case(
        "set_weights",
        "NaN weights",
        lambda c: c.m.set_weights([(np.full((5, 4), np.nan), np.zeros(4)), (np.zeros((4, 3)), np.zeros(3))]),
        ValueError,
        r"weights\[0\] contains NaN",
    ),
    Case(
        "set_weights",
        "string weights",
        lambda c: c.m.set_weights([(np.full((5, 4), "1"), np.zeros(4)), (np.zeros((4, 3)), np.zeros(3))]),
        TypeError,
        r"weights\[0\] W must hold numbers",
    ),
    # ----- data helpers
    Case("one_hot", "empty labels", lambda c: gm.one_hot(np.array([], dtype=int)), ValueError, "y is empty"),
    Case(
        "one_hot",
        "float labels",
        lambda c: gm.one_hot([0.5, 1.0]),
        ValueError,
        "y must be a 1-D array of integer labels",
    ),
    Case(
        "train_test_split",
        "X and y of different lengths",
        lambda c: gm.train_test_split(c.X, c.y[:5]),
        ValueError,
        "X and y have different lengths: 20 and 5",
    ),
    # ----- save / load
    Case(
        "save",
        "missing directory",
        lambda c: c.m.save(c.path("no/such/dir/m.npz")),
        FileNotFoundError,
        "directory .* does not exist",
    ),
    Case("load", "missing file", lambda c: gm.load(c.path("none.npz")), FileNotFoundError, "no model file at"),
    Case("load", "path not a path", lambda c: gm.load(3), TypeError, "path must be a file path"),
    Case("load", "unknown backend", lambda c: gm.load(c.good, backend="gpu"), ValueError, "backend must be one of"),
    Case("load", "a directory", lambda c: gm.load(c.tmp), ValueError, "not a readable gpumlp model file"),
    Case(
        "load",
        "empty file",
        lambda c: gm.load(c.write("empty.npz", b"")),
        ValueError,
        "not a readable gpumlp model file",
    ),
    Case(
        "load",
        "text file",
        lambda c: gm.load(c.write("text.npz", b"hello")),
        ValueError,
        "not a readable gpumlp model file",
    ),
    Case(
        "load",
        "truncated file",
        lambda c: gm.load(c.truncated()),
        ValueError,
        r"not a readable gpumlp model file \(truncated or corrupted\?\)",
    ),
    Case(
        "load",
        "flipped byte in the weights",
        lambda c: gm.load(c.flipped()),
        ValueError,
        "not a readable gpumlp model file",
    ),
    Case(
        "load",
        "damaged compressed .npz",
        lambda c: gm.load(c.compressed_damaged()),
        ValueError,
        "not a readable gpumlp model file",
    ),
    Case(
        "load",
        "a pickle (would run code)",
        lambda c: gm.load(c.evil_pickle_file()),
        ValueError,
        "not a readable gpumlp model file.*pickled",
    ),
    Case(
        "load",
        "object array (would unpickle)",
        lambda c: gm.load(c.evil_object_file()),
        ValueError,
        "not a readable gpumlp model file.*allow_pickle=False",
    ),
    Case("load", "a single .npy array", lambda c: gm.load(c.npy_file()), ValueError, r"single \.npy array"),
    Case("load", "a zip with no arrays", lambda c: gm.load(c.zip_without_arrays()), ValueError, "not a gpumlp model"),
    Case(
        "load",
        ".npz without gpumlp metadata",
        lambda c: gm.load(c.npz("plain.npz", W0=np.zeros(3))),
        ValueError,
        r"not a gpumlp model \(no metadata\)",
    ),
    Case(
        "load",
        "metadata not JSON",
        lambda c: gm.load(c.with_array("badjson.npz", "__meta__", np.frombuffer(b"{no", np.uint8))),
        ValueError,
        "corrupted gpumlp metadata",
    ),
    Case(
        "load",
        "another format",
        lambda c: gm.load(c.with_meta("other.npz", format="keras")),
        ValueError,
        r"not a gpumlp model file \(format 'keras'\)",
    ),
    Case(
        "load",
        "a newer file version",
        lambda c: gm.load(c.with_meta("v2.npz", version=2)),
        ValueError,
        "gpumlp file version 2; this gpumlp reads version 1",
    ),
    Case(
        "load",
        "metadata with a bad activation",
        lambda c: gm.load(c.with_meta("act.npz", hidden_activation="evil")),
        ValueError,
        "inconsistent gpumlp model: hidden_activation must be one of",
    ),
    Case(
        "load",
        "metadata with negative sizes",
        lambda c: gm.load(c.with_meta("sizes.npz", sizes=[5, -4, 3])),
        ValueError,
        r"inconsistent gpumlp model: sizes\[1\] must be > 0",
    ),
    Case(
        "load",
        "a weight array missing",
        lambda c: gm.load(c.with_array("miss.npz", "b1", None)),
        ValueError,
        "inconsistent gpumlp model: array 'b1' is missing",
    ),
    Case(
        "load",
        "a weight array of the wrong shape",
        lambda c: gm.load(c.with_array("shape.npz", "W0", np.zeros((2, 4)))),
        ValueError,
        r"inconsistent gpumlp model: W0 must have shape \(5, 4\) for sizes \[5, 4, 3\]; got \(2, 4\)",
    ),
    Case(
        "load",
        "NaN weights",
        lambda c: gm.load(c.with_array("nan.npz", "W0", np.full((5, 4), np.nan))),
        ValueError,
        r"inconsistent gpumlp model: weights\[0\] contains NaN",
    ),
    Case(
        "load",
        "metadata claiming huge layers (1 kB file)",
        lambda c: gm.load(c.with_meta("huge.npz", sizes=[20000, 20000, 2])),
        ValueError,
        r"inconsistent gpumlp model: W0 must have shape \(20000, 20000\) for sizes \[20000, 20000, 2\]; got \(5, 4\)",
    ),
    Case(
        "load",
        "metadata claiming impossible layers",
        lambda c: gm.load(c.with_meta("huge.npz", sizes=[10**6, 10**6, 2])),
        ValueError,
        r"inconsistent gpumlp model: W0 must have shape \(1000000, 1000000\)",
    ),
    Case(
        "load",
        "zip bomb: an extra 40 MB member",
        lambda c: gm.load(c.bomb()),
        ValueError,
        "inconsistent gpumlp model: it holds an array 'junk' that the format does not have",
    ),
    Case(
        "load",
        "metadata JSON nested 200,000 deep",
        lambda c: gm.load(c.deep_json()),
        ValueError,
        "corrupted gpumlp metadata: JSON nested too deeply",
    ),
    Case(
        "load_checkpoint",
        "NaN early-stopping best weights",
        lambda c: gm.load_checkpoint(c.checkpoint("nan.npz", **{"best.0": np.full((5, 4), np.nan, np.float32)})),
        ValueError,
        r"nan\.npz' holds an inconsistent gpumlp checkpoint: array 'best\.0' contains NaN",
    ),
    Case(
        "load_checkpoint",
        "negative epoch",
        lambda c: gm.load_checkpoint(c.checkpoint("neg.npz", lambda r: r.update(epoch=-1))),
        ValueError,
        r"neg\.npz' holds an inconsistent gpumlp checkpoint: field 'epoch' must be a whole number >= 0; got -1",
    ),
    Case(
        "load_checkpoint",
        "fractional epoch",
        lambda c: gm.load_checkpoint(c.checkpoint("frac.npz", lambda r: r.update(epoch=1.5))),
        ValueError,
        r"field 'epoch' must be a whole number >= 0; got 1\.5",
    ),
    Case(
        "load_checkpoint",
        "RNG state out of range",
        lambda c: gm.load_checkpoint(c.checkpoint("rng.npz", lambda r: r["rng"]["state"].update(state=-5))),
        ValueError,
        r"rng\.npz' holds an inconsistent gpumlp checkpoint: field 'rng\.state\.state' must hold whole numbers",
    ),
    Case(
        "fit",
        "seed=5 with a resume file that is no checkpoint",
        lambda c: _fit(c.m, c.X, c.y, seed=5, resume=c.good),
        ValueError,
        "not a training checkpoint",
    ),
    Case(
        "fit",
        "checkpoint a FIFO",
        lambda c: _fit(c.m, c.X, c.y, checkpoint=c.fifo()),
        ValueError,
        r"checkpoint=.*pipe\.npz' is a FIFO \(named pipe\), not a regular file",
    ),
    Case(
        "fit",
        "checkpoint file name too long",
        lambda c: _fit(c.m, c.X, c.y, checkpoint=c.path("a" * 300 + ".npz")),
        ValueError,
        "the file name is 304 bytes long; this file system allows",
    ),
    Case(
        "fit",
        "fit inside a callback, same model",
        lambda c: _fit(gm.MLP([5, 3], seed=0), c.X, c.y, callbacks=[lambda m, e, logs: _fit(m, c.X, c.y)]),
        RuntimeError,
        "fit is already running on this model",
    ),
    Case(
        "MLP",
        "layers too large for memory",
        lambda c: gm.MLP([10**6, 10**6, 10**6, 2]),
        ValueError,
        r"an MLP of sizes \[1000000, 1000000, 1000000, 2\] needs about 8e\+03 GB of memory, but only",
    ),
    Case("save", "onto a FIFO", lambda c: c.m.save(c.fifo()), ValueError, r"is a FIFO \(named pipe\), not a regular"),
    Case("save", "onto a read-only file", lambda c: c.m.save(c.read_only()), PermissionError, "is read-only"),
    Case("save", "onto a directory", lambda c: c.m.save(c.tmp), ValueError, "is a directory; expected a file path"),
    Case(
        "load",
        "string weights",
        lambda c: gm.load(c.with_array("str.npz", "W0", np.full((5, 4), "0.5"))),
        ValueError,
        "non-float arrays where weights belong: W0",
    ),
]


class _Sparse:
    """Duck-types a scipy.sparse matrix as targets (X may be sparse; Y may not)."""

    nnz = 0
    shape = (20, 5)

    def toarray(self) -> np.ndarray:
        return np.zeros(self.shape)


# ===== issue 12, items 10-14, 17, 18 (branch p2-hostile-cli): values beyond the model's dtype, and the
# `gpumlp` command's hostile input. A CLI case calls the command's function, whose CLIError is what
# `gpumlp` prints as one line with exit status 2.
def _cli(c: Context, *argv: str) -> Any:
    from gpumlp.cli import build_parser

    args, extra = build_parser().parse_known_args(list(argv))
    assert not extra, extra
    return args.func(args, io.StringIO())


def _csv(c: Context, name: str, text: str) -> str:
    with open(c.path(name), "w") as f:
        f.write(text)
    return c.path(name)


_ROWS = "".join(f"{i % 5}.5,{i % 3}.25,{i % 2}\n" for i in range(12))


def _cli_model(c: Context, **meta: Any) -> str:
    """A `gpumlp train` model of _ROWS (2 features, classes 0/1) with CLI metadata fields replaced."""
    _cli(c, "train", _csv(c, "rows.csv", "a,b,label\n" + _ROWS), "--epochs", "1", "--out", c.path("cli.npz"))
    with np.load(c.path("cli.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    stored = json.loads(arrays["__cli__"].tobytes())
    stored.update(meta)
    arrays["__cli__"] = encode_meta(stored)
    return c.npz("edited.npz", **arrays)


_OVER32 = lambda c: np.where(c.X > 1.5, 1e39, c.X.astype(np.float64))  # noqa: E731

CASES += [
    Case(
        "fit",
        "X beyond float32 (1e39) for a float32 model",
        lambda c: _fit(c.m, _OVER32(c), c.y),
        ValueError,
        "X holds the value 1e\\+39, which overflows the model's dtype float32",
    ),
    Case(
        "fit",
        "mse targets beyond float32 (1e300)",
        lambda c: _fit(c.mr, c.X, np.full((20, 2), 1e300)),
        ValueError,
        "Y holds the value 1e\\+300, which overflows the model's dtype float32",
    ),
    Case(
        "predict",
        "X beyond float32 (1e39)",
        lambda c: c.m.predict(_OVER32(c)),
        ValueError,
        "X holds the value 1e\\+39, which overflows the model's dtype float32",
    ),
    Case(
        "loss",
        "X beyond float32 (1e300)",
        lambda c: c.m.loss(np.full((2, 5), 1e300), [0, 1]),
        ValueError,
        "X holds the value 1e\\+300, which overflows the model's dtype float32",
    ),
    Case(
        "gpumlp train",
        "duplicate CSV header names",
        lambda c: _cli(c, "train", _csv(c, "d.csv", "a,a,label\n" + _ROWS)),
        CLIError,
        "names column 'a' twice",
    ),
    Case(
        "gpumlp train",
        "a ragged CSV row",
        lambda c: _cli(c, "train", _csv(c, "r.csv", "a,b,label\n1,2\n" + _ROWS)),
        CLIError,
        "line 2 has 2 cells, but the header has 3",
    ),
    Case(
        "gpumlp train",
        "an extra CSV cell",
        lambda c: _cli(c, "train", _csv(c, "e.csv", "a,b,label\n" + _ROWS + "1,2,0,9\n")),
        CLIError,
        "line 14 has 4 cells, but the header has 3 \\(an extra cell",
    ),
    Case(
        "gpumlp train",
        "target 'NA' in a 0/1 column",
        lambda c: _cli(c, "train", _csv(c, "n.csv", "a,b,label\n" + _ROWS + "1,2,NA\n")),
        CLIError,
        "line 14: the target 'label' \\(column 2\\) is the missing-value marker 'NA'",
    ),
    Case(
        "gpumlp train",
        "--target not among 5000 columns",
        lambda c: _cli(
            c,
            "train",
            _csv(c, "w.csv", ",".join(f"f{i}" for i in range(5000)) + "\n" + ",".join("1" * 5000) + "\n"),
            "--target",
            "y",
        ),
        CLIError,
        "columns are f0, .*, f9 \\.\\.\\. and 4990 more$",
    ),
    Case(
        "gpumlp train",
        "--hidden 10,,10",
        lambda c: _cli(c, "train", "xor", "--hidden", "10,,10"),
        CLIError,
        "argument --hidden: expected comma-separated layer widths",
    ),
    Case(
        "gpumlp train",
        "--hidden ''",
        lambda c: _cli(c, "train", "xor", "--hidden", ""),
        CLIError,
        "argument --hidden: expected comma-separated layer widths",
    ),
    Case(
        "gpumlp train",
        "--scale none with a feature of 1e39",
        lambda c: _cli(c, "train", _csv(c, "o.csv", "a,b,label\n" + _ROWS + "1e39,2,0\n"), "--scale", "none"),
        CLIError,
        "a feature holds the value 1e\\+39, which overflows the model's dtype float32",
    ),
    Case(
        "gpumlp predict",
        "a feature of 1e39 for a float32 model",
        lambda c: _cli(c, "predict", _cli_model(c), _csv(c, "p.csv", "a,b\n1e39,2\n")),
        CLIError,
        "a standardised feature holds the value .*overflows the model's dtype float32",
    ),
    Case(
        "gpumlp predict",
        "model metadata without 'task'",
        lambda c: _cli(c, "predict", _cli_model(c, task=None), c.path("rows.csv")),
        CLIError,
        "edited.npz: bad CLI metadata field 'task'",
    ),
    Case(
        "gpumlp predict",
        "model metadata with too few classes",
        lambda c: _cli(c, "predict", _cli_model(c, classes=[0]), c.path("rows.csv")),
        CLIError,
        "bad CLI metadata field 'classes': the network has 2 output\\(s\\)",
    ),
    Case(
        "gpumlp evaluate",
        "model metadata 'features' not a list",
        lambda c: _cli(c, "evaluate", _cli_model(c, features=3), c.path("rows.csv")),
        CLIError,
        "bad CLI metadata field 'features'",
    ),
]


def _sk_fit32(c: Context) -> Any:
    from gpumlp.sklearn import MLPClassifier

    return MLPClassifier(max_iter=1, dtype="float32").fit(_OVER32(c), c.y)


CASES += [
    Case(
        "MLPClassifier.fit",
        "X beyond float32 (1e39), dtype='float32'",
        _sk_fit32,
        ValueError,
        "X holds the value 1e\\+39, which overflows the model's dtype float32",
    ),
]
