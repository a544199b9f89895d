"""What MLPClassifier and MLPRegressor share: parameters, checks, the fit driver, pickling."""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ..backends import backend_of, to_numpy
from ..network import MLP, model_meta
from ..optimizers import SGD, Adam, Optimizer
from ..trainable import fit as _train
from ..validation import check_bool, check_choice, check_fits_dtype, check_number
from ._lbfgs import fit_lbfgs
from ._monitor import EpochMonitor

# scikit-learn's activation names -> gpumlp's.
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
SOLVERS = ("lbfgs", "sgd", "adam")
LEARNING_RATES = ("constant", "invscaling", "adaptive")
SPARSE = ("csr", "csc", "coo")  # scipy.sparse formats X may come in (gpumlp trains on CSR)
_OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def _host(a: Any) -> Any:
    """Device arrays (CuPy, array_api_strict) as NumPy; anything else unchanged for validate_data."""
    owner = backend_of(a)
    return to_numpy(a) if owner is not None and owner.name != "numpy" else a


def _dtype_name(dtype: Any) -> str:
    """``dtype`` ("float32", np.float32, np.dtype(...)) as "float32" or "float64"; else ValueError."""
    if not isinstance(dtype, str):
        dtype = str(np.dtype(dtype)) if isinstance(dtype, (type, np.dtype)) else repr(dtype)
    return check_choice(dtype, "dtype", ("float32", "float64"))


