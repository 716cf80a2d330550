"""Layers with explicit ``forward``/``backward`` that cache what the backward pass needs.

A layer owns its parameters (``params``) and, aligned with them, gradient buffers (``grads``) that ``backward``
overwrites. Optimizers never live inside a layer. Every array is float32 and C-contiguous; images are NHWC.

Interface every layer follows (conv layers and blocks in other modules too):

* ``build(input_shape, rng) -> output_shape`` (shapes without the batch dimension)
* ``forward(x, training) -> y``
* ``backward(dy, need_dx=True) -> dx`` (fills ``grads``; returns None when ``need_dx`` is False)
* ``config() -> dict`` and ``Layer.from_config(dict)``; ``buffers`` for non-trained state (running stats)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from tuinet.engine import kernels as K
from tuinet.engine.gemm import matmul, matmul_bias, relu_grad_matmul
from tuinet.errors import ModelError

LAYER_TYPES: dict[str, type["Layer"]] = {}


def register(cls: type["Layer"]) -> type["Layer"]:
    """Class decorator that makes a layer type loadable from its config."""
    LAYER_TYPES[cls.__name__] = cls
    return cls


def load_all_layers() -> None:
    """Register every layer type, model preset and spec token, the convolutional ones included.

    The convolutions, BatchNorm and residual blocks (their modules and about 60 kernels' dispatchers: 40-50 ms of
    a warm start) are imported when first asked for (a preset, token, TOML type or checkpoint layer that is not
    a dense one), not by ``import tuinet.engine``: the default run trains a dense model and never needs them.
    """
    import tuinet.engine.cnn_specs  # noqa: F401  (imports conv, norm and residual: registers their layers)


class Layer:
    """Base class for layers."""

    params: list[np.ndarray]
    grads: list[np.ndarray]
    param_names: ClassVar[tuple[str, ...]] = ()
    #: names of params that receive L1/L2 penalties (weights, never biases)
    penalized: ClassVar[tuple[str, ...]] = ()
    #: the layer's work is matrix products through :func:`tuinet.engine.gemm.matmul` (BLAS, or Numba's threads in
    #: the "numba" thread mode: the thread tuner tries both for a model of such layers)
    dense_products: ClassVar[bool] = False

    def __init__(self) -> None:
        self.params = []
        self.grads = []
        self.buffers: dict[str, np.ndarray] = {}
        self.input_shape: tuple[int, ...] = ()
        self.output_shape: tuple[int, ...] = ()
        self.name = type(self).__name__.lower()

    @property
    def kind(self) -> str:
        """The layer's type name as shown in summaries."""
        return type(self).__name__

    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
        """Allocate parameters for inputs of ``input_shape``; return the output shape."""
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(input_shape)
        return self.output_shape

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """Compute the layer's output for a batch."""
        raise NotImplementedError

    def backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """Fill ``grads`` from the output gradient and return the input gradient."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The JSON-serialisable description that rebuilds this layer."""
        return {"type": self.kind}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "Layer":
        """Rebuild a layer from :meth:`config` output."""
        kind = cfg.get("type")
        if kind not in LAYER_TYPES:
            load_all_layers()
        if kind not in LAYER_TYPES:
            raise ModelError(f"unknown layer type '{kind}'")
        args = {k: v for k, v in cfg.items() if k != "type"}
        try:
            return LAYER_TYPES[kind](**args)
        except TypeError as e:
            raise ModelError(f"bad options for layer {kind}: {e}") from None

    def num_params(self) -> int:
        """Number of trainable scalars."""
        return int(sum(p.size for p in self.params))

    def named_params(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(name, parameter, gradient) triples."""
        return list(zip(self.param_names, self.params, self.grads))

    def describe(self) -> str:
        """Short text for summaries, e.g. ``Dense(256)``."""
        return self.kind


def he_or_xavier(activation: str | None) -> str:
    """The initialization a following activation calls for: He for ReLU-like units, Xavier otherwise."""
    return "he" if activation in ("relu", "leaky_relu", "gelu") else "xavier"


def init_weights(shape: tuple[int, ...], fan_in: int, fan_out: int, scheme: str, rng: np.random.Generator):
    """He (normal, std sqrt(2/fan_in)) or Xavier/Glorot (uniform, limit sqrt(6/(fan_in+fan_out))) weights."""
    if scheme == "he":
        w = rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(2.0 / fan_in))
    elif scheme == "xavier":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-limit, limit, size=shape).astype(np.float32)
    else:
        raise ModelError(f"unknown initialization '{scheme}' (use he or xavier)")
    return np.ascontiguousarray(w, dtype=np.float32)


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1)


@register
class Dense(Layer):
    """Fully connected layer ``y = x @ W + b``.

    Args:
        units: number of outputs.
        init: ``he`` or ``xavier``; chosen by the model from the following activation when not given.
        use_bias: add a bias vector (True).
    """

    penalized = ("W",)
    dense_products = True

    def __init__(self, units: int, init: str | None = None, use_bias: bool = True):
        super().__init__()
        if int(units) < 1:
            raise ModelError(f"Dense needs at least 1 unit, got {units}")
        self.units = int(units)
        self.init = init
        self.use_bias = bool(use_bias)
        self._x: np.ndarray | None = None
        self._buffers: dict[str, np.ndarray] = {}  # reused work arrays of the fused Dense+ReLU path, by role

    def build(self, input_shape, rng):
        if len(input_shape) != 1:
            raise ModelError(f"Dense expects flat inputs, got shape {input_shape}; add a Flatten layer first")
        self.input_shape = tuple(input_shape)
        fan_in = int(input_shape[0])
        w = init_weights((fan_in, self.units), fan_in, self.units, self.init or "xavier", rng)
        self.params = [w, np.zeros(self.units, dtype=np.float32)] if self.use_bias else [w]
        self.grads = [np.zeros_like(p) for p in self.params]
        self.output_shape = (self.units,)
        return self.output_shape

    @property
    def param_names(self):  # type: ignore[override]
        return ("W", "b") if self.use_bias else ("W",)

    def forward(self, x, training):
        self._x = x
        if self.use_bias:
            return matmul_bias(x, self.params[0], self.params[1])
        return matmul(x, self.params[0])

    def backward(self, dy, need_dx=True):
        x = self._x
        matmul(x, dy, self.grads[0], trans_a=True)
        if self.use_bias:
            K.column_sum(dy, self.grads[1])
        if not need_dx:
            return None
        return matmul(dy, self.params[0], trans_b=True)

    # --- Dense followed by ReLU, fused (Sequential calls these for such pairs) -------------------------------

    def can_fuse(self, nxt) -> bool:
        """True when ``nxt`` is a ReLU that :meth:`forward_fused` can compute along with this layer."""
        return type(nxt) is ReLU

    def _buffer(self, role: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 work array kept between steps (one per role; a new one when the batch size changes)."""
        buf = self._buffers.get(role)
        if buf is None or buf.shape != shape:
            buf = self._buffers[role] = np.empty(shape, dtype=np.float32)
        return buf

    def forward_fused(self, x, training, relu: "ReLU"):
        """``relu(x @ W + b)``: the product, then the bias and the ReLU in one pass over it, in place.

        Both layers keep what their backward passes need (so :meth:`backward_fused` or the two layers' own
        ``backward`` can follow), and the numbers are the ones the two layers give one after the other. In
        training the output goes into an array reused every step (the next forward overwrites it, as the ReLU's
        ``output`` says); outside training each call returns a new array, so predictions can be kept.
        """
        self._x = x
        w = self.params[0]
        shape = (x.shape[0], self.units)
        y = self._buffer("y", shape) if training and x.dtype == np.float32 else np.empty(shape, dtype=x.dtype)
        matmul_bias(x, w, self.params[1] if self.use_bias else self._zero_bias(), y, relu=True)
        relu._cache = y
        return y

    def backward_fused(self, dy, relu: "ReLU", need_dx=True):
        """The ReLU's and this layer's backward passes, the ReLU's mask and the bias gradient in one pass."""
        y = relu._cache
        dz = self._buffer("dz", dy.shape) if dy.dtype == np.float32 else np.empty_like(dy)
        db = self.grads[1] if self.use_bias else np.empty(self.units, dtype=dy.dtype)
        relu_grad_matmul(self._x, dy, y, dz, db, self.grads[0], keep=need_dx)
        if not need_dx:
            return None
        return matmul(dz, self.params[0], trans_b=True)

    def _zero_bias(self) -> np.ndarray:
        z = self._buffers.get("zero_bias")
        if z is None or z.dtype != self.params[0].dtype:
            z = self._buffers["zero_bias"] = np.zeros(self.units, dtype=self.params[0].dtype)
        return z

    def config(self):
        return {"type": "Dense", "units": self.units, "init": self.init, "use_bias": self.use_bias}

    def describe(self):
        return f"Dense({self.units})"


@register
class Flatten(Layer):
    """Reshape each sample to a vector (a view, no copy)."""

    def build(self, input_shape, rng):
        self.input_shape = tuple(input_shape)
        self.output_shape = (int(np.prod(input_shape)),)
        return self.output_shape

    def forward(self, x, training):
        return x.reshape(x.shape[0], -1)

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        return dy.reshape((dy.shape[0],) + self.input_shape)


class Activation(Layer):
    """Base class for element-wise activations."""

    key: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self._cache: np.ndarray | None = None

    def config(self):
        return {"type": self.kind}


@register
class ReLU(Activation):
    """max(x, 0)."""

    key = "relu"

    @property
    def output(self) -> np.ndarray | None:
        """The output of the last forward pass (None before the first); read it, do not write to it."""
        return self._cache

    def forward(self, x, training):
        y = np.empty_like(x)
        K.relu_forward(_flat(x), _flat(y))
        self._cache = y
        return y

    def backward(self, dy, need_dx=True):
        dx = np.empty_like(dy)
        K.relu_backward(_flat(dy), _flat(self._cache), _flat(dx))
        return dx


@register
class LeakyReLU(Activation):
    """x for x > 0, slope * x otherwise.

    Args:
        slope: the negative-side slope (0.01, as torch).
    """

    key = "leaky_relu"

    def __init__(self, slope: float = 0.01):
        super().__init__()
        self.slope = float(slope)

    def forward(self, x, training):
        y = np.empty_like(x)
        K.leaky_relu_forward(_flat(x), _flat(y), np.float32(self.slope))
        self._cache = x
        return y

    def backward(self, dy, need_dx=True):
        dx = np.empty_like(dy)
        K.leaky_relu_backward(_flat(dy), _flat(self._cache), _flat(dx), np.float32(self.slope))
        return dx

    def config(self):
        return {"type": "LeakyReLU", "slope": self.slope}


@register
class Sigmoid(Activation):
    """1 / (1 + exp(-x)), computed without overflow."""

    key = "sigmoid"

    def forward(self, x, training):
        y = np.empty_like(x)
        K.sigmoid_forward(_flat(x), _flat(y))
        self._cache = y
        return y

    def backward(self, dy, need_dx=True):
        dx = np.empty_like(dy)
        K.sigmoid_backward(_flat(dy), _flat(self._cache), _flat(dx))
        return dx


@register
class Tanh(Activation):
    """Hyperbolic tangent."""

    key = "tanh"

    def forward(self, x, training):
        y = np.empty_like(x)
        K.tanh_forward(_flat(x), _flat(y))
        self._cache = y
        return y

    def backward(self, dy, need_dx=True):
        dx = np.empty_like(dy)
        K.tanh_backward(_flat(dy), _flat(self._cache), _flat(dx))
        return dx


@register
class GELU(Activation):
    """Exact Gaussian error linear unit, x * Phi(x) (torch.nn.GELU's default)."""

    key = "gelu"

    def forward(self, x, training):
        y = np.empty_like(x)
        K.gelu_forward(_flat(x), _flat(y))
        self._cache = x
        return y

    def backward(self, dy, need_dx=True):
        dx = np.empty_like(dy)
        K.gelu_backward(_flat(dy), _flat(self._cache), _flat(dx))
        return dx


@register
class Linear(Activation):
    """The identity (no activation)."""

    key = "linear"

    def forward(self, x, training):
        return x

    def backward(self, dy, need_dx=True):
        return dy


ACTIVATIONS: dict[str, type[Activation]] = {
    cls.key: cls for cls in (ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Linear)
}


def make_activation(name: str) -> Activation:
    """An activation layer by name: relu, leaky_relu, sigmoid, tanh, gelu, linear."""
    key = name.lower().replace("-", "_")
    if key == "leakyrelu":
        key = "leaky_relu"
    if key not in ACTIVATIONS:
        raise ModelError(f"unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[key]()


@register
class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability ``rate`` and scale the rest by 1/(1-rate).

    Each training pass draws one 64-bit key from a seeded NumPy generator owned by the model, and the mask is the
    Philox4x32-10 stream under that key (:func:`tuinet.engine.kernels.dropout_forward`, in the same pass as the
    product), so runs and resumes are reproducible: the generator's state is in every checkpoint.

    Args:
        rate: probability of dropping a unit, in [0, 1).
    """

    def __init__(self, rate: float = 0.5):
        super().__init__()
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ModelError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.rng: np.random.Generator = np.random.default_rng(0)
        self._mask: np.ndarray | None = None

    def forward(self, x, training):
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        key = np.uint64(self.rng.bit_generator.random_raw())
        keep = 1.0 - self.rate
        y = np.empty_like(x)
        self._mask = np.empty_like(x)
        K.dropout_forward(_flat(x), key, np.uint64(min(round(keep * 2.0**32), 2**32)), x.dtype.type(1.0 / keep),
                          _flat(y), _flat(self._mask))
        return y

    def backward(self, dy, need_dx=True):
        if self._mask is None:
            return dy
        dx = np.empty_like(dy)
        K.multiply(_flat(dy), _flat(self._mask), _flat(dx))
        return dx

    def config(self):
        return {"type": "Dropout", "rate": self.rate}

    def describe(self):
        return f"Dropout({self.rate:g})"
