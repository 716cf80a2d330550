"""Convolution and pooling on NHWC float32 images: direct Numba kernels and the layers that use them.

Kernel strategy (measured figures in docs/cnn.md):

* Conv2D is a direct convolution, weights laid out (KH, KW, Cin, Cout). A parallel wrapper runs ``prange``
  over the batch and calls a serial per-sample kernel whose innermost loop runs over the output channels
  (a contiguous row of the weights and of the output), which LLVM vectorizes.
* The backward pass computes the weight gradient and the input gradient in one sweep over the output
  positions. The batch is cut into one chunk per thread; each chunk sums its weight and bias gradients into
  its own partial buffer, and the partials are added afterwards (no racing ``+=`` inside ``prange``). The input
  gradient uses the weights transposed to (KH, KW, Cout, Cin) so that its inner loop also runs over a
  contiguous channel row instead of ending each step with a horizontal sum.
* MaxPool2D keeps, per output element, the flat index of the input element that won, and its backward pass
  scatters the gradient there.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import prange

from tuinet.engine.kernels import F0, jit
from tuinet.engine.layers import Layer, init_weights, register
from tuinet.errors import ModelError

# --- shape helpers ---------------------------------------------------------------------------------------------


def _pair(v, what: str) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ModelError(f"{what} needs one or two integers, got {v}")
        a, b = int(v[0]), int(v[1])
    else:
        a = b = int(v)
    if a < 1 or b < 1:
        raise ModelError(f"{what} must be at least 1, got {v}")
    return a, b


def conv_geometry(size: int, k: int, stride: int, padding) -> tuple[int, int, int]:
    """Output size and (before, after) padding of one spatial axis.

    ``padding`` is ``"valid"`` (none), ``"same"`` (output = ceil(size / stride); the extra pixel of an odd
    total padding goes after, as in TensorFlow) or an integer applied on both sides (as in PyTorch).
    """
    if padding == "valid":
        before = after = 0
    elif padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        before, after = total // 2, total - total // 2
    else:
        before = after = int(padding)
    out = (size + before + after - k) // stride + 1
    if out < 1:
        raise ModelError(f"a {k}-wide window with stride {stride} and padding {padding!r} does not fit an input "
                         f"of size {size}")
    return out, before, after


def _check_padding(padding):
    if isinstance(padding, str):
        p = padding.lower()
        if p not in ("same", "valid"):
            raise ModelError(f"padding must be 'same', 'valid' or an integer, got '{padding}'")
        return p
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ModelError(f"padding must be 'same', 'valid' or an integer >= 0, got {padding!r}")
    return int(padding)


# --- Conv2D kernels --------------------------------------------------------------------------------------------


@jit()
def _conv_fwd_sample(x, w, b, out, sh, sw, ph, pw):
    """One sample: out[oh, ow, :] = b + sum over taps of x[ih, iw, ci] * w[kh, kw, ci, :]."""
    H, W, C = x.shape
    KH, KW = w.shape[0], w.shape[1]
    OH, OW = out.shape[0], out.shape[1]
    for oh in range(OH):
        for ow in range(OW):
            o = out[oh, ow]
            for co in range(o.size):
                o[co] = b[co]
            for kh in range(KH):
                ih = oh * sh - ph + kh
                if ih < 0 or ih >= H:
                    continue
                for kw in range(KW):
                    iw = ow * sw - pw + kw
                    if iw < 0 or iw >= W:
                        continue
                    xr = x[ih, iw]
                    wt = w[kh, kw]
                    for ci in range(C):
                        xv = xr[ci]
                        wr = wt[ci]
                        for co in range(o.size):
                            o[co] += xv * wr[co]


@jit(parallel=True)
def conv2d_forward(x, w, b, out, sh, sw, ph, pw):
    """Direct convolution of a NHWC batch; ``out`` is (N, OH, OW, Cout); padding ph/pw before each axis."""
    for n in prange(x.shape[0]):
        _conv_fwd_sample(x[n], w, b, out[n], sh, sw, ph, pw)


@jit()
def _conv_bwd_sample(x, wt, dy, dw, db, dx, sh, sw, ph, pw, need_dx):
    """One sample: accumulate dw (KH,KW,Cin,Cout) and db, and (need_dx) write dx from wt (KH,KW,Cout,Cin)."""
    H, W, C = x.shape
    KH, KW = dw.shape[0], dw.shape[1]
    OH, OW, CO = dy.shape
    for oh in range(OH):
        for ow in range(OW):
            g = dy[oh, ow]
            for co in range(g.size):
                db[co] += g[co]
            for kh in range(KH):
                ih = oh * sh - ph + kh
                if ih < 0 or ih >= H:
                    continue
                for kw in range(KW):
                    iw = ow * sw - pw + kw
                    if iw < 0 or iw >= W:
                        continue
                    xr = x[ih, iw]
                    dwt = dw[kh, kw]
                    for ci in range(C):
                        xv = xr[ci]
                        dwr = dwt[ci]
                        for co in range(g.size):
                            dwr[co] += xv * g[co]
                    if need_dx:
                        dxr = dx[ih, iw]
                        wtt = wt[kh, kw]
                        for co in range(CO):
                            gv = g[co]
                            wr = wtt[co]
                            for ci in range(dxr.size):
                                dxr[ci] += gv * wr[ci]


@jit()
def _zero(a):
    for i in range(a.size):
        a[i] = F0


@jit()
def _add_into(dst, src):
    for i in range(dst.size):
        dst[i] += src[i]


@jit(parallel=True)
def conv2d_backward(x, wt, dy, dw_parts, db_parts, dx, sh, sw, ph, pw, need_dx):
    """Weight, bias and (need_dx) input gradients of :func:`conv2d_forward`.

    ``dw_parts`` (P, KH, KW, Cin, Cout) and ``db_parts`` (P, Cout) hold one partial sum per batch chunk;
    the totals end up in ``dw_parts[0]`` and ``db_parts[0]``. ``dx`` is overwritten (ignored unless need_dx).
    """
    n = x.shape[0]
    parts = min(dw_parts.shape[0], n)
    for p in prange(parts):
        dwp = dw_parts[p]
        dbp = db_parts[p]
        _zero(dwp.reshape(-1))
        _zero(dbp)
        lo = p * n // parts
        hi = (p + 1) * n // parts
        for i in range(lo, hi):
            dxi = dx[i] if need_dx else dx[0]
            if need_dx:
                _zero(dxi.reshape(-1))
            _conv_bwd_sample(x[i], wt, dy[i], dwp, dbp, dxi, sh, sw, ph, pw, need_dx)
    for p in range(1, parts):
        _add_into(dw_parts[0].reshape(-1), dw_parts[p].reshape(-1))
        _add_into(db_parts[0], db_parts[p])


@jit()
def transpose_last2(w, out):
    """out[kh, kw, co, ci] = w[kh, kw, ci, co]."""
    KH, KW, C, CO = w.shape
    for kh in range(KH):
        for kw in range(KW):
            for ci in range(C):
                for co in range(CO):
                    out[kh, kw, co, ci] = w[kh, kw, ci, co]


# --- pooling kernels -------------------------------------------------------------------------------------------


@jit()
def _maxpool_fwd_sample(x, out, arg, kh_, kw_, sh, sw):
    H, W, C = x.shape
    OH, OW = out.shape[0], out.shape[1]
    for oh in range(OH):
        for ow in range(OW):
            o = out[oh, ow]
            a = arg[oh, ow]
            ih0 = oh * sh
            iw0 = ow * sw
            first = x[ih0, iw0]
            base = (ih0 * W + iw0) * C
            for c in range(C):
                o[c] = first[c]
                a[c] = base + c
            for kh in range(kh_):
                for kw in range(kw_):
                    ih = ih0 + kh
                    iw = iw0 + kw
                    xr = x[ih, iw]
                    base = (ih * W + iw) * C
                    for c in range(C):  # selects, not branches, so the loop vectorizes
                        v = xr[c]
                        m = o[c]
                        better = v > m
                        o[c] = v if better else m
                        a[c] = (base + c) if better else a[c]


@jit(parallel=True)
def maxpool_forward(x, out, arg, kh, kw, sh, sw):
    """Max over kh x kw windows (no padding); ``arg`` (int32) gets each winner's flat index in its sample."""
    for n in prange(x.shape[0]):
        _maxpool_fwd_sample(x[n], out[n], arg[n], kh, kw, sh, sw)


