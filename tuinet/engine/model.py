"""The sequential model: a list of layers, a loss, L1/L2 penalties, and a printable summary."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from tuinet.engine import kernels as K
from tuinet.engine.layers import Activation, Dense, Dropout, Layer, he_or_xavier
from tuinet.engine.losses import Loss, make_loss
from tuinet.errors import ModelError


class Sequential:
    """Layers applied in order, trained against one loss.

    Args:
        layers: the layers, unbuilt.
        input_shape: shape of one sample (no batch dimension), e.g. ``(28, 28, 1)`` or ``(784,)``.
        loss: loss name (``softmax_cross_entropy``, ``mse``, ``bce_with_logits``).
        l1: L1 penalty factor on weights (not biases): adds ``l1 * sum|w|`` to the loss.
        l2: L2 penalty factor on weights: adds ``l2 * sum w^2`` to the loss.
        seed: seeds weight initialization and dropout masks.
    """

    def __init__(self, layers: list[Layer], input_shape: tuple[int, ...], loss: str = "softmax_cross_entropy",
                 l1: float = 0.0, l2: float = 0.0, seed: int = 0):
        if not layers:
            raise ModelError("a model needs at least one layer")
        if l1 < 0 or l2 < 0:
            raise ModelError(f"penalties must be >= 0 (l1={l1}, l2={l2})")
        self.layers = layers
        self.input_shape = tuple(int(s) for s in input_shape)
        self.loss_name = loss
        self.loss: Loss = make_loss(loss)
        self.l1 = float(l1)
        self.l2 = float(l2)
        self.seed = int(seed)
        self._build()

    def _build(self) -> None:
        rng = np.random.default_rng(self.seed)
        shape = self.input_shape
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Dense) and layer.init is None:
                nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
                layer.init = he_or_xavier(getattr(nxt, "key", None) if isinstance(nxt, Activation) else None)
            shape = layer.build(shape, rng)
            layer.name = f"{type(layer).__name__.lower()}_{i}"
        self.output_shape = shape
        if any(getattr(layer, "uses_conv_extras", False) for layer in self.layers):
            for layer in self.layers:  # one compiled variant of the conv kernels for the whole model
                if hasattr(layer, "kernel_ext"):
                    layer.kernel_ext = True
        self.dropout_rng = np.random.default_rng([self.seed, 1])
        for layer in self.layers:
            if isinstance(layer, Dropout):
                layer.rng = self.dropout_rng
        self.params: list[np.ndarray] = [p for layer in self.layers for p in layer.params]
        self.grads: list[np.ndarray] = [g for layer in self.layers for g in layer.grads]
        self._penalized = [
            (p, g) for layer in self.layers for name, p, g in layer.named_params() if name in layer.penalized
        ]
        self._first_trainable = next((i for i, layer in enumerate(self.layers) if layer.params), len(self.layers))
        self._fusable = self._fusable_groups(self.layers)
        # a Conv2D (not fused with a pooling) before a BatchNorm + ReLU pair: its backward pass makes theirs (on the
        # kernels' extended variant, in training and inference alike: one compiled variant)
        self._bn_links = frozenset(
            i for i, (a, b) in enumerate(zip(self.layers, self.layers[1:]))
            if hasattr(a, "takes_batchnorm") and i not in self._fusable and b.kind == "BatchNorm"
            and self._fusable.get(i + 1) == 2)
        for i in self._bn_links:
            self.layers[i].kernel_ext = True
        self._fusion = True
        self._set_fused(self._fusable)

    @property
    def first_trainable(self) -> int:
        """Index of the first layer with parameters (``len(layers)`` when none has any).

        The backward pass stops there, and that layer computes no input gradient.
        """
        return self._first_trainable

    @staticmethod
    def _fusable_groups(layers) -> dict[int, int]:
        """The layers that can run as one unit with the ones after them: the first one's index -> the unit's number
        of layers. A Conv2D and its MaxPool2D (3 with the ReLU after that: ``can_fuse_relu``), a Conv2D (direct), a
        BatchNorm or a Dense and its ReLU (``can_fuse``); the first layer's ``forward_fused(x, training, *others)`` and
        ``backward_fused(dy, *others, need_dx=...)`` run the unit."""
        groups, i = {}, 0
        while i < len(layers) - 1:
            layer = layers[i]
            n = 1
            if hasattr(layer, "can_fuse") and layer.can_fuse(layers[i + 1]):
                n = 3 if (i + 2 < len(layers) and hasattr(layer, "can_fuse_relu")
                          and layer.can_fuse_relu(layers[i + 1], layers[i + 2])) else 2
                groups[i] = n
            i += n
        return groups

    @property
    def fused_groups(self) -> dict[int, int]:
        """The units of layers that run fused: the first one's index -> how many layers (a copy)."""
        return dict(self._fused)

    @property
    def fused_pairs(self) -> frozenset[int]:
        """Indices of the layers that run fused with the next one (a Conv2D and its MaxPool2D, a BatchNorm and its
        ReLU), including the units of three."""
        return frozenset(self._fused)

    @property
    def fused_triples(self) -> frozenset[int]:
        """Indices of the fused units of three layers (a Conv2D, its MaxPool2D and the ReLU after it)."""
        return frozenset(i for i, n in self._fused.items() if n == 3)

    @property
    def fusion(self) -> bool:
        """Whether layer pairs that can run fused do (True, the default); results are the same either way."""
        return self._fusion

    @fusion.setter
    def fusion(self, on: bool) -> None:
        self._fusion = bool(on)
        self._set_fused(self._fusable if self._fusion else {})

    def _set_fused(self, groups: dict[int, int]) -> None:
        """The units that run fused (first index -> length), and for the backward pass each unit's last layer ->
        its first (kept, not rebuilt every step)."""
        self._fused = groups
        self._fused_first = {i + n - 1: i for i, n in groups.items()}

    # --- computing ---------------------------------------------------------------------------------------------

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """The model's outputs (logits for classification) for a batch."""
        layers = self.layers
        i = 0
        while i < len(layers):
            n = self._fused.get(i, 1)
            x = layers[i].forward_fused(x, training, *layers[i + 1:i + n]) if n > 1 else layers[i].forward(x, training)
            i += n
        return x

    def forward_each(self, x: np.ndarray, visit: Callable[[int, Layer, np.ndarray, np.ndarray], None]) -> np.ndarray:
        """Inference one layer at a time (fused pairs unfused: the same numbers), calling ``visit(i, layer, its
        input, its output)`` after each layer; returns the model's outputs. For pictures of what each layer does
        (the Draw tab's forward pass, the layers' views of the validation samples)."""
        fused = self.fusion
        self.fusion = False
        try:
            for i, layer in enumerate(self.layers):
                out = layer.forward(x, False)
                visit(i, layer, x, out)
                x = out
        finally:
            self.fusion = fused
        return x

    def backward(self, dout: np.ndarray) -> None:
        """Backpropagate the loss gradient through every layer, filling the gradient buffers."""
        d = dout
        stop = self._first_trainable
        i = len(self.layers) - 1
        sums = None  # a linked BatchNorm's first-pass sums, gathered by the layer after it (see below)
        while i >= stop:
            first = self._fused_first.get(i, i)  # the first layer of the unit that ends at i
            if first < i and first >= stop:
                conv = first - 1
                if self._linked(conv, first, stop):
                    # a Conv2D before a fused BatchNorm + ReLU makes the BatchNorm's input gradient itself, sample
                    # by sample as it uses it (never written): the same numbers as the two backward passes
                    d = self.layers[conv].backward(d, need_dx=conv > stop, bn_relu=self.layers[first], bn_sums=sums)
                    sums = None
                    i = conv - 1
                    continue
                d = self.layers[first].backward_fused(d, *self.layers[first + 1:i + 1], need_dx=first > stop)
                i = first - 1
            else:
                layer = self.layers[i]
                bn = self._input_batchnorm(i, stop)
                if bn is not None:  # it gathers that BatchNorm's first-pass sums as it writes its input gradient
                    d = layer.backward(d, need_dx=True, input_bn=bn)
                    sums = layer.input_bn_sums
                else:
                    d = layer.backward(d, need_dx=i > stop)
                i -= 1

    def _linked(self, conv: int, first: int, stop: int) -> bool:
        """True when the Conv2D at ``conv`` makes the backward pass of the fused BatchNorm + ReLU at ``first``."""
        return (conv in self._bn_links and first == conv + 1 and conv >= stop
                and self.layers[conv].takes_batchnorm(self.layers[first]))

    def _input_batchnorm(self, i: int, stop: int):
        """The BatchNorm whose (fused, linked) BatchNorm + ReLU output is the input of layer ``i``, when layer ``i``
        can gather its first-pass sums (``input_bn``, a residual block whose first convolution runs by Winograd),
        else None."""
        if i <= stop or not hasattr(self.layers[i], "input_bn_sums"):
            return None
        first = self._fused_first.get(i - 1, i - 1)
        if first != i - 2 or not self._linked(first - 1, first, stop):
            return None
        return self.layers[first]

    def penalty(self, add_grad: bool) -> float:
        """The L1/L2 penalty on weights; with ``add_grad`` also adds its gradient to the weight gradients."""
        if self.l1 == 0.0 and self.l2 == 0.0:
            return 0.0
        total = 0.0
        l1, l2 = np.float32(self.l1), np.float32(self.l2)
        for p, g in self._penalized:
            if add_grad:
                total += K.add_penalty_grad(p.reshape(-1), g.reshape(-1), l1, l2)
            else:
                total += self.l1 * float(np.abs(p).sum(dtype=np.float64)) + self.l2 * K.sum_squares(p.reshape(-1))
        return float(total)

    def compute_gradients(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float, int | None]:
        """Forward and backward on one batch: returns (data loss, penalty, correct predictions)."""
        out = self.forward(x, training=True)
        loss, dout, correct = self.loss(out, y)
        self.backward(dout)
        pen = self.penalty(add_grad=True)
        return loss, pen, correct

    def train_step(self, x: np.ndarray, y: np.ndarray, optimizer) -> tuple[float, float, int | None]:
        """One optimizer step on one batch; returns (data loss, penalty, correct predictions)."""
        loss, pen, correct = self.compute_gradients(x, y)
        optimizer.step(self.grads)
        return loss, pen, correct

    def predict(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Outputs for many samples, in inference mode, batch by batch."""
        outs = [self.forward(x[i : i + batch_size], training=False) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0,) + self.output_shape, np.float32)

    def predict_proba(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities (softmax of the outputs)."""
        logits = self.predict(x, batch_size)
        probs = np.empty_like(logits)
        K.softmax_rows(logits, probs)
        return probs

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 1024,
                 return_outputs: bool = False):
        """Mean loss (without penalty) and, for classification, accuracy over a whole set.

        With ``return_outputs`` also returns the model's outputs for every sample: ``(result, outputs)``.
        """
        total, correct, n = 0.0, 0, len(x)
        outs = []
        if n == 0:
            result = {"loss": float("nan"), "accuracy": float("nan")}
            return (result, np.zeros((0,) + self.output_shape, np.float32)) if return_outputs else result
        for i in range(0, n, batch_size):
            out = self.forward(x[i : i + batch_size], training=False)
            loss, c = self.loss.value(out, y[i : i + batch_size])
            total += loss * len(out)
            correct += c or 0
            if return_outputs:
                outs.append(out.copy())
        result = {"loss": total / n}
        if self.is_classifier:
            result["accuracy"] = correct / n
        return (result, np.concatenate(outs)) if return_outputs else result

    @property
    def is_classifier(self) -> bool:
        """True when the loss is softmax cross-entropy on class labels."""
        return self.loss.name == "softmax_cross_entropy"

    # --- description -------------------------------------------------------------------------------------------

    def num_params(self) -> int:
        """Number of trainable scalars."""
        return int(sum(p.size for p in self.params))

    def summary(self) -> str:
        """A table of layers with output shapes and parameter counts."""
        rows = [("Layer", "Output shape", "Params")]
        rows.append(("Input", str((None,) + self.input_shape), "0"))
        for layer in self.layers:
            rows.append((layer.describe(), str((None,) + tuple(layer.output_shape)), f"{layer.num_params():,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        line = "-" * (sum(widths) + 4)
        out = [line]
        for j, r in enumerate(rows):
            out.append(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}")
            if j == 0:
                out.append(line)
        out.append(line)
        out.append(f"Total params: {self.num_params():,}   loss: {self.loss_name}"
                   + (f"   l1: {self.l1:g}" if self.l1 else "") + (f"   l2: {self.l2:g}" if self.l2 else ""))
        return "\n".join(out)

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this architecture (not the weights)."""
        return {
            "input_shape": list(self.input_shape),
            "loss": self.loss_name,
            "l1": self.l1,
            "l2": self.l2,
            "seed": self.seed,
            "layers": [layer.config() for layer in self.layers],
        }

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "Sequential":
        """Rebuild a model from :meth:`config` output (fresh weights)."""
        try:
            layers = [Layer.from_config(lc) for lc in cfg["layers"]]
            return cls(layers, tuple(cfg["input_shape"]), loss=cfg.get("loss", "softmax_cross_entropy"),
                       l1=cfg.get("l1", 0.0), l2=cfg.get("l2", 0.0), seed=cfg.get("seed", 0))
        except (KeyError, TypeError) as e:
            raise ModelError(f"invalid model description: {e}") from None

    # --- weights ---------------------------------------------------------------------------------------------------

    def named_arrays(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer by a stable name (``dense_0.W``, ``batchnorm_3.running_mean`` ...)."""
        out: dict[str, np.ndarray] = {}
        for layer in self.layers:
            for name, p, _ in layer.named_params():
                out[f"{layer.name}.{name}"] = p
            for name, b in layer.buffers.items():
                out[f"{layer.name}.{name}"] = b
        return out

    def get_weights(self) -> dict[str, np.ndarray]:
        """A copy of every parameter and buffer."""
        return {k: v.copy() for k, v in self.named_arrays().items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Copy weights in place (the arrays the optimizer holds stay the same objects)."""
        own = self.named_arrays()
        missing = sorted(set(own) - set(weights))
        extra = sorted(set(weights) - set(own))
        if missing or extra:
            raise ModelError(f"weights do not fit this model (missing: {missing[:3]}, unexpected: {extra[:3]})")
        for k, a in own.items():
            src = weights[k]
            if src.shape != a.shape:
                raise ModelError(f"weight {k} has shape {src.shape}, the model expects {a.shape}")
            a[...] = src
