"""Floating-point work of a training step, counted from the model's shapes (what "GFLOP/s" divides).

Only the multiply-adds of dense and convolution layers count (2 FLOP each), as in every published FLOP figure:
forward ``x @ W``, backward ``dy @ W.T`` (skipped for the first trainable layer, which needs no input gradient)
and ``x.T @ dy``. Batch norm, activations, pooling and the optimizer are memory-bound: their cost shows in
milliseconds, not in FLOP/s. The ``mlp`` preset (784-256-128-10) does 1.01 MFLOP per training sample.
"""

from __future__ import annotations

def forward_macs(layer) -> int:
    """Multiply-adds of one sample through ``layer`` forward (0 for layers without weights)."""
    kind = type(layer).__name__
    if kind == "Dense":
        return int(layer.params[0].size)  # in x out
    if kind == "Conv2D":
        oh, ow, f = layer.output_shape
        kh, kw = layer.kernel_size
        return int(oh * ow * f * kh * kw * layer.input_shape[2])
    subs = getattr(layer, "sublayers", None)
    if subs:
        return sum(forward_macs(s) for s in subs.values())
    return 0


def _first_weight_macs(layer) -> int:
    """Multiply-adds of the layers inside ``layer`` that read its input directly (no input gradient when first)."""
    subs = getattr(layer, "sublayers", None)
    if subs:
        return sum(forward_macs(subs[k]) for k in ("conv1", "proj") if k in subs)
    return forward_macs(layer)


def training_flops(layer, first: bool = False) -> int:
    """FLOP of one sample's forward and backward pass through ``layer``; ``first``: no input gradient."""
    macs = forward_macs(layer)
    return 2 * (3 * macs - (_first_weight_macs(layer) if first else 0))


def model_training_flops(model) -> int:
    """FLOP of one sample's training step through ``model`` (forward and backward of every layer)."""
    return sum(training_flops(layer, i == model.first_trainable) for i, layer in enumerate(model.layers))