class BaseMLP(BaseEstimator):
    """Shared parameters, validation, training loop and pickling of the two estimators."""

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        max_fun: int = 15000,
        backend: str = "auto",
        dtype: str | None = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.dtype = dtype

    # ----- parameters -------------------------------------------------------------------
    def _hidden_sizes(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral):
            sizes = [sizes]
        if isinstance(sizes, str) or not hasattr(sizes, "__iter__"):
            raise TypeError(f"hidden_layer_sizes must be an int or a sequence of ints; got {sizes!r}")
        sizes = list(sizes)
        if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        return [int(s) for s in sizes]

    def _check_params(self) -> None:
        """Validate every constructor parameter; errors name the parameter."""
        check_choice(self.activation, "activation", tuple(ACTIVATIONS))
        check_choice(self.solver, "solver", SOLVERS)
        check_choice(self.learning_rate, "learning_rate", LEARNING_RATES)
        check_number(self.alpha, "alpha", allow_zero=True)
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            check_number(self.batch_size, "batch_size", integer=True)
        check_number(self.learning_rate_init, "learning_rate_init")
        check_number(self.power_t, "power_t", allow_zero=True)
        check_number(self.max_iter, "max_iter", integer=True)
        check_number(self.max_fun, "max_fun", integer=True)
        check_number(self.tol, "tol", allow_zero=True)
        check_number(self.momentum, "momentum", allow_zero=True, upper=1.0, upper_inclusive=True)
        check_number(self.validation_fraction, "validation_fraction", allow_zero=True, upper=1.0)
        check_number(self.beta_1, "beta_1", allow_zero=True, upper=1.0)
        check_number(self.beta_2, "beta_2", allow_zero=True, upper=1.0)
        check_number(self.epsilon, "epsilon")
        check_number(self.n_iter_no_change, "n_iter_no_change", integer=True)
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
            check_bool(getattr(self, name), name)
        if self.dtype is not None:
            _dtype_name(self.dtype)
        self._hidden_sizes()

    def _new_optimizer(self) -> Optimizer:
        if self.solver == "adam":
            return Adam(lr=self.learning_rate_init, beta1=self.beta_1, beta2=self.beta_2, eps=self.epsilon)
        nesterov = self.nesterovs_momentum and self.momentum > 0
        return SGD(lr=self.learning_rate_init, momentum=self.momentum, nesterov=nesterov)

    # ----- fitting ----------------------------------------------------------------------
    def _fit(self, X: Any, y: Any, incremental: bool, sample_weight: Any = None) -> BaseMLP:
        self._check_params()
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        first_pass = not hasattr(self, "_model") or (not self.warm_start and not incremental)
        X, Y = self._validate_input(_host(X), _host(y), incremental, reset=first_pass)
        if first_pass:
            dtype = _dtype_name(self.dtype) if self.dtype is not None else X.dtype.name
        else:
            dtype = self._model.dtype
        X, Y = check_fits_dtype(X, dtype), check_fits_dtype(Y, dtype, "y")  # 1e39 must not become inf
        X, Y = X.astype(dtype, copy=False), Y.astype(dtype, copy=False)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
            if not sample_weight.any():
                raise ValueError("Sample weights must contain at least one non-zero number; all are zero.")
        random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(X.shape[1], Y.shape[1], dtype, random_state)
        elif Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} outputs; the fitted model has {self.n_outputs_}")
        elif (self.validation_scores_ is not None) != self.early_stopping:
            self._reset_stopping_state()  # warm start with early_stopping switched on or off
        if self.solver == "lbfgs":
            fit_lbfgs(self, X, Y, sample_weight)
            return self
        if not incremental or getattr(self, "_optimizer", None) is None:
            self._optimizer = self._new_optimizer()
        X_val = y_val = Y_val = w_val = None
        if self.early_stopping:
            stratify = Y if is_classifier(self) and self.n_outputs_ == 1 else None
            parts = train_test_split(
                *(X, Y) if sample_weight is None else (X, Y, sample_weight),
                random_state=random_state,
                test_size=self.validation_fraction,
                stratify=stratify,
            )
            X, X_val, Y, Y_val = parts[:4]
            if sample_weight is not None:
                sample_weight, w_val = parts[4:]
            if X_val.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."
                )
            y_val = self._targets_for_score(Y_val)
        n = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than sample size. It is going to be clipped", stacklevel=3
                )
            batch_size = int(np.clip(self.batch_size, 1, n))
        l2 = float(self.alpha)
        # A fresh network shuffles with a seed from random_state; later calls continue its RNG.
        seed = int(random_state.randint(np.iinfo(np.int32).max)) if first_pass else None
        monitor = EpochMonitor(self, self._optimizer, n, l2, X_val, y_val, w_val)
        self.n_iter_ = 0
        if not incremental:
            self._no_improvement_count = 0
        try:
            _train(
                self._model,
                X,
                Y,
                optimizer=self._optimizer,
                l2=l2,
                l2_per_sample=True,
                sample_weight=sample_weight,
                epochs=1 if incremental else self.max_iter,
                batch_size=batch_size,
                shuffle=bool(self.shuffle),
                seed=seed,
                validation_data=None if X_val is None else (X_val, Y_val, w_val),
                callbacks=[monitor],
            )
        except KeyboardInterrupt:  # fit put the model back to its last complete epoch
            if self.n_iter_ > len(self._model.history.get("loss", ())):
                monitor.undo_epoch()  # the Ctrl-C came during the monitor's epoch, which fit rolled back
            warnings.warn("Training interrupted by user.", stacklevel=3)
        if self.early_stopping:
            monitor.restore_best()
        if not incremental and not monitor.converged and self.n_iter_ == self.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the optimization "
                "hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return self

    def _initialize(self, n_features: int, n_outputs: int, dtype: str, random_state: np.random.RandomState) -> None:
        """Build a fresh network and reset the fitted attributes (first fit, or no warm start)."""
        self.out_activation_ = self._output_activation()
        output = "sigmoid" if self.out_activation_ == "logistic" else self.out_activation_
        sizes = [n_features, *self._hidden_sizes(), n_outputs]
        self._model = MLP(
            sizes,
            hidden_activation=ACTIVATIONS[self.activation],
            output_activation=output,
            dtype=dtype,
            backend=self.backend,
            seed=0,
        )
        # scikit-learn's initialisation, drawn in its order: Glorot uniform for W and b.
        factor = 2.0 if self.activation == "logistic" else 6.0
        weights = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            bound = np.sqrt(factor / (n_in + n_out))
            W = random_state.uniform(-bound, bound, (n_in, n_out))
            weights.append((W, random_state.uniform(-bound, bound, n_out)))
        self._model.set_weights(weights)
        self._optimizer = None
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(self._model.sizes)
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_: list[float] = []
        self._no_improvement_count = 0
        self._reset_stopping_state()

    def _reset_stopping_state(self) -> None:
        """What the stopping rule tracks: validation scores (early stopping) or the best loss."""
        if self.early_stopping:
            self.validation_scores_: list[float] | None = []
            self.validation_loss_curve_: list[float] | None = []
            self.best_validation_score_: float | None = -np.inf
            self.best_loss_: float | None = None
        else:
            self.validation_scores_ = None
            self.validation_loss_curve_ = None
            self.best_validation_score_ = None
            self.best_loss_ = np.inf

    def _reported_loss(self, loss: float, l2_loss: float) -> float:
        """gpumlp's epoch loss (``l2_loss`` of it the L2 term) as scikit-learn reports it (only
        multi-output MSE differs)."""
        return float(loss)

    # ----- prediction -------------------------------------------------------------------
    def _output(self, X: Any) -> np.ndarray:
        """Validated X through the network; a NumPy (n_samples, n_outputs) array."""
        check_is_fitted(self)
        # scikit-learn's checks first (check_estimator expects their messages), then MLP.predict
        # runs gpumlp's shared validation.check_inputs on what they let through.
        X = validate_data(self, _host(X), dtype=(np.float64, np.float32), accept_sparse=SPARSE, reset=False)
        return np.asarray(to_numpy(self._model.predict(X)))

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Weight matrices W_l as NumPy copies (scikit-learn's ``coefs_``)."""
        return [W for W, _ in self._fitted_model().get_weights()]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Bias vectors b_l as NumPy copies (scikit-learn's ``intercepts_``)."""
        return [b for _, b in self._fitted_model().get_weights()]

    @property
    def model_(self) -> MLP:
        """The trained :class:`gpumlp.MLP` (for ``save``, ``to`` or direct use)."""
        return self._fitted_model()

    def _fitted_model(self) -> MLP:
        model = self.__dict__.get("_model")
        if model is None:
            raise AttributeError(f"This {type(self).__name__} instance is not fitted yet.")
        return model

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # ----- pickling: the network holds backend modules, so store weights instead ----------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # object.__getstate__ returns __dict__ itself
        model = state.pop("_model", None)
        if model is not None:
            state["_model_state"] = {
                "meta": model_meta(model),
                "weights": model.get_weights(),
                "rng": model.rng.bit_generator.state,
            }
        optimizer = state.pop("_optimizer", None)
        if optimizer is not None:
            state["_optimizer_state"] = optimizer.state_dict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        model_state = state.pop("_model_state", None)
        optimizer_state = state.pop("_optimizer_state", None)
        super().__setstate__(state)
        if model_state is None:
            return
        meta = model_state["meta"]
        kwargs = {k: meta[k] for k in ("hidden_activation", "output_activation", "dtype", "seed")}
        try:
            model = MLP(meta["sizes"], backend=self.backend, **kwargs)
        except RuntimeError as exc:
            msg = f"{exc}; the unpickled {type(self).__name__} runs on NumPy instead"
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            model = MLP(meta["sizes"], backend="numpy", **kwargs)
        model.set_weights(model_state["weights"])
        model.rng.bit_generator.state = model_state["rng"]
        self._model = model
        self._optimizer = None
        if optimizer_state is not None:
            optimizer = _OPTIMIZERS[optimizer_state["name"]](**optimizer_state["hyper"])
            optimizer.load_state_dict(optimizer_state, model.params, model.backend)
            self._optimizer = optimizer