@jit()
def _maxpool_bwd_sample(dy, arg, dx):
    for i in range(dx.size):
        dx[i] = F0
    for i in range(dy.size):
        dx[arg[i]] += dy[i]


@jit(parallel=True)
def maxpool_backward(dy, arg, dx):
    """Scatter each output gradient to the input element that won the max (dy, arg: (N, M); dx: (N, K))."""
    for n in prange(dy.shape[0]):
        _maxpool_bwd_sample(dy[n], arg[n], dx[n])


@jit()
def _avgpool_fwd_sample(x, out, kh_, kw_, sh, sw, scale):
    OH, OW = out.shape[0], out.shape[1]
    for oh in range(OH):
        for ow in range(OW):
            o = out[oh, ow]
            for c in range(o.size):
                o[c] = F0
            for kh in range(kh_):
                for kw in range(kw_):
                    xr = x[oh * sh + kh, ow * sw + kw]
                    for c in range(o.size):
                        o[c] += xr[c]
            for c in range(o.size):
                o[c] *= scale


@jit(parallel=True)
def avgpool_forward(x, out, kh, kw, sh, sw, scale):
    """Mean over kh x kw windows (no padding); ``scale`` = 1 / (kh * kw)."""
    for n in prange(x.shape[0]):
        _avgpool_fwd_sample(x[n], out[n], kh, kw, sh, sw, scale)


