"""scikit-learn estimators backed by gpumlp: :class:`MLPClassifier` and :class:`MLPRegressor`.

They take scikit-learn's parameter names with the same meanings (solvers "sgd", "adam", "lbfgs",
learning-rate schedules, ``tol`` / ``n_iter_no_change`` stopping, early stopping on a held-out
``validation_fraction`` scored by accuracy or R², ``warm_start``, ``partial_fit``) plus
``backend`` ("auto" trains on a CUDA GPU when CuPy sees one) and ``dtype`` (None keeps float32
input float32). Training runs in gpumlp's batched fit loop; the scikit-learn bookkeeping
(``loss_curve_``, ``validation_scores_``, ``best_loss_``, the stopping rule) runs in an
epoch callback. ``predict`` / ``predict_proba`` / ``score`` always return NumPy.

The regularisation is scikit-learn's: ``alpha / (2 * rows) * ||W||²`` added to each batch's
loss (rows: the batch's rows, or its sum of sample weights) before that batch's update, which is
gpumlp's ``fit(l2=alpha, l2_per_sample=True)``; ``loss_curve_`` is the row-weighted mean of those
batch losses. ``sample_weight`` (fit, partial_fit, score, the early-stopping scores), sparse X
(CSR/CSC/COO) and ``solver="lbfgs"`` (scipy's L-BFGS-B on gpumlp's device loss and gradient) are
supported.

Weights start from scikit-learn's initialisation drawn from ``random_state`` in its order, and
the early-stopping split is the same; only the order of the minibatches differs.

Differences from scikit-learn: negative sample weights are refused; with "lbfgs", ``loss_curve_``
holds the loss after each iteration (scikit-learn sets none); each ``fit``
with ``warm_start=True`` restarts the no-improvement count, so it trains for up to ``max_iter``
more epochs instead of stopping at once when the previous fit had stalled; a run that diverges
raises :class:`gpumlp.DivergenceError` (a FloatingPointError) in the epoch where it happens, with
the network and ``loss_curve_`` / ``n_iter_`` at the last good epoch, where scikit-learn raises a
ValueError once ``max_iter`` is done.
"""

from __future__ import annotations

from ..install_hint import install_hint

try:
    import sklearn  # noqa: F401
except ImportError as exc:  # a clear hint, not a bare ModuleNotFoundError from deep inside
    raise ImportError(
        f"gpumlp.sklearn needs scikit-learn, which is not installed: {install_hint('scikit-learn', 'sklearn')}"
    ) from exc

from ._estimators import MLPClassifier, MLPRegressor  # noqa: E402

__all__ = ["MLPClassifier", "MLPRegressor"]
