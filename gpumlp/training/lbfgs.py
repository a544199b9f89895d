"""Full-batch L-BFGS (scipy.optimize.minimize, method "L-BFGS-B") on the model's loss and gradient.

scipy drives the iterations on the host; each evaluation uploads the parameter vector x once,
runs the forward and backward pass over all rows on the model's device, and brings back the
loss and the flat gradient once. The objective is scikit-learn's (``_backprop`` over all rows):

    E(x) = (1/Σw) [Σ_n w_n ℓ_n + (λ/2) Σ_l ‖W_l‖²]      (``l2_per_sample=True``, scikit-learn's alpha)
    E(x) = (1/Σw) Σ_n w_n ℓ_n + (λ/2) Σ_l ‖W_l‖²        (λ per batch: the whole set is the batch)

with w_n = 1 without sample weights. x packs the parameters as scikit-learn's ``_pack`` does:
every W_l flattened, then every b_l.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..validation import check_number
from ..workspace import Workspace

if TYPE_CHECKING:
    from ..network import MLP


def _scipy_optimize() -> Any:
    try:
        import scipy.optimize
    except ImportError as exc:  # pragma: no cover - scipy is a dependency
        raise ImportError("the 'lbfgs' optimizer needs SciPy: pip install scipy") from exc
    return scipy.optimize


@dataclass
class LbfgsResult:
    """What :func:`minimize_lbfgs` did: scipy's OptimizeResult and the objective after each iteration."""

    result: Any
    losses: list[float] = field(default_factory=list)

    @property
    def n_iter(self) -> int:
        return int(self.result.nit)

    @property
    def converged(self) -> bool:
        return int(self.result.status) == 0


class Objective:
    """E(x) and ∂E/∂x of ``model`` on (X, T, w), all rows at once on the model's device."""

    def __init__(
        self,
        model: MLP,
        X: Any,
        T: Any,
        loss: str,
        l2: float,
        l2_per_sample: bool,
        weights: np.ndarray | None,
        report: Callable[[float, float], float] | None = None,
    ) -> None:
        self.model, self.X, self.T, self.loss = model, X, T, loss
        self.denom = float(X.shape[0]) if weights is None else float(np.sum(weights))
        self.l2 = l2 / self.denom if l2_per_sample else l2
        self.weights = None if weights is None else model.to_device(weights)
        self.report = report
        shapes = [tuple(layer.W.shape) for layer in model.layers] + [tuple(layer.b.shape) for layer in model.layers]
        self.params = [layer.W for layer in model.layers] + [layer.b for layer in model.layers]
        self.bounds = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
        self.shapes = shapes

    def pack(self) -> np.ndarray:
        """The parameters as one host float64 vector (W_1 … W_L, then b_1 … b_L)."""
        to_numpy = self.model.backend.to_numpy
        return np.concatenate([np.asarray(to_numpy(p), dtype=np.float64).ravel() for p in self.params])

    def unpack(self, x: np.ndarray) -> None:
        """Copy ``x`` into the parameters (one upload), which keep their addresses."""
        model = self.model
        xd = model.to_device(x)
        xp = model.backend.xp
        for p, a, b, shape in zip(self.params, self.bounds[:-1], self.bounds[1:], self.shapes):
            model.ops.assign(p, xp.reshape(xd[int(a) : int(b)], shape))

    def _data_loss(self, ws: Workspace) -> Any:
        Y = self.model.forward_into(ws)
        if self.weights is None:
            return self.model.ops.loss_sum(self.loss, Y, self.T)
        return self.model.ops.weighted_loss_sum(self.loss, Y, self.T, self.weights)

    def value(self) -> float:
        """E at the model's current weights (no gradient)."""
        data = self._data_loss(Workspace.unbuffered(self.model, self.X))
        return float(data) / self.denom + self.model.l2_penalty(self.l2)

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """(E(x), ∂E/∂x) with one device-to-host transfer of the gradient."""
        model = self.model
        self.unpack(x)
        ws = Workspace.unbuffered(model, self.X)
        data = self._data_loss(ws)
        model.backward_into(ws, self.T, self.loss, 1.0 / self.denom, self.weights)
        model.add_l2(ws, self.l2)
        xp = model.backend.xp
        concat = getattr(xp, "concat", None) or xp.concatenate
        flat = concat([xp.reshape(g, (-1,)) for g in [dW for dW, _ in ws.grads] + [db for _, db in ws.grads]])
        grad = np.asarray(model.backend.to_numpy(flat), dtype=np.float64)
        penalty = model.l2_penalty(self.l2)
        value = float(data) / self.denom + penalty
        if self.report is not None:
            value = self.report(value, penalty)
        return value, grad


