"""gpumlp: multilayer perceptrons trained by minibatch gradient descent on NumPy or CuPy."""

from . import distributed, training
from .backends import Backend, backend_info, get_backend, has_gpu, to_numpy
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .data import load_dataset, one_hot, train_test_split
from .gradcheck import gradcheck, numerical_gradients
from .network import MLP, Layer, save
from .optimizers import SGD, Adam, Optimizer
from .pipeline import Pipeline, load
from .plotting import plot_history
from .trainable import fit, install_training_loop
from .training import ConvergenceWarning, DivergenceError

install_training_loop(training.fit)  # MLP.fit runs gpumlp.training.fit; the model never imports the loop

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "Layer",
    "fit",
    "load",
    "save",
    "gradcheck",
    "numerical_gradients",
    "SGD",
    "Adam",
    "Optimizer",
    "DivergenceError",
    "ConvergenceWarning",
    "Pipeline",
    "Backend",
    "get_backend",
    "backend_info",
    "has_gpu",
    "to_numpy",
    "load_dataset",
    "one_hot",
    "train_test_split",
    "__version__",
    "Checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "plot_history",
    "distributed",
]
