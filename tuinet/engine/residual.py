"""The residual block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)), ResNet's basic block.

The shortcut is the identity when the block keeps the shape, and a 1x1 convolution with the block's stride
followed by batch normalization (a projection) when the stride or the channel count changes. The skip path
gives the gradient a route around the two convolutions, which is what lets deep stacks of blocks train.
"""

from __future__ import annotations

from typing import ClassVar

from tuinet.engine.conv import Conv2D
from tuinet.engine.layers import Layer, ReLU, register
from tuinet.engine.norm import BatchNorm
from tuinet.engine.spec import token
from tuinet.errors import ModelError


@register
class ResidualBlock(Layer):
    """Two 3x3 convolutions with batch normalization and a skip connection.

    Args:
        filters: output channels of both convolutions.
        stride: stride of the first convolution (and of the projection); 2 halves the image.
        kernel_size: window of both convolutions (3).
        projection: force a 1x1 projection shortcut (True), forbid it (False), or decide from the shapes (None).

    Its sub-layers (``sublayers``) own the parameters; the block exposes them flat in ``params``/``grads``
    under names like ``conv1.W`` and their running statistics in ``buffers``.
    """

    numba_parallel: ClassVar[bool] = True
    #: the first-pass sums of the BatchNorm before the block, gathered by the last backward pass (``input_bn``)
    input_bn_sums: tuple | None = None
    #: its convolutions use the conv kernels' extended variant; a model holding it runs all its convolutions there
    uses_conv_extras: ClassVar[bool] = True

    def __init__(self, filters: int, stride: int = 1, kernel_size: int = 3, projection: bool | None = None):
        super().__init__()
        if int(filters) < 1:
            raise ModelError(f"ResidualBlock needs at least 1 filter, got {filters}")
        self.filters = int(filters)
        self.stride = int(stride)
        self.kernel_size = int(kernel_size)
        if self.stride < 1 or self.kernel_size < 1:
            raise ModelError(f"ResidualBlock stride and kernel_size must be >= 1 (got {stride}, {kernel_size})")
        self.projection = projection
        self.sublayers: dict[str, Layer] = {}
        self._param_names: tuple[str, ...] = ()
        self.penalized: tuple[str, ...] = ()  # type: ignore[misc]

    @property
    def param_names(self):  # type: ignore[override]
        return self._param_names

    def build(self, input_shape, rng):
        if len(input_shape) != 3:
            raise ModelError(f"ResidualBlock expects (height, width, channels) inputs, got {tuple(input_shape)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        f, k, s = self.filters, self.kernel_size, self.stride
        subs: dict[str, Layer] = {
            "conv1": Conv2D(f, k, s, padding="same", use_bias=False),
            "bn1": BatchNorm(),
            "relu1": ReLU(),
            "conv2": Conv2D(f, k, 1, padding="same", use_bias=False),
            "bn2": BatchNorm(),
        }
        project = self.projection
        if project is None:
            project = s != 1 or self.input_shape[2] != f
        if project:
            subs["proj"] = Conv2D(f, 1, s, padding="valid", use_bias=False)
            subs["proj_bn"] = BatchNorm()
        shape = self.input_shape
        for key in ("conv1", "bn1", "relu1", "conv2", "bn2"):
            shape = subs[key].build(shape, rng)
        if project:
            pshape = subs["proj_bn"].build(subs["proj"].build(self.input_shape, rng), rng)
            if pshape != shape:
                raise ModelError(f"ResidualBlock projection gives {pshape}, the main path {shape}")
        elif shape != self.input_shape:
            raise ModelError(f"ResidualBlock without projection changes the shape {self.input_shape} -> {shape}")
        self.has_projection = bool(project)
        for key, layer in subs.items():
            layer.name = key
            if isinstance(layer, Conv2D):
                layer.kernel_ext = True
        self.sublayers = subs
        self.params, self.grads, names, pen = [], [], [], []
        self.buffers = {}
        for key, layer in subs.items():
            for name, p, g in layer.named_params():
                names.append(f"{key}.{name}")
                self.params.append(p)
                self.grads.append(g)
                if name in layer.penalized:
                    pen.append(f"{key}.{name}")
            for name, b in layer.buffers.items():
                self.buffers[f"{key}.{name}"] = b
        self._param_names = tuple(names)
        self.penalized = tuple(pen)
        self.output_shape = shape
        return self.output_shape

    def forward(self, x, training):
        s = self.sublayers
        if not training:
            # bn1 + relu1 and bn2 + skip add + final ReLU run fused, each in the pass that writes BN's output
            a1 = s["bn1"].forward_act(s["conv1"].forward(x, False), False, relu=True)
            h = s["conv2"].forward(a1, False)
            skip = s["proj_bn"].forward(s["proj"].forward(x, False), False) if self.has_projection else x
            return s["bn2"].forward_act(h, False, relu=True, skip=skip)
        # Training: each convolution gathers its BatchNorm's batch statistics while its output is in cache, and
        # bn1 + relu1 are applied by conv2 as it copies each sample into its padded buffer, so their output is
        # never written (conv2 keeps conv1's output and the transform; bn1's backward pass needs only that)
        hp = None
        if self.has_projection and s["conv1"].takes_projection(s["proj"]):  # the projection in conv1's pass
            h1, hp = s["conv1"].forward(x, True, stats=True, proj=s["proj"])
        else:
            h1 = s["conv1"].forward(x, True, stats=True)
        s["bn1"].forward_act(h1, True, relu=True, stats=s["conv1"].stats, store=False)
        h = s["conv2"].forward(h1, True, stats=True, pre=s["bn1"].channel_transform())
        if self.has_projection:  # proj_bn's output is not stored either: bn2 normalizes hp as it adds it
            if hp is None:
                hp = s["proj"].forward(x, True, stats=True)
            s["proj_bn"].forward_act(hp, True, stats=s["proj"].stats, store=False)
            y = s["bn2"].forward_act(h, True, relu=True, skip=hp, stats=s["conv2"].stats, skip_bn=s["proj_bn"])
        else:
            y = s["bn2"].forward_act(h, True, relu=True, skip=x, stats=s["conv2"].stats)
        self._y = y
        return y

    def backward(self, dy, need_dx=True, input_bn=None):
        """The block's backward pass. ``input_bn``: the BatchNorm + ReLU (mode 1, the mask from its input) whose
        output is this block's input; where conv1 computes the input gradient by Winograd, it gathers that
        BatchNorm's first-pass sums as it writes it, and ``input_bn_sums`` holds them (else None) for the
        BatchNorm's backward pass (``sums``)."""
        s = self.sublayers
        self.input_bn_sums = None
        mask = s["bn2"].skip_mask()
        # the projection's and proj_bn's backward passes made by conv1's, sample by sample as it reads the same
        # input: their input gradients are never written
        proj_in_conv1 = self.has_projection and need_dx and s["conv1"].takes_projection(s["proj"])
        # the skip path's gradient (dy through the final ReLU's mask) masked where it is read (by conv1), instead
        # of written masked by bn2 and read back; with a projection, bn2 gathers proj_bn's backward sums too
        masked = need_dx and mask is not None and (proj_in_conv1 or (not self.has_projection
                                                                     and s["conv1"].takes_masked_add()))
        target = s["proj_bn"].sums_target() if masked and proj_in_conv1 else None
        h, d = s["bn2"].backward_act(dy, self._y, True, keep_masked=True, mask_only=masked, skip_sums=target)
        # conv2's input gradient is bn1 + relu1's output gradient: conv2 gathers bn1's backward sums as it writes it
        h = s["conv2"].backward(h, True, bn=s["bn1"])
        # a direct conv1 makes bn1 + relu1's input gradient itself, sample by sample as it uses it (never written),
        # from the sums conv2 gathered; else bn1's own pass writes it
        fused = {}
        if s["conv1"].takes_batchnorm(s["bn1"]):
            fused = {"bn_relu": s["bn1"], "bn_sums": s["conv2"].bn_sums}
        else:
            h, _ = s["bn1"].backward_act(h, None, True, relu=True, sums=s["conv2"].bn_sums)
        if proj_in_conv1:
            extra = (mask, target[-2:]) if masked else ()
            return s["conv1"].backward(h, True, proj=(s["proj"], dy if masked else d, s["proj_bn"]) + extra, **fused)
        skip_mask = None
        if self.has_projection:
            dskip = s["proj"].backward(s["proj_bn"].backward(d, True), need_dx)
        elif masked:  # (needs need_dx) bn2 wrote no masked skip gradient: conv1 masks dy as it adds it
            dskip, skip_mask = dy, mask
        else:
            dskip = d
        # the two paths' input gradients summed sample by sample inside conv1's backward pass, while in cache
        dx = s["conv1"].backward(h, need_dx, dx_add=dskip if need_dx else None, dx_add_mask=skip_mask,
                                 bn=input_bn if need_dx else None, **fused)
        self.input_bn_sums = s["conv1"].bn_sums if input_bn is not None and need_dx else None
        return dx

    def config(self):
        return {"type": "ResidualBlock", "filters": self.filters, "stride": self.stride,
                "kernel_size": self.kernel_size, "projection": self.projection}

    def describe(self):
        extra = f", s{self.stride}" if self.stride != 1 else ""
        proj = ", proj" if getattr(self, "has_projection", False) else ""
        return f"ResidualBlock({self.filters}{extra}{proj})"


@register
class DenseResidual(Layer):
    """A dense layer with a skip connection: ``y = x + act(x @ W + b)``, the input's width kept.

    The identity path carries the gradient past the layer unchanged, so a deep stack of them trains where the same
    stack without skips (say of sigmoids) loses its gradient before the first layers (``tuinet learn vanishing``).

    Args:
        units: the width (must equal the input's).
        activation: the activation inside the block (``relu``, ``sigmoid``, ``tanh``, ...).
    """

    dense_products: ClassVar[bool] = True  # (its inner Dense's)

    def __init__(self, units: int, activation: str = "relu"):
        super().__init__()
        from tuinet.engine.layers import Dense, he_or_xavier, make_activation

        self.units = int(units)
        self.activation = str(activation)
        self.act = make_activation(self.activation)
        self.dense = Dense(self.units, init=he_or_xavier(self.act.key))

    @property
    def param_names(self):  # type: ignore[override]
        return self.dense.param_names

    @property
    def penalized(self):  # type: ignore[override]
        return self.dense.penalized

    def build(self, input_shape, rng):
        if tuple(input_shape) != (self.units,):
            raise ModelError(f"a skip-connected dense layer of {self.units} units needs inputs of that width, got "
                             f"{tuple(input_shape)}; put a dense{self.units} layer before it")
        self.input_shape = self.output_shape = (self.units,)
        self.act.build(self.dense.build(input_shape, rng), rng)
        self.params, self.grads = self.dense.params, self.dense.grads
        return self.output_shape

    def forward(self, x, training):
        return x + self.act.forward(self.dense.forward(x, training), training)

    def backward(self, dy, need_dx=True):
        dx = self.dense.backward(self.act.backward(dy, True), need_dx)
        return None if dx is None else dx + dy

    def config(self):
        return {"type": "DenseResidual", "units": self.units, "activation": self.activation}

    def describe(self):
        return f"Skip(Dense({self.units}) {self.act.kind})"


@token(r"skip[:]?(\d+)(relu|leaky_?relu|sigmoid|tanh|gelu|linear)?")
def _skip_token(m):
    return [{"type": "DenseResidual", "units": int(m.group(1)), "activation": (m.group(2) or "relu").lower()}]
