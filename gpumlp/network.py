"""The multilayer perceptron: layers, batched forward and backward passes (seed 004).

Rows are samples. Layer l has W_l (n_{l-1}, n_l) and b_l (n_l,); with Z_0 = X:
    forward   A_l = Z_{l-1} W_l + b_l,   Z_l = g_l(A_l),            Ŷ = Z_L
    backward  D_L = ∂E/∂A_L,  dW_l = Z_{l-1}ᵀ D_l + λ W_l,  db_l = Σ_rows D_l,
              D_{l-1} = (D_l W_lᵀ) ⊙ g'_{l-1}(Z_{l-1})
All arrays live on the model's backend; host arrays cross only at the edges.

The model never imports the training code: :meth:`MLP.fit` (from :class:`~gpumlp.trainable.Trainable`)
runs the loop that ``gpumlp/__init__.py`` installs, :func:`gpumlp.training.fit`, which drives any model
through its methods and the :class:`~gpumlp.workspace.Workspace`. Files go through
:mod:`gpumlp.modelfile`, which knows arrays and metadata, not models.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import evaluation
from .activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from .backends import Backend, backend_of, get_backend, is_sparse, to_numpy
from .initializers import init_weights
from .losses import AUTO_LOSS, LOSSES, PROBABILITY_OUTPUTS
from .memory import check_fits, model_bytes
from .modelfile import read_npz, write_npz
from .trainable import Trainable
from .validation import check_choice, check_inputs, check_number, check_sizes, check_targets, check_weights
from .workspace import Workspace

DTYPES = ("float32", "float64")
MAX_WORKSPACES = 4  # batch shapes whose buffers a model keeps (an epoch uses two: full and remainder)


class Layer:
    """One fully connected layer: weights W (n_in, n_out) and bias b (n_out,)."""

    __slots__ = ("W", "b")

    def __init__(self, W: Any, b: Any) -> None:
        self.W = W
        self.b = b

    def __repr__(self) -> str:
        return f"Layer(W{tuple(self.W.shape)}, b{tuple(self.b.shape)})"


class MLP(Trainable):
    """A multilayer perceptron trained by minibatch gradient descent on NumPy or CuPy.

    Weights come from ``numpy.random.default_rng(seed)`` on the host (He normal for relu,
    Glorot uniform otherwise; zero biases), so every backend starts from the same numbers.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, inputs first: ``MLP([784, 256, 10])`` has one hidden layer of 256.
    hidden_activation : {"relu", "tanh", "sigmoid", "identity"}
        g_l of every hidden layer.
    output_activation : {"softmax", "sigmoid", "identity"}
        g_L of the output layer (softmax needs at least 2 outputs).
    dtype : {"float32", "float64"}
        Floating type of the weights and of every computation.
    backend : str or Backend
        "auto" (CuPy when a GPU is usable, else NumPy), "numpy", "cupy", "array_api_strict"
        or a :class:`~gpumlp.backends.Backend`.
    seed : int or None
        Seed of the weight initialisation and of the shuffling RNG ``model.rng``.

    Raises
    ------
    TypeError, ValueError
        For an argument of the wrong type or value; the message names it.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        hidden_activation: str = "relu",
        output_activation: str = "softmax",
        dtype: str = "float32",
        backend: str | Backend = "auto",
        seed: int | None = 0,
    ) -> None:
        self._configure(sizes, hidden_activation, output_activation, dtype, backend, seed)
        host = (
            (init_weights(self.rng, n_in, n_out, act, self.dtype), np.zeros(n_out, dtype=self.dtype))
            for n_in, n_out, act in zip(self.sizes[:-1], self.sizes[1:], self.activations)
        )
        self.layers = [Layer(*(self.to_device(a) for a in wb)) for wb in host]

    def _configure(self, sizes: Any, hidden: str, output: str, dtype: Any, backend: Any, seed: Any) -> None:
        """Check and set everything but the weights; refuse a model too large for the memory available."""
        self.sizes = check_sizes(sizes)
        self.hidden_activation = check_choice(hidden, "hidden_activation", HIDDEN_ACTIVATIONS)
        self.output_activation = check_choice(output, "output_activation", OUTPUT_ACTIVATIONS)
        if output == "softmax" and self.sizes[-1] < 2:
            raise ValueError("output_activation='softmax' needs at least 2 outputs; use 'sigmoid' for one output")
        name = str(np.dtype(dtype)) if isinstance(dtype, (type, np.dtype)) else dtype
        self.dtype = check_choice(name, "dtype", DTYPES)
        self.seed = None if seed is None else check_number(seed, "seed", integer=True, allow_zero=True)
        backend = get_backend(backend)
        check_fits(
            model_bytes(self.sizes, np.dtype(self.dtype).itemsize), backend, f"an MLP of sizes {list(self.sizes)}"
        )
        self.activations = [self.hidden_activation] * (len(self.sizes) - 2) + [self.output_activation]
        self.rng = np.random.default_rng(self.seed)
        self.history: dict[str, list[float]] = {}
        self._set_backend(backend)

    # ----- backend and parameters -----------------------------------------------------
    def _set_backend(self, backend: Backend) -> None:
        self.backend = backend
        self.ops = backend.ops
        self.xp_dtype = backend.dtype(self.dtype)  # the dtype object of the backend's array module
        self._workspaces: dict[int, Workspace] = {}

    def to_device(self, a: Any) -> Any:
        """``a`` (host or any device) as an array of this model's backend and dtype."""
        if is_sparse(a):
            return self.backend.sparse_asarray(a, self.xp_dtype)
        owner = backend_of(a)
        if owner is not None and owner.name != self.backend.name:
            a = to_numpy(a)
        return self.backend.asarray(a, dtype=self.xp_dtype)

    @property
    def params(self) -> list[Any]:
        """Flat parameter list [W_1, b_1, W_2, b_2, ...] (the optimizer's view)."""
        return [p for layer in self.layers for p in (layer.W, layer.b)]

    @property
    def n_features(self) -> int:
        return self.sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.sizes[-1]

    def get_weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """NumPy copies of every layer's (W, b): W of shape (n_{l-1}, n_l), b of shape (n_l,), l = 1 … L."""
        return [(np.array(to_numpy(l.W)), np.array(to_numpy(l.b))) for l in self.layers]

    def set_weights(self, weights: Sequence[tuple[Any, Any]]) -> None:
        """Replace every layer's weights, copying into the existing arrays (they never move).

        Parameters
        ----------
        weights : sequence of (W, b)
            One pair per layer, shaped as :meth:`get_weights` returns them, any array kind.

        Raises
        ------
        TypeError, ValueError
            On a wrong count, a wrong shape, or a NaN or infinite value.
        """
        if not isinstance(weights, Sequence) or isinstance(weights, (str, bytes)):
            raise TypeError(f"weights must be a list of (W, b) pairs; got {type(weights).__name__}")
        if len(weights) != len(self.layers):
            raise ValueError(f"weights must hold {len(self.layers)} (W, b) pairs; got {len(weights)}")
        for i, pair in enumerate(weights):
            if not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(f"weights[{i}] must be a (W, b) pair; got {type(pair).__name__}")
        for layer, (W, b) in zip(self.layers, check_weights([tuple(p) for p in weights], self.sizes)):
            self.ops.assign(layer.W, self.to_device(W))  # every pair was checked before any is copied
            self.ops.assign(layer.b, self.to_device(b))

    def snapshot(self) -> list[Any]:
        """Device copies of the parameters [W_1, b_1, ...] (for :meth:`restore`)."""
        return [self.ops.copy(p) for p in self.params]

    def restore(self, snapshot: list[Any]) -> None:
        """Copy a :meth:`snapshot` back into the parameters, which keep their addresses."""
        for p, s in zip(self.params, snapshot):
            self.ops.assign(p, s)

    def to(self, backend: str | Backend) -> MLP:
        """Move the weights to ``backend`` (a name or Backend, as for the constructor) in place; returns the model."""
        target = get_backend(backend)
        check_fits(
            model_bytes(self.sizes, np.dtype(self.dtype).itemsize), target, f"moving an MLP of sizes {self.sizes}"
        )
        host = self.get_weights()
        self._set_backend(target)
        self.layers = [Layer(self.to_device(W), self.to_device(b)) for W, b in host]
        return self

    # ----- the batched math -----------------------------------------------------------
    def resolve_loss(self, loss: str) -> str:
        """The loss name for ``loss`` ("auto" picks the one paired with the output activation)."""
        if loss == "auto":
            return AUTO_LOSS.get(self.output_activation, "mse")
        check_choice(loss, "loss", ("auto",) + tuple(LOSSES))
        if loss != "mse" and self.output_activation not in PROBABILITY_OUTPUTS:
            raise ValueError(
                f"loss={loss!r} needs outputs in (0, 1); output_activation={self.output_activation!r} "
                f"does not give them: use output_activation in {PROBABILITY_OUTPUTS} or loss='mse'"
            )
        return loss

    def workspace(self, rows: int, grads: bool = True, sparse_input: bool = False) -> Workspace:
        """The (cached) buffers for a batch of ``rows`` samples (with full gradients unless
        ``grads`` is False); ``sparse_input``: Z[0] is the batch's sparse rows, not a buffer."""
        key: Any = (rows, "sparse") if sparse_input else rows
        ws = self._workspaces.get(key)
        if ws is None:
            if len(self._workspaces) >= MAX_WORKSPACES:  # drop the oldest: fits on ever new sizes must not pile up
                del self._workspaces[next(iter(self._workspaces))]
            ws = self._workspaces[key] = Workspace.allocate(self, rows, grads)
            if sparse_input:
                ws.Z[0] = None
        elif grads and not ws.grads:
            ws.allocate_grads(self)
        return ws

    def forward_into(self, ws: Workspace) -> Any:
        """Forward pass of the batch in ws.Z[0], keeping every Z_l; returns Ŷ = Z_L. A sparse
        Z[0] (CSR) makes the first layer a sparse × dense GEMM."""
        Z, ops = ws.Z, self.ops
        for l, (layer, act) in enumerate(zip(self.layers, self.activations), 1):
            if l == 1 and is_sparse(Z[0]):
                Z[1] = ops.sparse_affine_activate(Z[0], layer.W, layer.b, act)
                continue
            Z[l] = ops.affine_activate(Z[l - 1], layer.W, layer.b, act, out=Z[l])
        return Z[-1]

    def backward_into(self, ws: Workspace, T: Any, loss: str, scale: float, weights: Any = None) -> None:
        """Backward pass after :meth:`forward_into`: the gradients of scale·Σ_n w_n ℓ_n into ws.grads
        (``weights`` w of shape (rows,) on the device, or None for w_n = 1)."""
        Z, D, ops = ws.Z, ws.D, self.ops
        L = len(self.layers)
        D[L] = ops.output_delta(self.output_activation, loss, Z[L], T, scale, out=D[L])
        if weights is not None:
            D[L] = ops.scale_rows(D[L], weights)
        for l in range(L, 0, -1):
            sparse = l == 1 and is_sparse(Z[0])  # dW_1 = Sᵀ D_1 for a sparse batch S
            dW = ops.sparse_gemm_tn(Z[0], D[1], ws.dW(1)) if sparse else ops.gemm(Z[l - 1], D[l], ws.dW(l), True)
            ws.grads[l - 1] = (dW, ops.sum_rows(D[l], out=ws.db(l)))
            if l > 1:
                D[l - 1] = ops.gemm(D[l], self.layers[l - 1].W, out=D[l - 1], trans_b=True)
                D[l - 1] = ops.backprop_activation(self.activations[l - 2], Z[l - 1], D[l - 1])

    def add_l2(self, ws: Workspace, l2: float) -> None:
        """dW_l += λ W_l for every layer's gradient in ``ws`` (biases are not regularised)."""
        if l2:
            for i, layer in enumerate(self.layers):
                dW, db = ws.grads[i]
                ws.grads[i] = (self.ops.add_scaled(dW, l2, layer.W), db)

    def l2_penalty(self, l2: float) -> float:
        """(λ/2) Σ_l ‖W_l‖²_F as a float."""
        if not l2:
            return 0.0
        return 0.5 * l2 * sum(float(self.ops.sq_norm(layer.W)) for layer in self.layers)

    # ----- public API -----------------------------------------------------------------
    def check_data(self, X: Any, Y: Any, loss: str, names: tuple[str, str] = ("X", "Y")) -> tuple[Any, Any, str]:
        """Validated (X, T, loss) on this model's backend: T the targets as (n, n_outputs)
        (class labels one-hot), ``loss`` resolved ("auto" named); ``names`` go in the messages."""
        X = check_inputs(X, self.n_features, names[0], self.dtype)
        loss = self.resolve_loss(loss)
        T = check_targets(Y, X.shape[0], loss, self.n_outputs, names[1], self.dtype)
        return self.to_device(X), self.to_device(T), loss

    def forward(self, X: Any) -> Any:
        """Network output Ŷ (n_samples, n_outputs), on the model's backend, for inputs X (n_samples, n_features);
        evaluated in chunks of rows (:mod:`gpumlp.evaluation`)."""
        return evaluation.forward(self, check_inputs(X, self.n_features, dtype=self.dtype))

    def predict(self, X: Any) -> Any:
        """Network output Ŷ (n_samples, n_outputs) for X (n_samples, n_features), returned as the same
        kind of array as X (NumPy in, NumPy out): probabilities for softmax/sigmoid outputs; evaluated
        in chunks of rows (:mod:`gpumlp.evaluation`)."""
        return evaluation.predict(self, check_inputs(X, self.n_features, dtype=self.dtype))

    def loss(self, X: Any, Y: Any, loss: str = "auto", l2: float = 0.0) -> float:
        """Mean loss E = (1/n) Σ_n ℓ(Ŷ_n, T_n) + (λ/2) Σ_l ‖W_l‖².

        Evaluated in chunks of rows (:mod:`gpumlp.evaluation`), their sums added in float64.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
        Y : array of shape (n_samples,) or (n_samples, n_outputs)
            Targets: class labels or one-hot rows for cross_entropy, values otherwise.
        loss : {"auto", "mse", "cross_entropy", "binary_cross_entropy"}
            "auto" pairs softmax with cross_entropy, sigmoid with binary_cross_entropy, identity with mse.
        l2 : float
            λ of the L2 term (0: none).
        """
        l2 = check_number(l2, "l2", allow_zero=True)
        X = check_inputs(X, self.n_features, dtype=self.dtype)
        loss = self.resolve_loss(loss)
        T = check_targets(Y, X.shape[0], loss, self.n_outputs, dtype=self.dtype)
        return evaluation.loss_sum(self, X, T, loss) / X.shape[0] + self.l2_penalty(l2)

    def gradients(self, X: Any, Y: Any, loss: str = "auto", l2: float = 0.0) -> list[tuple[Any, Any]]:
        """∂E/∂W_l and ∂E/∂b_l of the mean loss :meth:`loss` for every layer.

        Returns a list of (dW, db), arrays of the model's backend shaped like each layer's (W, b);
        X, Y, loss and l2 are as for :meth:`loss`.
        """
        l2 = check_number(l2, "l2", allow_zero=True)
        X, T, loss = self.check_data(X, Y, loss)
        ws = Workspace.unbuffered(self, X)
        self.forward_into(ws)
        self.backward_into(ws, T, loss, 1.0 / X.shape[0])
        self.add_l2(ws, l2)
        return [(self.ops.copy(dW), self.ops.copy(db)) for dW, db in ws.grads]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to ``path`` (.npz weights + JSON metadata, no pickle) atomically; see :func:`save`."""
        save(self, path)

    @classmethod
    def from_arrays(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], backend: str | Backend = "auto") -> MLP:
        """The model that :func:`save` stored as (metadata, arrays), on ``backend``.

        Raises
        ------
        KeyError, TypeError, ValueError
            When ``meta`` or ``arrays`` do not describe a consistent model.
        """
        model = cls.__new__(cls)
        model._configure(
            meta["sizes"], meta["hidden_activation"], meta["output_activation"], meta["dtype"], backend, meta["seed"]
        )
        pairs = check_weights([(arrays[f"W{i}"], arrays[f"b{i}"]) for i in range(len(model.sizes) - 1)], model.sizes)
        model.layers = [Layer(model.to_device(W), model.to_device(b)) for W, b in pairs]
        return model

    def __repr__(self) -> str:
        return (
            f"MLP({list(self.sizes)}, hidden_activation={self.hidden_activation!r}, "
            f"output_activation={self.output_activation!r}, dtype={self.dtype!r}, backend={self.backend.name!r})"
        )


def model_meta(model: MLP) -> dict[str, Any]:
    """What it takes to rebuild ``model`` besides its weights (sizes, activations, dtype, seed)."""
    return {
        "sizes": list(model.sizes),
        "hidden_activation": model.hidden_activation,
        "output_activation": model.output_activation,
        "dtype": model.dtype,
        "seed": model.seed,
    }


def save(model: MLP, path: str | os.PathLike[str], extra: dict[str, np.ndarray] | None = None) -> None:
    """Write ``model`` to ``path`` atomically: its weights as W0, b0, W1, ... and :func:`model_meta`.

    Parameters
    ----------
    model : MLP
    path : str or os.PathLike
        The file; its directory must exist (FileNotFoundError otherwise).
    extra : dict of str to numpy.ndarray, optional
        Further arrays stored beside the weights (checkpoints and the CLI add theirs).
    """
    arrays: dict[str, np.ndarray] = {}
    for i, (W, b) in enumerate(model.get_weights()):
        arrays[f"W{i}"], arrays[f"b{i}"] = W, b
    write_npz(path, model_meta(model), {**arrays, **(extra or {})})


def load(path: str | os.PathLike[str], backend: str | Backend = "auto") -> MLP:
    """Read a model written by :meth:`MLP.save` (or :func:`save`) onto ``backend``.

    Parameters
    ----------
    path : str or os.PathLike
    backend : str or Backend
        As for :class:`MLP`.

    Raises
    ------
    FileNotFoundError
        When there is no file at ``path``.
    ValueError
        When the file is not a readable, consistent gpumlp model file (it is never unpickled).
    """
    backend = get_backend(backend)
    meta, arrays = read_npz(path)
    if "__cli__" in arrays:  # the preprocessing of a `gpumlp train` file: gpumlp.pipeline applies it
        warnings.warn(
            f"{os.fspath(path)!r} was written by `gpumlp train`: this bare MLP expects standardised features and "
            "returns output indices, not labels; gpumlp.load(path) returns a gpumlp.Pipeline that applies the "
            "file's standardisation and labels",
            UserWarning,
            stacklevel=2,
        )
    try:
        return MLP.from_arrays(meta, arrays, backend)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{os.fspath(path)!r} holds an inconsistent gpumlp model: {exc}") from None