def minimize_lbfgs(
    objective: Objective,
    max_iter: int,
    max_fun: int = 15000,
    tol: float = 1e-4,
    callback: Callable[[int, float], bool | None] | None = None,
) -> LbfgsResult:
    """Minimise ``objective`` from the model's current weights with scipy's L-BFGS-B, as
    scikit-learn's ``_fit_lbfgs`` does (``maxiter=max_iter``, ``maxfun=max_fun``, ``gtol=tol``),
    and leave the model at the result.

    Parameters
    ----------
    objective : Objective
        The model, data and loss.
    max_iter, max_fun : int
        Most iterations and most evaluations of E.
    tol : float
        scipy's ``gtol``: stop once every |∂E/∂x_i| <= tol (after its projection).
    callback : callable, optional
        ``callback(iteration, loss)`` after each iteration, the model holding that iteration's
        weights; True stops.

    Returns
    -------
    LbfgsResult
        scipy's result (``nit``, ``nfev``, ``status``, ``message``) and the loss of each iteration.
    """
    out = LbfgsResult(None)

    def step(intermediate_result: Any) -> None:  # the name asks scipy for an OptimizeResult
        out.losses.append(float(intermediate_result.fun))
        if callback is not None:
            objective.unpack(intermediate_result.x)
            if callback(len(out.losses), float(intermediate_result.fun)):
                raise StopIteration

    out.result = _scipy_optimize().minimize(
        objective,
        objective.pack(),
        method="L-BFGS-B",
        jac=True,
        callback=step,
        options={"maxfun": int(max_fun), "maxiter": int(max_iter), "gtol": float(tol)},
    )
    objective.unpack(out.result.x)
    return out


def fit_lbfgs(
    model: MLP,
    X: Any,
    T: Any,
    loss: str,
    l2: float,
    l2_per_sample: bool,
    weights: np.ndarray | None,
    max_iter: int,
    validation: tuple[Any, Any, Any] | None,
    seed: int | None,
    callbacks: list[Callable[..., bool | None]],
    unsupported: dict[str, Any],
) -> dict[str, list[float]]:
    """``fit(optimizer="lbfgs")``: full-batch L-BFGS for at most ``max_iter`` iterations (``epochs``),
    with scikit-learn's defaults ``max_fun=15000`` and ``tol=1e-4``; one history entry per iteration.

    ``validation`` (X_val, T_val, w_val) is scored after each iteration into ``"val_loss"``; each
    callback gets ``(model, iteration, logs)`` and may return True to stop. ``unsupported`` holds
    the minibatch-only settings, which must be off. Warns (UserWarning) when L-BFGS stops at
    ``max_iter`` without converging.

    Raises
    ------
    ValueError
        For a minibatch-only setting that is on.
    """
    for name, value in unsupported.items():
        if value not in (None, False):
            raise ValueError(f"optimizer='lbfgs' (full-batch L-BFGS) does not support {name}={value!r}")
    if seed is not None:
        model.rng = np.random.default_rng(check_number(seed, "seed", integer=True, allow_zero=True))
    history: dict[str, list[float]] = {"loss": []}
    val = None
    if validation is not None:
        history["val_loss"] = []
        val = Objective(model, *validation[:2], loss, l2, l2_per_sample, validation[2])

    def after(iteration: int, value: float) -> bool:
        history["loss"].append(value)
        logs = {"loss": value}
        if val is not None:
            logs["val_loss"] = val.value()
            history["val_loss"].append(logs["val_loss"])
        return any([bool(cb(model, iteration, logs)) for cb in callbacks])

    res = minimize_lbfgs(Objective(model, X, T, loss, l2, l2_per_sample, weights), max_iter, callback=after)
    if not res.converged and res.n_iter >= max_iter:
        warnings.warn(
            f"L-BFGS stopped at epochs={max_iter} iterations before converging ({res.result.message}); "
            "raise epochs or scale the data",
            UserWarning,
            stacklevel=3,
        )
    model.history = history
    return history
