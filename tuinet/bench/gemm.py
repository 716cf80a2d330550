"""The GEMM-only ceiling of a model: its matrix products alone, back to back through BLAS.

A training step of a dense layer is three products: forward ``x @ W`` (batch x in by in x out), the weight
gradient ``x.T @ dy`` and the input gradient ``dy @ W.T`` (not for the first trainable layer). A convolution is
counted as the products of its im2col form (batch*oh*ow x kh*kw*cin by kh*kw*cin x filters), which is what a
GEMM-based engine would compute. Timing those products alone, with the arguments, transposes and ``out=`` arrays
the dense layers use, gives the rate the BLAS reaches at *these* shapes: small products do not reach a large
square sgemm's rate, so this, not the 1536^3 figure, is the real ceiling of a step made of them. Their FLOP are
the model's training FLOP (:mod:`tuinet.bench.flops`), so the ceiling reads in samples/s like the step.
"""

from __future__ import annotations

import time

import numpy as np

from tuinet.bench.flops import forward_macs

#: the largest operand the ceiling allocates (elements); convolutions whose im2col matrix is larger are left out
MAX_ELEMENTS = 32 * 1024 * 1024


def _gemm_shapes(layer, batch: int, first: bool) -> list[tuple[int, int, int, bool]]:
    """(m, k, n, needs_dx) of each product-shaped layer inside ``layer``: x is m x k, W is k x n."""
    kind = type(layer).__name__
    if kind == "Dense":
        k, n = layer.params[0].shape
        return [(batch, int(k), int(n), not first)]
    if kind == "Conv2D":
        oh, ow, f = layer.output_shape
        kh, kw = layer.kernel_size
        return [(batch * int(oh) * int(ow), int(kh * kw * layer.input_shape[2]), int(f), not first)]
    subs = getattr(layer, "sublayers", None) or {}
    out = []
    for name, sub in subs.items():
        out += _gemm_shapes(sub, batch, first and name in ("conv1", "proj"))
    return out


def gemm_shapes(model, batch: int) -> list[tuple[int, int, int, bool]]:
    """(m, k, n, needs_dx) for every dense or convolution layer of ``model`` at ``batch`` samples."""
    out = []
    for i, layer in enumerate(model.layers):
        if forward_macs(layer):
            out += _gemm_shapes(layer, batch, i == model.first_trainable)
    return out


def gemm_flops(shapes) -> int:
    """FLOP of the products of ``shapes`` (2 per multiply-add; the input gradient only where needed)."""
    return sum(2 * m * k * n * (3 if dx else 2) for m, k, n, dx in shapes)


class GemmCeiling:
    """The model's products at ``batch`` samples, ready to run back to back (:meth:`run` times ``steps`` of them).

    Operands are allocated once (three arrays per role, shared by all layers, filled with 0.5 so no denormal or
    overflow slows BLAS down). Convolutions whose im2col matrix would exceed ``MAX_ELEMENTS`` are left out;
    ``covered`` says what share of the model's training FLOP the ceiling runs.
    """

    def __init__(self, model, batch: int, max_elements: int = MAX_ELEMENTS):
        shapes = gemm_shapes(model, batch)
        total = gemm_flops(shapes)
        self.shapes = [s for s in shapes if max(s[0] * s[1], s[0] * s[2], s[1] * s[2]) <= max_elements]
        self.flops = gemm_flops(self.shapes)
        self.covered = self.flops / total if total else 0.0
        need = {"x": 0, "w": 0, "y": 0}
        for m, k, n, _ in self.shapes:
            need["x"], need["w"], need["y"] = max(need["x"], m * k), max(need["w"], k * n), max(need["y"], m * n)
        pools = {role: np.full(size, 0.5, dtype=np.float32) for role, size in need.items()}
        dx_pool, dw_pool = np.empty(need["x"], np.float32), np.empty(need["w"], np.float32)
        self._calls = []
        for m, k, n, dx in self.shapes:
            x, w = pools["x"][:m * k].reshape(m, k), pools["w"][:k * n].reshape(k, n)
            y, gw = pools["y"][:m * n].reshape(m, n), dw_pool[:k * n].reshape(k, n)
            self._calls.append((x, w, y))  # forward: y = x @ W
            self._calls.append((x.T, y, gw))  # weight gradient: x.T @ dy
            if dx:
                self._calls.append((y, w.T, dx_pool[:m * k].reshape(m, k)))  # input gradient: dy @ W.T

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` rounds of every product (what ``steps`` training steps spend in GEMMs at best)."""
        calls, dot = self._calls, np.dot
        t = time.perf_counter()
        for _ in range(steps):
            for a, b, out in calls:
                dot(a, b, out=out)
        return time.perf_counter() - t
