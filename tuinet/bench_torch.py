"""Build the PyTorch equivalent of a tuinet model config (for side-by-side benchmarks; PyTorch is optional)."""

from __future__ import annotations

from typing import Any


def torch_model(config: dict[str, Any]):
    """A ``torch.nn.Sequential`` with the same layers as a tuinet model config (inputs NCHW for images)."""
    import torch
    from torch import nn

    shape = tuple(config["input_shape"])
    dense_only = {"Dense", "Flatten", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Linear", "Dropout"}
    if any(lc["type"] not in dense_only for lc in config["layers"]):
        from tuinet.bench_conv import torch_cnn_model  # conv, pooling, batch norm, residual blocks

        return torch_cnn_model(config["layers"], shape)
    layers = []
    features = int(torch.tensor(shape).prod()) if len(shape) == 1 else None
    for lc in config["layers"]:
        t = lc["type"]
        if t == "Dense":
            if features is None:
                raise ValueError("Dense before Flatten")
            layers.append(nn.Linear(features, lc["units"]))
            features = lc["units"]
        elif t == "Flatten":
            layers.append(nn.Flatten())
            with torch.no_grad():
                probe = nn.Sequential(*layers)(torch.zeros((1, shape[-1]) + shape[:-1]) if len(shape) == 3
                                               else torch.zeros((1,) + shape))
            features = int(probe.shape[1])
        elif t == "ReLU":
            layers.append(nn.ReLU())
        elif t == "LeakyReLU":
            layers.append(nn.LeakyReLU(lc.get("slope", 0.01)))
        elif t == "Sigmoid":
            layers.append(nn.Sigmoid())
        elif t == "Tanh":
            layers.append(nn.Tanh())
        elif t == "GELU":
            layers.append(nn.GELU())
        elif t == "Linear":
            continue
        elif t == "Dropout":
            layers.append(nn.Dropout(lc["rate"]))
    return nn.Sequential(*layers)
