"""PyTorch twins of tuinet models, for benchmarks that time both on the same CPU (PyTorch is optional)."""

from __future__ import annotations

from typing import Any

import numpy as np


def torch_available() -> bool:
    """True when PyTorch can be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_threads(threads: int) -> None:
    """PyTorch's settings for a timing beside tuinet: ``threads`` threads, and subnormal floats flushed to zero as
    tuinet's training threads flush them (:mod:`tuinet.engine.fpmode`). Without it, the ``mlp`` benchmark's Adam
    state went subnormal after about 600 steps on its random batches (156k of its elements) and PyTorch fell from
    134k to 89-93k samples/s at batch 256, which a median of later rounds then read as tuinet's lead."""
    import torch

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


def torch_cnn_model(layer_configs: list[dict[str, Any]], input_shape: tuple[int, ...]):
    """The PyTorch ``nn.Sequential`` equivalent of tuinet layer configs (``model.config()["layers"]``).

    It takes NCHW input. Flatten first moves channels last, so flattened features are in tuinet's NHWC order
    (weights can be copied across with :func:`copy_weights_to_torch`). Asymmetric ``same`` padding uses
    ``nn.ZeroPad2d`` as TensorFlow-style padding does.
    """
    import torch
    from torch import nn

    from tuinet.engine.conv import conv_geometry
    from tuinet.engine.layers import Layer

    class ToNHWC(nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 3, 1)

    class Residual(nn.Module):
        def __init__(self, block):
            super().__init__()
            s = block.sublayers
            self.main = nn.Sequential(_conv(s["conv1"], block.input_shape), nn.BatchNorm2d(block.filters), nn.ReLU(),
                                      _conv(s["conv2"], s["conv2"].input_shape), nn.BatchNorm2d(block.filters))
            self.proj = (nn.Sequential(_conv(s["proj"], block.input_shape), nn.BatchNorm2d(block.filters))
                         if block.has_projection else None)

        def forward(self, x):
            skip = self.proj(x) if self.proj is not None else x
            return torch.relu(self.main(x) + skip)

    def _conv(layer, in_shape):
        h, w, c = in_shape
        (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
        _, pt, pb = conv_geometry(h, kh, sh, layer.padding)
        _, pl, pr = conv_geometry(w, kw, sw, layer.padding)
        if pt == pb and pl == pr:
            return nn.Conv2d(c, layer.filters, (kh, kw), (sh, sw), (pt, pl), bias=layer.use_bias)
        return nn.Sequential(nn.ZeroPad2d((pl, pr, pt, pb)),
                             nn.Conv2d(c, layer.filters, (kh, kw), (sh, sw), 0, bias=layer.use_bias))

    acts = {"ReLU": nn.ReLU, "Tanh": nn.Tanh, "Sigmoid": nn.Sigmoid, "GELU": nn.GELU, "Linear": nn.Identity}
    mods = []
    shape = tuple(input_shape)
    rng = np.random.default_rng(0)
    for cfg in layer_configs:
        layer = Layer.from_config(cfg)
        out_shape = layer.build(shape, rng)
        kind = cfg["type"]
        if kind == "Conv2D":
            mods.append(_conv(layer, shape))
        elif kind == "MaxPool2D":
            mods.append(nn.MaxPool2d(tuple(layer.pool_size), tuple(layer.stride)))
        elif kind == "AvgPool2D":
            mods.append(nn.AvgPool2d(tuple(layer.pool_size), tuple(layer.stride)))
        elif kind == "GlobalAvgPool":
            mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        elif kind == "BatchNorm":
            bn = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
            mods.append(bn(shape[-1], eps=layer.eps, momentum=layer.momentum))
        elif kind == "ResidualBlock":
            mods.append(Residual(layer))
        elif kind == "Flatten":
            mods += ([ToNHWC()] if len(shape) == 3 else []) + [nn.Flatten()]
        elif kind == "Dense":
            mods.append(nn.Linear(shape[0], layer.units, bias=layer.use_bias))
        elif kind == "Dropout":
            mods.append(nn.Dropout(layer.rate))
        elif kind == "LeakyReLU":
            mods.append(nn.LeakyReLU(layer.slope))
        elif kind in acts:
            mods.append(acts[kind]())
        else:
            raise ValueError(f"no PyTorch equivalent for layer type {kind}")
        shape = out_shape
    return nn.Sequential(*mods)


def copy_weights_to_torch(model, tmodel) -> None:
    """Copy a tuinet model's parameters and BN running statistics into its :func:`torch_cnn_model` twin."""
    import torch

    ours = []
    for layer in model.layers:
        subs = list(layer.sublayers.values()) if hasattr(layer, "sublayers") else [layer]
        ours += subs
    params = [(lay, name, p) for lay in ours for name, p, _ in lay.named_params()]
    tparams = [p for m in tmodel.modules() if not list(m.children()) for p in m.parameters(recurse=False)]
    if len(params) != len(tparams):
        raise ValueError(f"{len(params)} tuinet parameters vs {len(tparams)} in the PyTorch model")
    with torch.no_grad():
        for (lay, name, p), tp in zip(params, tparams):
            a = p
            if p.ndim == 4:  # (KH, KW, Cin, Cout) -> (Cout, Cin, KH, KW)
                a = p.transpose(3, 2, 0, 1)
            elif p.ndim == 2:  # Dense (in, out) -> Linear (out, in)
                a = p.T
            tp.copy_(torch.from_numpy(np.ascontiguousarray(a)))
        bns = [m for m in tmodel.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        ours_bn = [lay for lay in ours if lay.buffers]
        for lay, m in zip(ours_bn, bns):
            m.running_mean.copy_(torch.from_numpy(lay.buffers["running_mean"]))
            m.running_var.copy_(torch.from_numpy(lay.buffers["running_var"]))
