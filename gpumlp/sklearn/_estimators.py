"""The scikit-learn estimators :class:`MLPClassifier` and :class:`MLPRegressor`."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils._available_if import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.validation import column_or_1d, validate_data

from ._base import SPARSE, BaseMLP
from ._lbfgs import stochastic_solver


class MLPClassifier(ClassifierMixin, BaseMLP):
    """Multi-layer perceptron classifier on NumPy or a CUDA GPU, with scikit-learn's interface.

    Softmax output and cross-entropy for multiclass targets, one logistic output for binary
    targets and one logistic output per label for multilabel indicator targets, as in
    ``sklearn.neural_network.MLPClassifier``. Besides scikit-learn's fitted attributes it
    sets ``validation_loss_curve_``: the validation-split loss per epoch when
    ``early_stopping=True`` (None otherwise).
    """

    def _output_activation(self) -> str:
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(
            self, X, y, multi_output=True, dtype=(np.float64, np.float32), accept_sparse=SPARSE, reset=reset
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start and not incremental:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in the previous call to "
                        f"fit. Previously got {self.classes_}, `y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        return X, self._label_binarizer.transform(y)

    def _targets_for_score(self, Y: np.ndarray) -> np.ndarray:
        return self._label_binarizer.inverse_transform(Y)

    def _score_output(self, out: np.ndarray, y_true: np.ndarray, sample_weight: Any = None) -> float:
        if not np.isfinite(out).all():
            return float("nan")
        return float(accuracy_score(y_true, self._labels(out), sample_weight=sample_weight))

    def _labels(self, out: np.ndarray) -> np.ndarray:
        return self._label_binarizer.inverse_transform(out.ravel() if self.n_outputs_ == 1 else out)

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPClassifier:
        """Train on X (n_samples, n_features) and labels y (n_samples,) or a multilabel indicator matrix,
        with optional per-sample weights ``sample_weight`` (n_samples,)."""
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    @available_if(stochastic_solver)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None, classes: Any = None) -> MLPClassifier:
        """One epoch over (X, y) (weighted by ``sample_weight``), keeping weights and optimizer state;
        ``classes`` is required on the first call."""
        if getattr(self, "classes_", None) is None:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y if type_of_target(y).startswith("multilabel") else classes)
            self.classes_ = self._label_binarizer.classes_
        elif classes is not None and not np.array_equal(self.classes_, unique_labels(classes)):
            raise ValueError(
                f"`classes={classes!r}` is not the same as on last call to partial_fit, was: {self.classes_!r}"
            )
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels (a NumPy array, also after GPU training)."""
        return self._labels(self._output(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n_samples, n_classes) in the order of ``classes_``, as NumPy."""
        out = self._output(X)
        if self.n_outputs_ == 1:
            p = out.ravel()
            return np.vstack([1 - p, p]).T
        return out

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of :meth:`predict_proba`."""
        proba = self.predict_proba(X)
        return np.log(proba, out=proba)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, BaseMLP):
    """Multi-layer perceptron regressor (identity output, squared error) with scikit-learn's interface.

    ``loss_curve_`` is scikit-learn's half mean squared error (averaged over outputs) plus the
    ``alpha`` term. Besides scikit-learn's fitted attributes it sets
    ``validation_loss_curve_``: the validation-split loss per epoch when ``early_stopping=True``.
    """

    def _output_activation(self) -> str:
        return "identity"

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(
            self,
            X,
            y,
            multi_output=True,
            y_numeric=True,
            dtype=(np.float64, np.float32),
            accept_sparse=SPARSE,
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y.reshape(-1, 1) if y.ndim == 1 else y

    def _reported_loss(self, loss: float, l2_loss: float) -> float:
        # gpumlp sums ½(ŷ−y)² over outputs; scikit-learn averages it over them.
        if self.n_outputs_ == 1:
            return float(loss)
        return (float(loss) - l2_loss) / self.n_outputs_ + l2_loss

    def _targets_for_score(self, Y: np.ndarray) -> np.ndarray:
        return Y

    def _score_output(self, out: np.ndarray, y_true: np.ndarray, sample_weight: Any = None) -> float:
        if not np.isfinite(out).all():
            return float("nan")
        return float(r2_score(y_true, out, sample_weight=sample_weight))

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """Train on X (n_samples, n_features) and targets y (n_samples,) or (n_samples, n_outputs),
        with optional per-sample weights ``sample_weight`` (n_samples,)."""
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    @available_if(stochastic_solver)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """One epoch over (X, y) (weighted by ``sample_weight``), keeping weights and optimizer state."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def predict(self, X: Any) -> np.ndarray:
        """Predictions as NumPy: (n_samples,) for a single output, else (n_samples, n_outputs)."""
        out = self._output(X)
        return out.ravel() if out.shape[1] == 1 else out

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
