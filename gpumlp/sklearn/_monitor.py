"""The epoch callback that keeps scikit-learn's bookkeeping (loss_curve_, validation scores, the
no-improvement stopping rule) for the estimators of :mod:`gpumlp.sklearn`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..network import MLP
from ..optimizers import Optimizer

if TYPE_CHECKING:
    from ._base import BaseMLP


class EpochMonitor:
    """fit callback doing scikit-learn's per-epoch bookkeeping and stopping rule.

    Records the loss, scores the validation split (early stopping) and keeps a device copy
    of the best weights, applies the "invscaling" / "adaptive" learning-rate schedules, and
    returns True (stop) once the monitored quantity has not improved by ``tol`` for more
    than ``n_iter_no_change`` epochs.
    """

    def __init__(
        self,
        est: BaseMLP,
        optimizer: Optimizer,
        n_samples: int,
        l2: float,
        X_val: np.ndarray | None,
        y_val: np.ndarray | None,
        w_val: np.ndarray | None = None,
    ) -> None:
        self.est, self.optimizer, self.n_samples, self.l2 = est, optimizer, n_samples, l2
        self.w_val = w_val
        model = est._model
        self.X_val = None if X_val is None else model.to_device(X_val)
        self.y_val = y_val
        self.best_params: list[Any] | None = None
        if X_val is not None and est.best_validation_score_ > -np.inf:
            # A warm start: the previous fit left the model at its best weights; keep them unless beaten.
            self.best_params = model.snapshot()
        self.converged = False
        self._before: tuple[dict[str, Any], list[tuple[list, int]], tuple[Any, ...]] | None = None

    def __call__(self, model: MLP, epoch: int, logs: dict) -> bool:
        est = self.est
        names = ("n_iter_", "t_", "loss_", "best_loss_", "best_validation_score_", "_no_improvement_count")
        curves = (est.loss_curve_, est.validation_scores_, est.validation_loss_curve_)
        self._before = (
            {k: getattr(est, k, None) for k in names},
            [(c, len(c)) for c in curves if c is not None],
            (self.best_params, self.optimizer.lr, self.converged),
        )
        est.n_iter_ += 1
        est.t_ += self.n_samples
        est.loss_ = est._reported_loss(logs["loss"], logs.get("l2_loss", 0.0))
        est.loss_curve_.append(est.loss_)
        if "val_loss" in logs:
            n_val = self.X_val.shape[0] if self.w_val is None else float(np.sum(self.w_val))
            val_l2 = model.l2_penalty(self.l2 / n_val)
            est.validation_loss_curve_.append(est._reported_loss(logs["val_loss"], val_l2))
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {est.loss_:.8f}")
        if self.X_val is not None:
            score = est._score_output(model.backend.to_numpy(model.forward(self.X_val)), self.y_val, self.w_val)
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            improved = not score < est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                self.best_params = model.snapshot()
        else:
            improved = not est.loss_ > est.best_loss_ - est.tol
            est.best_loss_ = min(est.best_loss_, est.loss_)
        est._no_improvement_count = 0 if improved else est._no_improvement_count + 1
        sgd = est.solver == "sgd"
        if sgd and est.learning_rate == "invscaling":
            self.optimizer.lr = est.learning_rate_init / (est.t_ + 1) ** est.power_t
        if est._no_improvement_count <= est.n_iter_no_change:
            return False
        what = "Validation score" if self.X_val is not None else "Training loss"
        msg = f"{what} did not improve more than tol={est.tol:f} for {est.n_iter_no_change} consecutive epochs."
        if sgd and est.learning_rate == "adaptive" and self.optimizer.lr > 1e-6:
            self.optimizer.lr /= 5.0
            est._no_improvement_count = 0
            if est.verbose:
                print(f"{msg} Setting learning rate to {self.optimizer.lr:f}")
            return False
        if est.verbose:
            print(f"{msg} Stopping.")
        self.converged = True
        return True

    def undo_epoch(self) -> None:
        """Put the estimator's bookkeeping back to before the last call (its epoch was rolled back)."""
        if self._before is None:
            return
        attributes, lengths, (self.best_params, self.optimizer.lr, self.converged) = self._before
        for name, value in attributes.items():
            setattr(self.est, name, value)
        for curve, n in lengths:
            del curve[n:]

    def restore_best(self) -> None:
        """Put the best-scoring weights back (early stopping), as scikit-learn does."""
        if self.best_params is not None:
            self.est._model.restore(self.best_params)