@jit()
def _avgpool_bwd_sample(dy, dx, kh_, kw_, sh, sw, scale):
    for i in range(dx.shape[0]):
        for j in range(dx.shape[1]):
            r = dx[i, j]
            for c in range(r.size):
                r[c] = F0
    OH, OW = dy.shape[0], dy.shape[1]
    for oh in range(OH):
        for ow in range(OW):
            g = dy[oh, ow]
            for kh in range(kh_):
                for kw in range(kw_):
                    r = dx[oh * sh + kh, ow * sw + kw]
                    for c in range(r.size):
                        r[c] += g[c] * scale


@jit(parallel=True)
def avgpool_backward(dy, dx, kh, kw, sh, sw, scale):
    """Spread each output gradient evenly over its window."""
    for n in prange(dy.shape[0]):
        _avgpool_bwd_sample(dy[n], dx[n], kh, kw, sh, sw, scale)


@jit()
def _gap_fwd_sample(x, out, scale):
    for c in range(out.size):
        out[c] = F0
    for i in range(x.shape[0]):
        r = x[i]
        for c in range(out.size):
            out[c] += r[c]
    for c in range(out.size):
        out[c] *= scale


@jit(parallel=True)
def gap_forward(x, out, scale):
    """Mean over all positions: x (N, H*W, C) -> out (N, C)."""
    for n in prange(x.shape[0]):
        _gap_fwd_sample(x[n], out[n], scale)


@jit()
def _gap_bwd_sample(dy, dx, scale):
    for i in range(dx.shape[0]):
        r = dx[i]
        for c in range(r.size):
            r[c] = dy[c] * scale


@jit(parallel=True)
def gap_backward(dy, dx, scale):
    """dx[n, i, c] = dy[n, c] * scale."""
    for n in prange(dy.shape[0]):
        _gap_bwd_sample(dy[n], dx[n], scale)


# --- layers ----------------------------------------------------------------------------------------------------


def _threads() -> int:
    import numba

    return max(1, numba.get_num_threads())


