"""The estimators' ``solver="lbfgs"``: scikit-learn's ``_fit_lbfgs`` on gpumlp's loss and gradient."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.utils.optimize import _check_optimize_result

from ..training.lbfgs import Objective, minimize_lbfgs

if TYPE_CHECKING:
    from ._base import BaseMLP


def fit_lbfgs(est: BaseMLP, X: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None) -> None:
    """Full-batch L-BFGS-B from the estimator's current weights, as scikit-learn runs it:
    ``maxiter=max_iter``, ``maxfun=max_fun``, ``gtol=tol``, the objective its ``_backprop``'s loss
    (mean loss + alpha/(2 Σw) Σ‖W‖²). Sets ``n_iter_`` and ``loss_`` (and ``loss_curve_``, one
    entry per iteration, which scikit-learn leaves out), warning ConvergenceWarning as scikit-learn's
    ``_check_optimize_result`` does."""
    model = est._model
    Xd, Td = model.to_device(X), model.to_device(Y)
    objective = Objective(model, Xd, Td, model.resolve_loss("auto"), float(est.alpha), True, sample_weight)
    objective.report = est._reported_loss

    def progress(iteration: int, loss: float) -> None:
        if est.verbose:
            print(f"Iteration {iteration}, loss = {loss:.8f}")

    result = minimize_lbfgs(objective, est.max_iter, est.max_fun, est.tol, callback=progress)
    est.n_iter_ = _check_optimize_result("lbfgs", result.result, est.max_iter)
    est.loss_ = float(result.result.fun)
    est.loss_curve_ = list(result.losses)
    est._optimizer = None


def stochastic_solver(est: Any) -> bool:
    """True for solver "sgd" or "adam"; else AttributeError (``partial_fit`` is theirs only)."""
    if est.solver not in ("sgd", "adam"):
        raise AttributeError(
            f"partial_fit is only available for stochastic optimizers. {est.solver} is not stochastic."
        )
    return True
