"""Per-layer forward+backward timings of a convolutional model, tuinet's and its PyTorch twin's."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from tuinet.bench.torch_models import torch_cnn_model
from tuinet.engine.threads import cores


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(statistics.median(times))


def conv_layer_times(model, batch_size: int = 256, repeats: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """Median forward+backward milliseconds of each layer of a tuinet model on one random batch.

    Returns one dict per layer: ``name``, ``layer`` (its description), ``forward_ms``, ``backward_ms``,
    ``forward_backward_ms``. Call :func:`configure_threads` first (as training does).
    """
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size,) + model.input_shape, dtype=np.float32)
    first = model.first_trainable
    rows = []
    for i, layer in enumerate(model.layers):
        y = layer.forward(x, True)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        need_dx = i > first
        layer.backward(dy, need_dx)  # warm up (compiles on first use)
        fwd = _median_ms(lambda: layer.forward(x, True), repeats)

        def fb():
            layer.forward(x, True)
            layer.backward(dy, need_dx)

        total = _median_ms(fb, repeats)
        rows.append({"name": layer.name, "layer": layer.describe(), "forward_ms": fwd,
                     "backward_ms": max(total - fwd, 0.0), "forward_backward_ms": total})
        x = y
    return rows


def torch_conv_layer_times(model, batch_size: int = 256, repeats: int = 10, seed: int = 0,
                           threads: int | None = None) -> list[dict[str, Any]]:
    """PyTorch's median forward+backward ms for the equivalent of each layer of a tuinet model.

    Same rows as :func:`conv_layer_times` (``name``, ``layer``, ``forward_ms``, ``backward_ms``,
    ``forward_backward_ms``), in the same order; the first trainable layer computes no input gradient.
    """
    import torch

    torch.set_num_threads(threads or cores())
    torch.manual_seed(seed)
    shape = model.input_shape
    x = torch.rand((batch_size,) + (tuple(shape[2:]) + tuple(shape[:2]) if len(shape) == 3 else tuple(shape)))
    first = model.first_trainable
    rows = []
    for i, layer in enumerate(model.layers):
        mod = torch_cnn_model([layer.config()], shape)
        xin = x.detach().requires_grad_(i > first)
        y = mod(xin)
        dy = torch.randn_like(y)

        def fwd():
            with torch.no_grad():
                mod(xin)

        def fb():
            out = mod(xin)
            if out.requires_grad:
                out.backward(dy)

        fb()
        f_ms = _median_ms(fwd, repeats)
        t_ms = _median_ms(fb, repeats)
        rows.append({"name": layer.name, "layer": layer.describe(), "forward_ms": f_ms,
                     "backward_ms": max(t_ms - f_ms, 0.0), "forward_backward_ms": t_ms})
        x = y.detach()
        shape = layer.output_shape
    return rows