@register
class Conv2D(Layer):
    """2-D convolution on NHWC images, weights (KH, KW, Cin, Cout).

    Args:
        filters: number of output channels.
        kernel_size: window size, an int or (height, width).
        stride: step between windows, an int or (height, width).
        padding: ``"valid"`` (default, as PyTorch's 0), ``"same"`` or an integer on every side.
        use_bias: add one bias per filter (True).
        init: ``he`` (default) or ``xavier``.
    """

    numba_parallel: ClassVar[bool] = True
    penalized = ("W",)

    def __init__(self, filters: int, kernel_size=3, stride=1, padding="valid", use_bias: bool = True,
                 init: str | None = None):
        super().__init__()
        if int(filters) < 1:
            raise ModelError(f"Conv2D needs at least 1 filter, got {filters}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "Conv2D kernel_size")
        self.stride = _pair(stride, "Conv2D stride")
        self.padding = _check_padding(padding)
        self.use_bias = bool(use_bias)
        self.init = init
        self._x: np.ndarray | None = None
        self._zero_bias = np.zeros(self.filters, np.float32)

    @property
    def param_names(self):  # type: ignore[override]
        return ("W", "b") if self.use_bias else ("W",)

    def build(self, input_shape, rng):
        if len(input_shape) != 3:
            raise ModelError(f"Conv2D expects (height, width, channels) inputs, got shape {tuple(input_shape)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        h, w, c = self.input_shape
        kh, kw = self.kernel_size
        oh, self._ph, _ = conv_geometry(h, kh, self.stride[0], self.padding)
        ow, self._pw, _ = conv_geometry(w, kw, self.stride[1], self.padding)
        fan_in, fan_out = kh * kw * c, kh * kw * self.filters
        wgt = init_weights((kh, kw, c, self.filters), fan_in, fan_out, self.init or "he", rng)
        self.params = [wgt] + ([np.zeros(self.filters, np.float32)] if self.use_bias else [])
        self.grads = [np.zeros_like(p) for p in self.params]
        self._wt = np.empty((kh, kw, self.filters, c), np.float32)
        self._parts: np.ndarray | None = None
        self.output_shape = (oh, ow, self.filters)
        return self.output_shape

    def _bias(self) -> np.ndarray:
        return self.params[1] if self.use_bias else self._zero_bias

    def forward(self, x, training):
        self._x = x
        out = np.empty((x.shape[0],) + self.output_shape, np.float32)
        conv2d_forward(x, self.params[0], self._bias(), out, self.stride[0], self.stride[1], self._ph, self._pw)
        return out

    def backward(self, dy, need_dx=True):
        x = self._x
        w = self.params[0]
        p = _threads()
        if self._parts is None or self._parts[0].shape[0] != p:
            self._parts = (np.empty((p,) + w.shape, np.float32), np.empty((p, self.filters), np.float32))
        dw_parts, db_parts = self._parts
        if need_dx:
            transpose_last2(w, self._wt)
            dx = np.empty_like(x)
        else:
            dx = _NO_DX  # same array type as a real dx, so no second specialization is compiled
        conv2d_backward(x, self._wt, dy, dw_parts, db_parts, dx, self.stride[0], self.stride[1], self._ph,
                        self._pw, need_dx)
        self.grads[0][...] = dw_parts[0]
        if self.use_bias:
            self.grads[1][...] = db_parts[0]
        return dx if need_dx else None

    def config(self):
        pad = self.padding
        return {"type": "Conv2D", "filters": self.filters, "kernel_size": list(self.kernel_size),
                "stride": list(self.stride), "padding": pad, "use_bias": self.use_bias, "init": self.init}

    def describe(self):
        kh, kw = self.kernel_size
        extra = f", s{self.stride[0]}" if self.stride != (1, 1) else ""
        extra += f", {self.padding}" if self.padding != "valid" else ""
        return f"Conv2D({self.filters}, {kh}x{kw}{extra})"


_NO_DX = np.zeros((1, 1, 1, 1), np.float32)


class _Pool(Layer):
    """Shared set-up of the windowed pooling layers (no padding)."""

    def __init__(self, pool_size=2, stride=None):
        super().__init__()
        self.pool_size = _pair(pool_size, f"{type(self).__name__} pool_size")
        self.stride = _pair(stride, f"{type(self).__name__} stride") if stride is not None else self.pool_size

    def build(self, input_shape, rng):
        if len(input_shape) != 3:
            raise ModelError(f"{self.kind} expects (height, width, channels) inputs, got {tuple(input_shape)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        h, w, c = self.input_shape
        oh, _, _ = conv_geometry(h, self.pool_size[0], self.stride[0], "valid")
        ow, _, _ = conv_geometry(w, self.pool_size[1], self.stride[1], "valid")
        self.output_shape = (oh, ow, c)
        return self.output_shape

    def config(self):
        return {"type": self.kind, "pool_size": list(self.pool_size), "stride": list(self.stride)}

    def describe(self):
        s = f", s{self.stride[0]}" if self.stride != self.pool_size else ""
        return f"{self.kind}({self.pool_size[0]}x{self.pool_size[1]}{s})"


@register
class MaxPool2D(_Pool):
    """Maximum over pool windows; remembers the winner of each window for the backward pass.

    Args:
        pool_size: window size, an int or (height, width).
        stride: step between windows (default: the window size).
    """

    numba_parallel: ClassVar[bool] = True

    def forward(self, x, training):
        n = x.shape[0]
        out = np.empty((n,) + self.output_shape, np.float32)
        arg = np.empty((n,) + self.output_shape, np.int32)
        maxpool_forward(x, out, arg, self.pool_size[0], self.pool_size[1], self.stride[0], self.stride[1])
        self._arg = arg
        return out

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        n = dy.shape[0]
        dx = np.empty((n,) + self.input_shape, np.float32)
        maxpool_backward(dy.reshape(n, -1), self._arg.reshape(n, -1), dx.reshape(n, -1))
        return dx


@register
class AvgPool2D(_Pool):
    """Mean over pool windows.

    Args:
        pool_size: window size, an int or (height, width).
        stride: step between windows (default: the window size).
    """

    numba_parallel: ClassVar[bool] = True

    def _scale(self):
        return np.float32(1.0 / (self.pool_size[0] * self.pool_size[1]))

    def forward(self, x, training):
        out = np.empty((x.shape[0],) + self.output_shape, np.float32)
        avgpool_forward(x, out, self.pool_size[0], self.pool_size[1], self.stride[0], self.stride[1],
                        self._scale())
        return out

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        dx = np.empty((dy.shape[0],) + self.input_shape, np.float32)
        avgpool_backward(dy, dx, self.pool_size[0], self.pool_size[1], self.stride[0], self.stride[1],
                         self._scale())
        return dx


@register
class GlobalAvgPool(Layer):
    """Mean over all positions of each channel: (H, W, C) -> (C,)."""

    numba_parallel: ClassVar[bool] = True

    def build(self, input_shape, rng):
        if len(input_shape) != 3:
            raise ModelError(f"GlobalAvgPool expects (height, width, channels) inputs, got {tuple(input_shape)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.output_shape = (self.input_shape[2],)
        return self.output_shape

    def _scale(self):
        return np.float32(1.0 / (self.input_shape[0] * self.input_shape[1]))

    def forward(self, x, training):
        n, h, w, c = x.shape
        out = np.empty((n, c), np.float32)
        gap_forward(x.reshape(n, h * w, c), out, self._scale())
        return out

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        n = dy.shape[0]
        h, w, c = self.input_shape
        dx = np.empty((n, h * w, c), np.float32)
        gap_backward(dy, dx, self._scale())
        return dx.reshape((n,) + self.input_shape)


def conv_output_size(size: int, k: int, stride: int = 1, padding="valid") -> int:
    """Output length of one spatial axis (see :func:`conv_geometry`)."""
    return conv_geometry(size, k, stride, padding)[0]

