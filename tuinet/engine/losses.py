"""Loss functions: each returns the mean loss and writes the gradient with respect to the model's outputs."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from tuinet.engine import kernels as K
from tuinet.errors import ModelError


class Loss:
    """Base class: ``__call__(outputs, targets) -> (loss, doutputs, correct)``; correct is None for regression."""

    name: ClassVar[str] = ""

    def __call__(self, outputs: np.ndarray, targets: np.ndarray):
        raise NotImplementedError

    def value(self, outputs: np.ndarray, targets: np.ndarray):
        """(loss, correct) without keeping the gradient."""
        loss, _, correct = self(outputs, targets)
        return loss, correct


class SoftmaxCrossEntropy(Loss):
    """Softmax followed by cross-entropy on integer class labels, fused and stable (log-sum-exp)."""

    name = "softmax_cross_entropy"

    def __call__(self, outputs, targets):
        if outputs.ndim != 2:
            raise ModelError(f"softmax cross-entropy expects (batch, classes) outputs, got {outputs.shape}")
        grad = np.empty_like(outputs)
        row_loss = np.empty(outputs.shape[0], dtype=np.float32)
        loss, correct = K.softmax_cross_entropy(outputs, targets, grad, row_loss)
        self.row_loss = row_loss
        return float(loss), grad, int(correct)


class MeanSquaredError(Loss):
    """Mean over all elements of (output - target)^2, as torch.nn.MSELoss()."""

    name = "mse"

    def __call__(self, outputs, targets):
        t = targets.reshape(outputs.shape)
        grad = np.empty_like(outputs)
        loss = K.mean_squared_error(outputs.reshape(-1), np.ascontiguousarray(t, np.float32).reshape(-1),
                                    grad.reshape(-1))
        return float(loss), grad, None


class BinaryCrossEntropyWithLogits(Loss):
    """Sigmoid + binary cross-entropy on logits (stable), mean over all elements; targets in [0, 1]."""

    name = "bce_with_logits"

    def __call__(self, outputs, targets):
        t = np.ascontiguousarray(targets.reshape(outputs.shape), np.float32)
        grad = np.empty_like(outputs)
        loss = K.bce_with_logits(outputs.reshape(-1), t.reshape(-1), grad.reshape(-1))
        correct = int(((outputs > 0) == (t > 0.5)).all(axis=1).sum()) if outputs.ndim == 2 else None
        return float(loss), grad, correct


LOSSES = {cls.name: cls for cls in (SoftmaxCrossEntropy, MeanSquaredError, BinaryCrossEntropyWithLogits)}
LOSS_ALIASES = {"cross_entropy": "softmax_cross_entropy", "ce": "softmax_cross_entropy", "bce": "bce_with_logits"}


def make_loss(name: str) -> Loss:
    """A loss by name: softmax_cross_entropy (ce), mse, bce_with_logits (bce)."""
    key = LOSS_ALIASES.get(name, name)
    if key not in LOSSES:
        raise ModelError(f"unknown loss '{name}'; choose one of {', '.join(LOSSES)}")
    return LOSSES[key]()
