"""Per-layer forward+backward timings of a convolutional model, tuinet's and its PyTorch twin's."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from tuinet.bench.torch_models import torch_cnn_model, torch_threads
from tuinet.engine.threads import configure_threads, cores


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(statistics.median(times))


def _groups(model, fused: bool) -> list[tuple[int, int]]:
    """(first, last + 1) layer indices of each timed unit: a fused pair or triple (``fused``) or one layer."""
    groups = model.fused_groups if fused else {}
    out, i = [], 0
    while i < len(model.layers):
        n = groups.get(i, 1)
        out.append((i, i + n))
        i += n
    return out


def _row(model, i: int, j: int, fwd: float, total: float) -> list[dict[str, Any]]:
    """The rows of layers i..j-1 timed as one unit: the time in the first, the others marked ``fused``."""
    layers = model.layers[i:j]
    rows = [{"name": "+".join(lay.name for lay in layers), "layer": " + ".join(lay.describe() for lay in layers),
             "forward_ms": fwd, "backward_ms": max(total - fwd, 0.0), "forward_backward_ms": total}]
    rows += [{"name": lay.name, "layer": lay.describe(), "forward_ms": 0.0, "backward_ms": 0.0,
              "forward_backward_ms": 0.0, "fused": True} for lay in layers[1:]]
    return rows


def conv_layer_times(model, batch_size: int = 256, repeats: int = 10, seed: int = 0,
                     fused: bool = False, mode: str | None = None) -> list[dict[str, Any]]:
    """Median forward+backward milliseconds of each layer of a tuinet model on one random batch.

    Returns one dict per layer: ``name``, ``layer`` (its description), ``forward_ms``, ``backward_ms``,
    ``forward_backward_ms``. With ``fused``, the pairs and triples the model runs fused
    (:attr:`Sequential.fused_groups`) are timed as one unit, as a training step
    runs them: the unit's time is in its first layer's row (named ``a+b`` or ``a+b+c``), the others' rows have
    0 ms and ``fused: True``. The cores go where a training step of this model
    gives them (:func:`configure_threads` with ``mode``, by default the model's own mode), whatever the calling
    process set before: timed in another mode (BLAS on every core, Numba on one), a convolution runs on one core.
    """
    configure_threads(model, mode)
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size,) + model.input_shape, dtype=np.float32)
    first = model.first_trainable
    rows: list[dict[str, Any]] = []
    for i, j in _groups(model, fused):
        layer = model.layers[i]
        if j - i > 1:
            rest = model.layers[i + 1:j]

            def forward(x=x, layer=layer, rest=rest):
                return layer.forward_fused(x, True, *rest)

            def backward(dy, need_dx, layer=layer, rest=rest):
                return layer.backward_fused(dy, *rest, need_dx=need_dx)
        else:
            def forward(x=x, layer=layer):
                return layer.forward(x, True)

            def backward(dy, need_dx, layer=layer):
                return layer.backward(dy, need_dx)
        y = forward()
        dy = rng.standard_normal(y.shape).astype(np.float32)
        need_dx = i > first
        backward(dy, need_dx)  # warm up (compiles on first use)
        fwd = _median_ms(forward, repeats)

        def fb():
            forward()
            backward(dy, need_dx)

        total = _median_ms(fb, repeats)
        rows += _row(model, i, j, fwd, total)
        x = y
    return rows


def torch_conv_layer_times(model, batch_size: int = 256, repeats: int = 10, seed: int = 0,
                           threads: int | None = None, fused: bool = False) -> list[dict[str, Any]]:
    """PyTorch's median forward+backward ms for the equivalent of each layer of a tuinet model.

    Same rows as :func:`conv_layer_times` (``name``, ``layer``, ``forward_ms``, ``backward_ms``,
    ``forward_backward_ms``; with ``fused``, tuinet's fused pairs timed as one unit), in the same order; the
    first trainable layer computes no input gradient.
    """
    import torch

    torch_threads(threads or cores())
    torch.manual_seed(seed)
    shape = model.input_shape
    x = torch.rand((batch_size,) + (tuple(shape[2:]) + tuple(shape[:2]) if len(shape) == 3 else tuple(shape)))
    first = model.first_trainable
    rows: list[dict[str, Any]] = []
    for i, j in _groups(model, fused):
        mod = torch_cnn_model([lay.config() for lay in model.layers[i:j]], shape)
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
        rows += _row(model, i, j, f_ms, t_ms)
        x = y.detach()
        shape = model.layers[j - 1].output_shape
    return rows
