"""The Numba engine: layers, losses, optimizers and models. Imports no Textual and no click."""

from tuinet.engine.layers import (
    GELU, Dense, Dropout, Flatten, Layer, LeakyReLU, Linear, ReLU, Sigmoid, Tanh, make_activation,
)
from tuinet.engine.losses import BinaryCrossEntropyWithLogits, MeanSquaredError, SoftmaxCrossEntropy, make_loss
from tuinet.engine.model import Sequential
from tuinet.engine.optim import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop, make_optimizer
from tuinet.engine.spec import build_model
from tuinet.engine import features  # noqa: E402,F401  (registers PlaneFeatures; the convolutional layers and presets
#   register on first use: tuinet.engine.layers.load_all_layers)

__all__ = [
    "GELU", "Dense", "Dropout", "Flatten", "Layer", "LeakyReLU", "Linear", "ReLU", "Sigmoid", "Tanh",
    "make_activation", "BinaryCrossEntropyWithLogits", "MeanSquaredError", "SoftmaxCrossEntropy", "make_loss",
    "Sequential", "SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "make_optimizer", "build_model",
]
