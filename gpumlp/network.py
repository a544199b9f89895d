"""The multilayer perceptron: layers, batched forward and backward passes (seed 004).

Rows are samples. Layer l has W_l (n_{l-1}, n_l) and b_l (n_l,); with Z_0 = X:
    forward   A_l = Z_{l-1} W_l + b_l,   Z_l = g_l(A_l),            Ŷ = Z_L
    backward  D_L = ∂E/∂A_L,  dW_l = Z_{l-1}ᵀ D_l + λ W_l,  db_l = Σ_rows D_l,
              D_{l-1} = (D_l W_lᵀ) ⊙ g'_{l-1}(Z_{l-1})
All arrays live on the model's backend; host arrays cross only at the edges.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from .backend import Backend, backend_of, get_backend, to_numpy
from .losses import AUTO_LOSS, LOSSES, PROBABILITY_OUTPUTS
from .validation import as_array, check_choice, check_inputs, check_number, check_sizes, check_targets

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


class Workspace:
    """Buffers for one batch: Z[l] layer outputs (Z[0] the input), D[l] deltas ∂E/∂A_l,
    T the target batch and grads the flat list [dW_1, db_1, dW_2, db_2, ...].

    :meth:`allocate` makes them once per batch shape for training, where every step of that
    shape reuses them; :meth:`unbuffered` wraps one input and lets each op allocate.
    """

    def __init__(self, Z: list[Any], D: list[Any], T: Any, grads: list[Any]) -> None:
        self.Z, self.D, self.T, self.grads = Z, D, T, grads  # grads == []: not allocated
        self.flat_grads: Any = None  # set by allocate_grads: grads are views into this 1-D buffer
        self.grad_views = tuple(grads)
        self.update_plan: list[list[tuple[slice | None, Any]]] | None = None  # see MLP.backward_update
        self.bias_grads: list[Any] | None = None

    @classmethod
    def allocate(cls, model: "MLP", rows: int, grads: bool = True) -> "Workspace":
        """Buffers for batches of ``rows``; ``grads=False`` leaves out the full gradients
        (the fused :meth:`MLP.backward_update` never needs them)."""
        alloc, dtype = model.ops.alloc, model._xp_dtype
        ws = cls(
            [alloc((rows, n), dtype) for n in model.sizes],
            [None] + [alloc((rows, n), dtype) for n in model.sizes[1:]],
            alloc((rows, model.sizes[-1]), dtype),
            [],
        )
        if grads:
            ws.allocate_grads(model)
        return ws

    def allocate_grads(self, model: "MLP") -> None:
        """The full gradient buffers [dW_1, db_1, ...], views into one flat buffer."""
        grads, flat = _views_of_one_buffer(model.ops, [tuple(p.shape) for p in model.params], model._xp_dtype)
        self.grads, self.flat_grads, self.grad_views = grads, flat, tuple(grads)

    def allocate_update_plan(self, model: "MLP") -> None:
        """For each layer, its weight-gradient blocks as (rows, buffer) (rows None: the whole
        matrix). The blocks of every layer share one buffer."""
        ops, dtype = model.ops, model._xp_dtype
        itemsize = np.dtype(model.dtype).itemsize
        pairs = list(zip(model.sizes[:-1], model.sizes[1:]))
        blocks = [[(r, n_in if r is None else r.stop - r.start) for r in ops.weight_blocks(n_in, n_out, itemsize)]
                  for n_in, n_out in pairs]
        flat = ops.alloc((max(m * n_out for rows, (_, n_out) in zip(blocks, pairs) for _, m in rows),), dtype)
        self.update_plan = [[(r, ops.xp.reshape(flat[:m * n_out], (m, n_out))) for r, m in rows]
                            for rows, (_, n_out) in zip(blocks, pairs)]

    def pack_grads(self, ops: Any) -> Any:
        """Every gradient in the one contiguous buffer (for a single allreduce), returned.

        ``grads`` are views into it, so this costs nothing unless an Ops returned a new
        array instead of writing ``out=`` (the reference Ops): that one is copied in.
        """
        for i, (view, g) in enumerate(zip(self.grad_views, self.grads)):
            if g is not view:
                ops.assign(view, g)
                self.grads[i] = view
        return self.flat_grads

    @classmethod
    def unbuffered(cls, model: "MLP", X: Any) -> "Workspace":
        n = len(model.layers)
        return cls([X] + [None] * n, [None] * (n + 1), None, [None] * (2 * n))


def _views_of_one_buffer(ops: Any, shapes: list[tuple[int, ...]], dtype: Any, align: int = 64) -> tuple[list[Any], Any]:
    """Zeroed arrays of ``shapes`` that are views into one 1-D buffer, each starting on a
    multiple of ``align`` elements; returns (views, buffer)."""
    sizes = [math.prod(s) for s in shapes]
    starts = [0]
    for n in sizes:
        starts.append(starts[-1] + -(-n // align) * align)
    flat = ops.alloc((starts[-1],), dtype)
    return [ops.xp.reshape(flat[a:a + n], s) for a, n, s in zip(starts, sizes, shapes)], flat


def _init_weights(rng: np.random.Generator, fan_in: int, fan_out: int, activation: str) -> np.ndarray:
    """He normal for relu, Glorot uniform otherwise (float64 on the host)."""
    if activation == "relu":
        return rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out))


class MLP:
    """A multilayer perceptron trained by minibatch gradient descent on NumPy or CuPy.

    ``sizes`` lists the layer widths, inputs first: ``MLP([784, 256, 10])`` has one hidden
    layer. Weights come from ``numpy.random.default_rng(seed)`` on the host, so every backend
    starts from the same numbers.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        hidden_activation: str = "relu",
        output_activation: str = "softmax",
        dtype: str = "float32",
        backend: "str | Backend" = "auto",
        seed: int | None = 0,
    ) -> None:
        self.sizes = check_sizes(sizes)
        self.hidden_activation = check_choice(hidden_activation, "hidden_activation", HIDDEN_ACTIVATIONS)
        self.output_activation = check_choice(output_activation, "output_activation", OUTPUT_ACTIVATIONS)
        if output_activation == "softmax" and self.sizes[-1] < 2:
            raise ValueError("output_activation='softmax' needs at least 2 outputs; use 'sigmoid' for one output")
        self.dtype = check_choice(str(np.dtype(dtype)) if isinstance(dtype, (type, np.dtype)) else dtype, "dtype", DTYPES)
        if seed is not None:
            check_number(seed, "seed", integer=True, allow_zero=True)
        self.seed = seed
        self.activations = [self.hidden_activation] * (len(self.sizes) - 2) + [self.output_activation]
        self.rng = np.random.default_rng(seed)
        self.history: dict[str, list[float]] = {}
        self._set_backend(get_backend(backend))
        host = [
            (_init_weights(self.rng, n_in, n_out, act), np.zeros(n_out))
            for n_in, n_out, act in zip(self.sizes[:-1], self.sizes[1:], self.activations)
        ]
        self.layers = [Layer(*(self._device(a) for a in wb)) for wb in host]

    # ----- backend and parameters -----------------------------------------------------
    def _set_backend(self, backend: Backend) -> None:
        self.backend = backend
        self.ops = backend.ops
        self._xp_dtype = backend.dtype(self.dtype)
        self._workspaces: dict[int, Workspace] = {}

    def _device(self, a: Any) -> Any:
        """``a`` (host or any device) as an array of this model's backend and dtype."""
        owner = backend_of(a)
        if owner is not None and owner.name != self.backend.name:
            a = to_numpy(a)
        return self.backend.asarray(a, dtype=self._xp_dtype)

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
        """Copies of every layer's (W, b) as NumPy arrays."""
        return [(np.array(to_numpy(l.W)), np.array(to_numpy(l.b))) for l in self.layers]

    def set_weights(self, weights: Sequence[tuple[Any, Any]]) -> None:
        """Replace every layer's (W, b); shapes must match, values must be finite."""
        if not isinstance(weights, Sequence) or isinstance(weights, (str, bytes)):
            raise TypeError(f"weights must be a list of (W, b) pairs; got {type(weights).__name__}")
        if len(weights) != len(self.layers):
            raise ValueError(f"weights must hold {len(self.layers)} (W, b) pairs; got {len(weights)}")
        new = []
        for i, (pair, layer) in enumerate(zip(weights, self.layers)):
            if not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(f"weights[{i}] must be a (W, b) pair; got {type(pair).__name__}")
            for a, ref, what in ((pair[0], layer.W, "W"), (pair[1], layer.b, "b")):
                shape = tuple(as_array(a, f"weights[{i}] {what}").shape)
                if shape != tuple(ref.shape):
                    raise ValueError(f"weights[{i}] {what} must have shape {tuple(ref.shape)}; got {shape}")
            new.append(Layer(self._device(pair[0]), self._device(pair[1])))
        for i, layer in enumerate(new):
            if not (bool(self.ops.all_finite(layer.W)) and bool(self.ops.all_finite(layer.b))):
                raise ValueError(f"weights[{i}] contains NaN or infinite values")
        for layer, fresh in zip(self.layers, new):  # copy into the existing arrays: they never move
            self.ops.assign(layer.W, fresh.W)
            self.ops.assign(layer.b, fresh.b)

    def snapshot(self) -> list[Any]:
        """Device copies of the parameters [W_1, b_1, ...] (for :meth:`restore`)."""
        return [self.ops.copy(p) for p in self.params]

    def restore(self, snapshot: list[Any]) -> None:
        """Copy a :meth:`snapshot` back into the parameters, which keep their addresses."""
        for p, s in zip(self.params, snapshot):
            self.ops.assign(p, s)

    def to(self, backend: "str | Backend") -> "MLP":
        """Move the weights to another backend (in place) and return the model."""
        target = get_backend(backend)
        host = self.get_weights()
        self._set_backend(target)
        self.layers = [Layer(self._device(W), self._device(b)) for W, b in host]
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

    def workspace(self, rows: int, grads: bool = True) -> Workspace:
        """The (cached) buffers for a batch of ``rows`` samples (with full gradients unless
        ``grads`` is False)."""
        ws = self._workspaces.get(rows)
        if ws is None:
            if len(self._workspaces) >= MAX_WORKSPACES:  # drop the oldest: fits on ever new sizes must not pile up
                del self._workspaces[next(iter(self._workspaces))]
            ws = self._workspaces[rows] = Workspace.allocate(self, rows, grads)
        elif grads and not ws.grads:
            ws.allocate_grads(self)
        return ws

    def forward_into(self, ws: Workspace) -> Any:
        """Forward pass of the batch in ws.Z[0], keeping every Z_l; returns Ŷ = Z_L."""
        Z, ops = ws.Z, self.ops
        for l, (layer, act) in enumerate(zip(self.layers, self.activations), 1):
            Z[l] = ops.affine_activate(Z[l - 1], layer.W, layer.b, act, out=Z[l])
        return Z[-1]

    def backward_into(self, ws: Workspace, T: Any, loss: str, scale: float) -> list[Any]:
        """Backward pass after :meth:`forward_into`: data gradients of scale·Σ_n ℓ_n into ws.grads."""
        Z, D, G, ops = ws.Z, ws.D, ws.grads, self.ops
        L = len(self.layers)
        D[L] = ops.output_delta(self.output_activation, loss, Z[L], T, scale, out=D[L])
        for l in range(L, 0, -1):
            G[2 * l - 2] = ops.gemm(Z[l - 1], D[l], out=G[2 * l - 2], trans_a=True)
            G[2 * l - 1] = ops.sum_rows(D[l], out=G[2 * l - 1])
            if l > 1:
                D[l - 1] = ops.gemm(D[l], self.layers[l - 1].W, out=D[l - 1], trans_b=True)
                D[l - 1] = ops.backprop_activation(self.activations[l - 2], Z[l - 1], D[l - 1])
        return G

    def backward_update(self, ws: Workspace, T: Any, loss: str, scale: float, l2: float, optimizer: Any) -> None:
        """One optimizer step fused into the backward pass (the fast path; Ops.fused_update).

        The same math as backward_into + add_l2 + optimizer.step, in another order: each
        dW_l is made in blocks of rows (Ops.weight_blocks) that are applied as soon as they
        are made, so no full gradient is stored and each block is still in cache when the
        update reads it. D_{l-1} is taken before W_l changes; each Z_{l-1} (l > 1) is spent
        as scratch by the last use of it, the activation backward. When the update is
        p ← p + c·∇E (plain SGD, c = −η), c rides along in the deltas (they are linear in
        D_L), and W_l ← (1 + cλ)W_l + Z_{l-1}ᵀ D_l is one GEMM where the Ops has a GEMM
        with β (Ops.gemm_update), else each block is added as it comes.
        """
        Z, D, ops, layers = ws.Z, ws.D, self.ops, self.layers
        if ws.bias_grads is None:
            ws.bias_grads = [ops.alloc((n,), self._xp_dtype) for n in self.sizes[1:]]
        L = len(layers)
        c = optimizer.prescale
        update = optimizer.update if c is None else optimizer.apply_prescaled
        if c is not None:
            scale, l2 = scale * c, l2 * c
        optimizer.begin_step()
        D[L] = ops.output_delta(self.output_activation, loss, Z[L], T, scale, out=D[L])
        for l in range(L, 0, -1):
            W = layers[l - 1].W
            if l > 1:
                D[l - 1] = ops.gemm(D[l], W, out=D[l - 1], trans_b=True)
            if c is None or not ops.gemm_update(W, Z[l - 1], D[l], 1.0, 1.0 + l2, trans_a=True):
                if ws.update_plan is None:
                    ws.allocate_update_plan(self)
                for rows, buf in ws.update_plan[l - 1]:  # dW_l = Z_{l-1}ᵀ D_l (+ λ W_l), block by block
                    Zb, Wb = (Z[l - 1], W) if rows is None else (Z[l - 1][:, rows], W[rows])
                    g = ops.gemm(Zb, D[l], out=buf, trans_a=True)
                    if l2:
                        g = ops.add_scaled(g, l2, Wb)
                    update(2 * l - 2, Wb, g, rows)
            update(2 * l - 1, layers[l - 1].b, ops.sum_rows(D[l], out=ws.bias_grads[l - 1]))
            if l > 1:
                D[l - 1] = ops.backprop_activation(self.activations[l - 2], Z[l - 1], D[l - 1], consume_z=True)

    def add_l2(self, grads: list[Any], l2: float) -> None:
        """dW_l += λ W_l for every weight matrix (biases are not regularised)."""
        if l2:
            for i, layer in enumerate(self.layers):
                grads[2 * i] = self.ops.add_scaled(grads[2 * i], l2, layer.W)

    def l2_penalty(self, l2: float) -> float:
        """(λ/2) Σ_l ‖W_l‖²_F as a float."""
        if not l2:
            return 0.0
        return 0.5 * l2 * sum(float(self.ops.sq_norm(layer.W)) for layer in self.layers)

    # ----- public API -----------------------------------------------------------------
    def _check_data(self, X: Any, Y: Any, loss: str, names: tuple[str, str] = ("X", "Y")) -> tuple[Any, Any, str]:
        X = check_inputs(X, self.n_features, names[0])
        loss = self.resolve_loss(loss)
        T = check_targets(Y, X.shape[0], loss, self.n_outputs, names[1])
        return self._device(X), self._device(T), loss

    def forward(self, X: Any) -> Any:
        """Network output Ŷ for inputs X (n_samples, n_features), on the model's backend."""
        X = self._device(check_inputs(X, self.n_features))
        return self.forward_into(Workspace.unbuffered(self, X))

    def predict(self, X: Any) -> Any:
        """Network output for X, returned as the same kind of array as X (NumPy in, NumPy out)."""
        Y = self.forward(X)
        owner = backend_of(X)
        if owner is None or owner.name == "numpy":
            return self.backend.to_numpy(Y)
        return Y if owner.name == self.backend.name else owner.asarray(self.backend.to_numpy(Y))

    def loss(self, X: Any, Y: Any, loss: str = "auto", l2: float = 0.0) -> float:
        """Mean loss E over the samples, plus (λ/2) Σ ‖W‖² when ``l2`` > 0."""
        l2 = check_number(l2, "l2", allow_zero=True)
        X, T, loss = self._check_data(X, Y, loss)
        Yhat = self.forward_into(Workspace.unbuffered(self, X))
        return float(self.ops.loss_sum(loss, Yhat, T)) / X.shape[0] + self.l2_penalty(l2)

    def gradients(self, X: Any, Y: Any, loss: str = "auto", l2: float = 0.0) -> list[tuple[Any, Any]]:
        """∂E/∂W_l and ∂E/∂b_l for every layer, as (dW, db) arrays of the model's backend."""
        l2 = check_number(l2, "l2", allow_zero=True)
        X, T, loss = self._check_data(X, Y, loss)
        ws = Workspace.unbuffered(self, X)
        self.forward_into(ws)
        G = self.backward_into(ws, T, loss, 1.0 / X.shape[0])
        self.add_l2(G, l2)
        return [(self.ops.copy(G[2 * i]), self.ops.copy(G[2 * i + 1])) for i in range(len(self.layers))]

    def fit(self, X: Any, Y: Any, **kwargs: Any) -> dict[str, list[float]]:
        """Train by minibatch gradient descent; see :func:`gpumlp.training.fit` for the options."""
        from .training import fit

        return fit(self, X, Y, **kwargs)

    def save(self, path: str) -> None:
        """Write the model to ``path`` (.npz weights + JSON metadata, no pickle), atomically."""
        from .io import save

        save(self, path)

    def __repr__(self) -> str:
        return (
            f"MLP({list(self.sizes)}, hidden_activation={self.hidden_activation!r}, "
            f"output_activation={self.output_activation!r}, dtype={self.dtype!r}, backend={self.backend.name!r})"
        )
