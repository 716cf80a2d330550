"""Compact-spec tokens and presets for convolutional models (registered into :mod:`tuinet.engine.spec`).

Tokens (case-insensitive, comma-separated, e.g. ``conv5x5x24,maxpool2,relu,conv3x3x32,maxpool2,relu,dense256``):

* ``conv{KH}x{KW}x{F}`` — a KHxKW convolution with F filters (``conv5x5x24``); also ``conv{F}k{K}``
  (``conv24k5``). Optional suffixes: ``s{S}`` stride, ``p{same|valid|N}`` padding (default valid, as
  PyTorch), ``nb`` no bias — e.g. ``conv3x3x32s2psame``, ``conv32k3p1``.
* ``maxpool{K}`` / ``avgpool{K}`` with optional ``s{S}`` (``maxpool3s2``); ``gap`` global average pooling.
* ``bn`` (or ``batchnorm``) batch normalization; ``res{F}`` a residual block with F filters, ``res{F}s2`` with
  stride 2 (a projection shortcut is added when the shape changes); ``flatten``.
"""

from __future__ import annotations

import tuinet.engine.conv  # noqa: F401  (registers Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool)
import tuinet.engine.norm  # noqa: F401  (registers BatchNorm)
import tuinet.engine.residual  # noqa: F401  (registers ResidualBlock)
from tuinet.engine.spec import LayerCfg, preset, token

_CONV_SUFFIX = r"(?:s(\d+))?(?:p(same|valid|\d+))?(nb)?"


def _conv_cfg(filters: int, kh: int, kw: int, stride, padding, nobias) -> LayerCfg:
    pad: str | int = "valid"
    if padding:
        pad = int(padding) if padding.isdigit() else padding.lower()
    return {"type": "Conv2D", "filters": filters, "kernel_size": [kh, kw], "stride": int(stride or 1),
            "padding": pad, "use_bias": not nobias}


@token(r"conv[:]?(\d+)x(\d+)x(\d+)" + _CONV_SUFFIX)
def _conv_hwf_token(m):
    return [_conv_cfg(int(m.group(3)), int(m.group(1)), int(m.group(2)), m.group(4), m.group(5), m.group(6))]


@token(r"conv[:]?(\d+)k(\d+)" + _CONV_SUFFIX)
def _conv_fk_token(m):
    k = int(m.group(2))
    return [_conv_cfg(int(m.group(1)), k, k, m.group(3), m.group(4), m.group(5))]


@token(r"(max|avg)pool[:]?(\d+)(?:s(\d+))?")
def _pool_token(m):
    kind = "MaxPool2D" if m.group(1).lower() == "max" else "AvgPool2D"
    k = int(m.group(2))
    s = int(m.group(3)) if m.group(3) else k
    return [{"type": kind, "pool_size": [k, k], "stride": [s, s]}]


@token(r"gap|globalavgpool")
def _gap_token(m):
    return [{"type": "GlobalAvgPool"}]


@token(r"bn|batchnorm")
def _bn_token(m):
    return [{"type": "BatchNorm"}]


@token(r"res[:]?(\d+)(?:s(\d+))?")
def _res_token(m):
    return [{"type": "ResidualBlock", "filters": int(m.group(1)), "stride": int(m.group(2) or 1)}]


def _act(activation: str) -> LayerCfg:
    from tuinet.engine.layers import make_activation

    return {"type": make_activation(activation or "relu").kind}


def _drop(dropout: float) -> list[LayerCfg]:
    return [{"type": "Dropout", "rate": dropout}] if dropout else []


@preset("lenet", "LeNet-5: conv5x5x6 (same), avgpool2, conv5x5x16, avgpool2, dense 120-84 (ReLU)")
def _lenet(activation: str, dropout: float) -> list[LayerCfg]:
    a = _act(activation)
    return [
        _conv_cfg(6, 5, 5, 1, "same", False), dict(a), {"type": "AvgPool2D", "pool_size": [2, 2], "stride": [2, 2]},
        _conv_cfg(16, 5, 5, 1, "valid", False), dict(a), {"type": "AvgPool2D", "pool_size": [2, 2], "stride": [2, 2]},
        {"type": "Flatten"}, {"type": "Dense", "units": 120}, dict(a), *_drop(dropout),
        {"type": "Dense", "units": 84}, dict(a), *_drop(dropout),
    ]


@preset("cnn", "conv5x5x24, maxpool2, ReLU, conv3x3x32, maxpool2, ReLU, dense 256 ReLU (fast MNIST recipe)")
def _cnn(activation: str, dropout: float) -> list[LayerCfg]:
    a = _act(activation)
    return [
        _conv_cfg(24, 5, 5, 1, "valid", False), {"type": "MaxPool2D", "pool_size": [2, 2], "stride": [2, 2]},
        dict(a),
        _conv_cfg(32, 3, 3, 1, "valid", False), {"type": "MaxPool2D", "pool_size": [2, 2], "stride": [2, 2]},
        dict(a),
        {"type": "Flatten"}, {"type": "Dense", "units": 256}, dict(a), *_drop(dropout),
    ]


@preset("resnet", "small ResNet: conv3x3x16+BN+ReLU, residual blocks 16, 32/2, 64/2, global average pool")
def _resnet(activation: str, dropout: float) -> list[LayerCfg]:
    return [
        _conv_cfg(16, 3, 3, 1, "same", True), {"type": "BatchNorm"}, _act(activation),
        {"type": "ResidualBlock", "filters": 16, "stride": 1},
        {"type": "ResidualBlock", "filters": 32, "stride": 2},
        {"type": "ResidualBlock", "filters": 64, "stride": 2},
        {"type": "GlobalAvgPool"}, *_drop(dropout),
    ]
