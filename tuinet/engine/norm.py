"""Batch normalization for dense (N, C) and NHWC (N, H, W, C) activations, with torch.nn.BatchNorm semantics.

Training normalizes with the batch's mean and biased variance and updates running statistics
(``running = (1 - momentum) * running + momentum * batch``, the variance unbiased); evaluation uses the running
statistics. Both are kept in ``buffers`` so checkpoints carry them. Every kernel sees the activations as a
2-D (rows, channels) view; row chunks run in parallel and per-chunk partial sums (float64) are added after.
Training reads x once for the statistics and once for the output (two parallel regions: on a shared machine each
region's barrier can wait for a descheduled thread), and the backward pass likewise twice. A ReLU, or a skip
connection's add and a ReLU, can run fused into those passes (:meth:`BatchNorm.forward_act`), as a residual block does;
with the skip connection the training pass also keeps the ReLU's mask as bytes, which the backward pass reads in
place of the output's floats (resnet's first block: backward 1.90 -> 1.53 ms, forward 1.00 -> 1.13 ms at batch 256).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np
from numba import prange

from tuinet.engine.kernels import F0, F1, jit
from tuinet.engine.layers import Layer, ReLU, register
from tuinet.errors import ModelError

# --- kernels: x is (M, C) float32 C-contiguous; parts are (P, C) float64 ---------------------------------------


@jit()
def _col_sums(x, lo, hi, shift, acc, acc_sq):
    """Per channel, the sum of (x - shift) and of its square over rows lo..hi (one pass over x).

    Blocks of 32 rows are summed in float32 locals, each block's sums added to the float64 ``acc``/``acc_sq``:
    the channel loop vectorizes, and a thread writes its own partials once per block, not once per row (two
    threads' partial rows can share a cache line).
    """
    C = acc.size
    block = 32  # rows summed in float32 before they go into the float64 partials
    s = np.zeros(C, np.float32)
    s2 = np.zeros(C, np.float32)
    for i0 in range(lo, hi, block):
        s[:] = F0
        s2[:] = F0
        for i in range(i0, min(i0 + block, hi)):
            r = x[i]
            for c in range(C):
                d = r[c] - shift[c]
                s[c] += d
                s2[c] += d * d
        for c in range(C):
            acc[c] += s[c]
            acc_sq[c] += s2[c]


@jit()
def _scale_shift(x, lo, hi, scale, shift, skip, mode, y, msk, kscale, kshift):
    """y = x * scale + shift over rows lo..hi; mode 1 adds a ReLU, mode 2 adds ``skip`` first, then the ReLU;
    mode 3 adds ``skip * kscale + kshift`` (a projection's BatchNorm applied on the way, not stored; ones and zeros
    for the skip input as it is) and also writes the ReLU's mask (1 where y > 0, else 0) into the uint8 ``msk``."""
    if mode == 0:
        for i in range(lo, hi):
            r = x[i]
            o = y[i]
            for c in range(o.size):
                o[c] = r[c] * scale[c] + shift[c]
    elif mode == 1:
        for i in range(lo, hi):
            r = x[i]
            o = y[i]
            for c in range(o.size):
                v = r[c] * scale[c] + shift[c]
                o[c] = v if v > F0 else F0
    elif mode == 2:
        for i in range(lo, hi):
            r = x[i]
            k = skip[i]
            o = y[i]
            for c in range(o.size):
                v = r[c] * scale[c] + shift[c]
                v = v + k[c]
                o[c] = v if v > F0 else F0
    else:
        for i in range(lo, hi):
            r = x[i]
            k = skip[i]
            o = y[i]
            q = msk[i]
            for c in range(o.size):
                v = r[c] * scale[c] + shift[c]
                v = v + (k[c] * kscale[c] + kshift[c])
                o[c] = v if v > F0 else F0
                q[c] = np.uint8(1) if v > F0 else np.uint8(0)


@jit()
def _channel_stats(c, shift, s1, s2, n, gamma, beta, eps, mean, var, invstd, scale, offset, fold):
    """Channel c's mean, biased variance and 1 / sqrt(var + eps) from the float64 sums s1, s2 of (x - shift) and
    (x - shift)^2 over n values, and its entries of the fold-tiled ``scale`` and ``offset``."""
    C = mean.size
    d = s1 / n
    mean[c] = np.float32(shift + d)
    v = np.float32(max(s2 / n - d * d, 0.0))
    var[c] = v
    inv = F1 / np.sqrt(v + eps)
    invstd[c] = inv
    for f in range(fold):
        scale[f * C + c] = gamma[c] * inv
        offset[f * C + c] = beta[c] - mean[c] * gamma[c] * inv


@jit(parallel=True)
def bn_train_forward(x, gamma, beta, eps, y, mean, var, invstd, parts, parts_sq, skip, mode, fold, scale, offset, msk,
                     kscale, kshift):
    """Batch statistics (one pass, float64 partial sums) and y = gamma * (x - mean) * invstd + beta.

    ``mode`` fuses what follows the normalization into the pass that writes y: 0 nothing, 1 a ReLU, 2 the sum
    with ``skip`` (same shape as x; any array of x's type when unused) and a ReLU, as a residual block ends, 3 the
    same as 2 with ``skip * kscale + kshift`` in place of ``skip`` (fold * C each; any float32 arrays otherwise),
    also writing the ReLU's mask into the uint8 ``msk`` (x's shape; any uint8 2-D array otherwise).

    x holds ``fold`` rows of C channels in each of its rows (a (rows / fold, fold * C) view of the activations,
    see :func:`fold_factor`); gamma, beta and the outputs ``mean``, ``var`` (biased) and ``invstd``
    (1 / sqrt(var + eps)) have C entries, ``parts`` and ``parts_sq`` a row of fold * C per thread, the outputs
    ``scale`` and ``offset`` (y = x * scale + offset before the ReLU) fold * C: the backward pass recomputes the
    ReLU's mask from x with them. The sums are of
    x minus the first row's values (a value of the batch, so the shifted sum of squares does not cancel as
    sum(x^2) - m mean^2 would), in float64: one read of x for the statistics and one for y, two parallel regions.
    """
    m, W = x.shape
    C = mean.size
    n = m * fold  # rows of C channels
    P = min(parts.shape[0], m)
    shift = np.empty(W, np.float32)
    for j in range(W):
        shift[j] = x[0, j % C]
    for p in prange(P):
        parts[p, :] = 0.0
        parts_sq[p, :] = 0.0
        _col_sums(x, p * m // P, (p + 1) * m // P, shift, parts[p], parts_sq[p])
    for c in range(C):
        s = 0.0
        s2 = 0.0
        for p in range(P):
            for f in range(fold):
                s += parts[p, f * C + c]
                s2 += parts_sq[p, f * C + c]
        _channel_stats(c, np.float64(shift[c]), s, s2, np.float64(n), gamma, beta, eps, mean, var, invstd, scale,
                       offset, fold)  # (n as a float64: one signature of the helper for both callers)
    for p in prange(P):
        _scale_shift(x, p * m // P, (p + 1) * m // P, scale, offset, skip, mode, y, msk, kscale, kshift)


@jit(parallel=True)
def bn_eval_forward(x, scale, shift, y, nparts, skip, mode, msk, kscale, kshift):
    """y = x * scale + shift per channel (evaluation with folded running statistics, or training with statistics
    gathered elsewhere); ``mode``, ``msk``, ``kscale`` and ``kshift`` as in :func:`bn_train_forward`."""
    m = x.shape[0]
    P = max(1, min(nparts, m))
    for p in prange(P):
        _scale_shift(x, p * m // P, (p + 1) * m // P, scale, shift, skip, mode, y, msk, kscale, kshift)


@jit()
def _bwd_sums(x, dy, lo, hi, mean, acc_dy, acc_dyx, msk, mode, scale, offset):
    """Per channel, the sums of g and of g * (x - mean) over rows lo..hi (blocked as in :func:`_col_sums`).

    g is dy (mode 0) or dy where the fused ReLU's output was > 0, else 0: mode 1 recomputes that output's sign
    from x (x * scale + offset, the forward pass's expression), mode 2 reads the forward pass's uint8 mask ``msk``
    (a quarter of the bytes of the output it stands for). Nothing is
    written here but the partials: a store in this loop would keep the float32 block sums out of registers.
    """
    C = acc_dy.size
    block = 32
    s = np.zeros(C, np.float32)
    s2 = np.zeros(C, np.float32)
    W = np.uint64(C)
    xf = x.reshape(-1)  # (flat offsets: a view per row of an array both threads read is an atomic count they share)
    gf = dy.reshape(-1)
    mf = msk.reshape(-1)
    for i0 in range(lo, hi, block):
        s[:] = F0
        s2[:] = F0
        i1 = min(i0 + block, hi)
        if mode == 0:
            for i in range(i0, i1):
                e = np.uint64(i) * W
                for c in range(W):
                    g = gf[e + c]
                    s[c] += g
                    s2[c] += g * (xf[e + c] - mean[c])
        elif mode == 1:
            for i in range(i0, i1):
                e = np.uint64(i) * W
                for c in range(W):
                    r = xf[e + c]
                    v = gf[e + c] if r * scale[c] + offset[c] > F0 else F0
                    s[c] += v
                    s2[c] += v * (r - mean[c])
        else:
            for i in range(i0, i1):
                e = np.uint64(i) * W
                for c in range(W):
                    v = gf[e + c] if mf[e + c] != 0 else F0
                    s[c] += v
                    s2[c] += v * (xf[e + c] - mean[c])
        for c in range(C):
            acc_dy[c] += s[c]
            acc_dyx[c] += s2[c]


@jit()
def _bwd_dx(x, dy, lo, hi, mean, k, a, b, msk, mode, dmask, need_dx, dx, scale, offset):
    """dx over rows lo..hi (need_dx); mode 2 also writes the ReLU-masked dy into ``dmask`` (masks as in
    :func:`_bwd_sums`; mode 3: mode 2's mask, no ``dmask`` written)."""
    if mode != 2:  # (mode 3's mask is mode 2 of _bn_dx_rows; lo * 0: a 0 that is not a literal, one signature)
        _bn_dx_rows(x, dy, lo, hi, mean, k, a, b, dx, 2 if mode == 3 else mode, msk, scale, offset, lo * 0)
        return
    W = np.uint64(x.shape[1])
    xf = x.reshape(-1)  # (flat offsets, as in _bwd_sums)
    gf = dy.reshape(-1)
    of = dx.reshape(-1)
    mf = msk.reshape(-1)
    df = dmask.reshape(-1)
    for i in range(lo, hi):
        e = np.uint64(i) * W
        if need_dx:
            for c in range(W):
                v = gf[e + c] if mf[e + c] != 0 else F0
                df[e + c] = v
                of[e + c] = k[c] * (v - a[c] - (xf[e + c] - mean[c]) * b[c])
        else:
            for c in range(W):
                df[e + c] = gf[e + c] if mf[e + c] != 0 else F0


@jit(parallel=True)
def bn_backward(x, dy, gamma, mean, invstd, dgamma, dbeta, dx, parts_dy, parts_dyx, need_dx, msk, mode, dmask,
                fold, scale, offset, sums_given, mean_w, k, a, b, ss, sx, smean_w, s_dy, s_dyx):
    """Gradients of :func:`bn_train_forward`: dgamma, dbeta and (need_dx) dx, from the cached input x.

    With a fused ReLU (``mode`` 1 or 2) dy is the gradient of the ReLU's output, masked here: mode 1 finds where
    that output was positive from x, ``scale`` and ``offset`` (the forward pass's, so the same expression gives
    the same sign; one array less to read in each pass), mode 2 (a skip connection was added) from the forward
    pass's uint8 mask ``msk``, and also writes the masked gradient into ``dmask`` (mode 3: the same without
    ``dmask``; needs ``need_dx``). Unused array arguments can be any arrays of their type. The arrays
    of activations are folded as in :func:`bn_train_forward` (``fold`` rows of C channels per row).
    ``sums_given``: ``parts_dy`` and ``parts_dyx`` already hold the first pass's partial sums (one row per part;
    gathered by the layer that wrote dy, see :meth:`BatchNorm.relu_sums_inputs`), so that pass is not made.
    ``mean_w``, ``k``, ``a``, ``b`` (W float32 each) receive the terms of dx along a folded row (see :func:`_bwd_dx`:
    dx = k * (dy - a - (x - mean_w) * b), dy masked), so that a later pass can make dx (:func:`_bn_dx_rows`).
    ``ss`` (mode 3): the dx pass also gathers another BatchNorm's first-pass sums (mode 2 of :func:`_bwd_sums`) over
    the masked dy and that BatchNorm's input ``sx`` (folded alike, ``smean_w`` its mean along a row) into ``s_dy``,
    ``s_dyx`` (one row per part): the skip input's BatchNorm, whose output gradient the masked dy is, saved a pass
    over both arrays (each chunk of rows summed right after its dx, while in cache; chunks of whole 32-row blocks,
    so the sums are that BatchNorm's own pass's, bit for bit).
    """
    m, W = x.shape
    C = mean.size
    P = min(parts_dy.shape[0], m)
    for j in range(W):
        mean_w[j] = mean[j % C]
    if not sums_given:
        for p in prange(P):
            parts_dy[p, :] = 0.0
            parts_dyx[p, :] = 0.0
            _bwd_sums(x, dy, p * m // P, (p + 1) * m // P, mean_w, parts_dy[p], parts_dyx[p], msk, mode, scale,
                      offset)
    inv_m = 1.0 / (m * fold)
    for c in range(C):
        sdy = 0.0
        sdyx = 0.0
        for p in range(P):
            for f in range(fold):
                sdy += parts_dy[p, f * C + c]
                sdyx += parts_dyx[p, f * C + c]
        dbeta[c] = np.float32(sdy)
        dgamma[c] = np.float32(sdyx * invstd[c])
        for f in range(fold):
            k[f * C + c] = gamma[c] * invstd[c]
            a[f * C + c] = np.float32(sdy * inv_m)
            b[f * C + c] = np.float32(sdyx * inv_m * invstd[c] * invstd[c])
    if need_dx or mode == 2:
        for p in prange(P):
            lo = p * m // P
            hi = (p + 1) * m // P
            if ss:
                s_dy[p, :] = 0.0
                s_dyx[p, :] = 0.0
                for c0 in range(lo, hi, SKIP_SUM_ROWS):
                    c1 = min(c0 + SKIP_SUM_ROWS, hi)
                    _bwd_dx(x, dy, c0, c1, mean_w, k, a, b, msk, mode, dmask, need_dx, dx, scale, offset)
                    _bwd_sums(sx, dy, c0, c1, smean_w, s_dy[p], s_dyx[p], msk, mode - 1, scale, offset)
            else:
                _bwd_dx(x, dy, lo, hi, mean_w, k, a, b, msk, mode, dmask, need_dx, dx, scale, offset)


#: rows of the dx pass between two of the skip BatchNorm's sums (see bn_backward): whole 32-row blocks
SKIP_SUM_ROWS = 256


@jit()
def _bn_dx_rows(x, dy, lo, hi, mean_w, k, a, b, out, mode, msk, scale, offset, o0):
    """Rows lo..hi of a BatchNorm's input gradient into rows lo - o0.. of ``out``: ``o0`` = lo for a layer that
    uses it as it is made, a sample at a time in a small buffer (the terms from :meth:`BatchNorm.backward_terms`), 0
    for BatchNorm's own pass (:func:`_bwd_dx`). dy is masked by a fused ReLU's mask as in :func:`_bwd_sums`: not at
    all (``mode`` 0), where x * scale + offset > 0 (1), where the uint8 ``msk`` (rows as dy's) is not 0 (2)."""
    W = np.uint64(x.shape[1])
    xf = x.reshape(-1)  # (flat offsets: a view per row of an array both threads read is an atomic count they share)
    gf = dy.reshape(-1)
    of = out.reshape(-1)
    mf = msk.reshape(-1)
    for i in range(lo, hi):
        s = np.uint64(i) * W
        d = np.uint64(i - o0) * W
        if mode == 0:
            for c in range(W):
                of[d + c] = k[c] * (gf[s + c] - a[c] - (xf[s + c] - mean_w[c]) * b[c])
        elif mode == 1:
            for c in range(W):
                r = xf[s + c]
                v = gf[s + c] if r * scale[c] + offset[c] > F0 else F0
                of[d + c] = k[c] * (v - a[c] - (r - mean_w[c]) * b[c])
        else:
            for c in range(W):
                v = gf[s + c] if mf[s + c] != 0 else F0
                of[d + c] = k[c] * (v - a[c] - (xf[s + c] - mean_w[c]) * b[c])


#: the kernels' rows are at least this many floats wide when the activations allow (see fold_factor)
FOLD_WIDTH = 64


def fold_factor(rows: int, channels: int) -> int:
    """How many rows of ``channels`` values the kernels see as one row: the largest power of two k with
    k * channels <= FOLD_WIDTH that divides ``rows`` (1 for 64 channels or more).

    LLVM vectorizes a channel loop 16 floats at a time, several vectors per iteration, and leaves what does not
    fill an iteration to a scalar loop: with 16 channels every row went through the scalar loop, and a batch-256
    28x28x16 BatchNorm + ReLU took 6.3 ms backward against 3.4 as 64-wide rows.
    """
    k = 1
    while 2 * k * channels <= FOLD_WIDTH and rows % (2 * k) == 0:
        k *= 2
    return k


@jit()
def bn_stats_from_parts(sums, sqs, shifts, counts, gamma, beta, eps, mean, var, invstd, scale, offset, fold):
    """:func:`bn_train_forward`'s statistics and scale/offset from sums gathered elsewhere (a convolution's output
    pass): per chunk p and column j of rows of W = k * C values, ``sums``/``sqs`` hold the sums of (y - shift) and
    of its square over counts[p] rows, ``shifts`` the chunk's shift. Each chunk's sums are moved to the first
    chunk's shift (exact algebra, in float64) before they are added. ``scale``/``offset``: fold * C wide."""
    C = mean.size
    P, W = sums.shape
    k = W // C
    n = 0.0
    for p in range(P):
        n += counts[p] * k
    for c in range(C):
        s0 = np.float64(shifts[0, c])
        s1 = 0.0
        s2 = 0.0
        for p in range(P):
            for f in range(k):
                j = f * C + c
                d = np.float64(shifts[p, j]) - s0
                s1 += sums[p, j] + counts[p] * d
                s2 += sqs[p, j] + 2.0 * d * sums[p, j] + counts[p] * d * d
        _channel_stats(c, s0, s1, s2, n, gamma, beta, eps, mean, var, invstd, scale, offset, fold)


@dataclass
class OutputStats:
    """A BatchNorm's batch statistics gathered by the layer before it (see :func:`bn_stats_from_parts`)."""

    sums: np.ndarray  #: (chunks, fold * C) float64 sums of (y - shift)
    sqs: np.ndarray  #: the same of (y - shift) squared
    shifts: np.ndarray  #: (chunks, fold * C) float32: each chunk's shift
    counts: np.ndarray  #: (chunks,) float64: rows of fold * C values in each chunk
    fold: int  #: rows of C channels per row of the sums


# --- layer -----------------------------------------------------------------------------------------------------


#: the uint8 mask argument of the kernels where no mask is written or read
_NO_MASK = np.zeros((1, 1), np.uint8)
#: bn_backward's arguments when no skip BatchNorm's sums are gathered
_NO_SS = (False, np.zeros((1, 1), np.float32), np.zeros(1, np.float32), np.zeros((1, 1)), np.zeros((1, 1)))
#: the skip input's scale and offset arguments where the skip input is added as it is
_NO_SKIP_BN = (np.zeros(1, np.float32), np.zeros(1, np.float32))


@lru_cache(maxsize=None)
def _unit_transform(width: int) -> tuple[np.ndarray, np.ndarray]:
    """Ones and zeros of ``width``, made once: the scale and offset of a skip input added as it is (writable, as
    the kernels are compiled for; nothing writes them)."""
    return np.ones(width, np.float32), np.zeros(width, np.float32)


def _threads() -> int:
    import numba

    return max(1, numba.get_num_threads())


@register
class BatchNorm(Layer):
    """Batch normalization over the last axis (features of (N, C), channels of NHWC images).

    Args:
        momentum: weight of the newest batch in the running statistics (0.1, as torch).
        eps: added to the variance before the square root (1e-5, as torch).
    """

    numba_parallel: ClassVar[bool] = True
    param_names = ("gamma", "beta")

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        if not 0.0 <= float(momentum) <= 1.0:
            raise ModelError(f"BatchNorm momentum must be in [0, 1], got {momentum}")
        if float(eps) <= 0:
            raise ModelError(f"BatchNorm eps must be > 0, got {eps}")
        self.momentum = float(momentum)
        self.eps = float(eps)

    def build(self, input_shape, rng):
        self.input_shape = tuple(int(s) for s in input_shape)
        if len(self.input_shape) not in (1, 3):
            raise ModelError(f"BatchNorm expects (features,) or (height, width, channels), got {self.input_shape}")
        c = self.input_shape[-1]
        self.channels = c
        self.params = [np.ones(c, np.float32), np.zeros(c, np.float32)]
        self.grads = [np.zeros(c, np.float32), np.zeros(c, np.float32)]
        self.buffers = {"running_mean": np.zeros(c, np.float32), "running_var": np.ones(c, np.float32)}
        self._mean = np.zeros(c, np.float32)
        self._var = np.zeros(c, np.float32)
        self._invstd = np.zeros(c, np.float32)
        self._parts: tuple[np.ndarray, np.ndarray] | None = None
        self._x: np.ndarray | None = None
        self._msk: np.ndarray | None = None  # the fused ReLU's mask of the last training pass with a skip input
        self._scale = np.zeros(0, np.float32)  # the last training pass's y = x * scale + offset, folded
        self._offset = np.zeros(0, np.float32)
        self._fold = 1
        self._terms: tuple[np.ndarray, ...] | None = None  # mean_w, k, a, b of the last backward pass
        self.output_shape = self.input_shape
        return self.output_shape

    def _partials(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        p = _threads()
        if self._parts is None or self._parts[0].shape != (p, width):
            self._parts = (np.empty((p, width)), np.empty((p, width)))
        return self._parts

    def forward(self, x, training):
        return self.forward_act(x, training)

    def forward_act(self, x, training, relu=False, skip=None, stats=None, store=True, skip_bn=None):
        """The normalization, then (``relu``) a ReLU, with ``skip`` (x's shape) added before it when given.

        Fused into the pass that writes the output; :meth:`backward_act` with that output is the backward pass.
        ``stats`` (training): the batch statistics of x gathered by the layer that wrote it
        (:class:`OutputStats`), which saves the pass over x that would compute them. ``store=False`` (training,
        with ``relu``): no output is written (None is returned), only the statistics and running statistics are
        updated, for a convolution that applies the transform itself (:meth:`channel_transform`), or for the
        BatchNorm that takes this one's input as its ``skip`` with ``skip_bn`` (training, with ``relu`` and
        ``skip``): ``skip`` is then that BatchNorm's input, normalized by it (:meth:`channel_transform`, whose
        last training pass stored nothing) on the way into the sum, and never stored (a projection's BatchNorm).
        """
        c = self.channels
        m = x.size // c
        fold = fold_factor(m, c)
        x2 = np.ascontiguousarray(x).reshape(-1, c * fold)
        mode = 0 if not relu else (1 if skip is None else 2)
        k2 = x2 if skip is None else np.ascontiguousarray(skip).reshape(x2.shape)
        gamma, beta = self.params
        if training:
            if m < 2:
                raise ModelError("BatchNorm needs more than one value per channel in training (batch of 1?)")
            if self._scale.size != c * fold:
                self._scale, self._offset = np.empty(c * fold, np.float32), np.empty(c * fold, np.float32)
            y = np.empty_like(x2) if store or stats is None else None
            ks, kb = _NO_SKIP_BN
            if mode == 2:  # the ReLU's mask kept for the backward pass (bytes, where it would read y's floats)
                mode = 3
                self._msk = np.empty(x2.shape, np.uint8)
                if skip_bn is not None:
                    if skip_bn._scale.size != c * fold:
                        raise ModelError("the skip input's BatchNorm must have this one's shape")
                    ks, kb = skip_bn._scale, skip_bn._offset
                else:  # the skip input as it is
                    ks, kb = _unit_transform(c * fold)
            else:
                self._msk = None
            msk = _NO_MASK if self._msk is None else self._msk
            if stats is None:
                parts, parts_sq = self._partials(c * fold)
                bn_train_forward(x2, gamma, beta, np.float32(self.eps), y, self._mean, self._var, self._invstd,
                                 parts, parts_sq, k2, mode, fold, self._scale, self._offset, msk, ks, kb)
            else:
                bn_stats_from_parts(stats.sums, stats.sqs, stats.shifts, stats.counts, gamma, beta,
                                    np.float32(self.eps), self._mean, self._var, self._invstd, self._scale,
                                    self._offset, fold)
                if y is not None:
                    bn_eval_forward(x2, self._scale, self._offset, y, _threads(), k2, mode, msk, ks, kb)
            self._x = x2
            self._fold = fold
            mom = np.float32(self.momentum)
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            rm *= np.float32(1.0) - mom
            rm += mom * self._mean
            rv *= np.float32(1.0) - mom
            rv += mom * self._var * np.float32(m / (m - 1))
        else:
            y = np.empty_like(x2)
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            scale = (gamma / np.sqrt(rv + np.float32(self.eps))).astype(np.float32)
            shift = (beta - rm * scale).astype(np.float32)
            if skip_bn is not None:
                raise ModelError("a skip input's BatchNorm is applied by the next one in training only")
            bn_eval_forward(x2, np.tile(scale, fold), np.tile(shift, fold), y, _threads(), k2, mode, _NO_MASK,
                            *_NO_SKIP_BN)
        return None if y is None else y.reshape(x.shape)

    def channel_transform(self) -> tuple[np.ndarray, np.ndarray]:
        """Per channel (scale, offset) of the last training pass: y = x * scale + offset, before any ReLU."""
        c = self.channels
        return self._scale[:c], self._offset[:c]

    def backward(self, dy, need_dx=True):
        return self.backward_act(dy, None, need_dx)[0]

    def can_fuse(self, nxt) -> bool:
        """True when ``nxt`` is a ReLU that :meth:`forward_fused` can apply in the pass that writes the output."""
        return type(nxt) is ReLU and tuple(nxt.input_shape) == tuple(self.output_shape)

    def forward_fused(self, x, training, relu):
        """This normalization and the ReLU layer ``relu`` after it in one pass (the model calls it for such pairs).

        Same results as ``relu.forward(self.forward(x, training), training)`` bit for bit, without the
        normalized but not yet rectified activation ever being stored; ``relu.output`` is set as its own forward
        pass would set it.
        """
        y = self.forward_act(x, training, relu=True)
        relu._cache = y
        return y

    def backward_fused(self, dy, relu, need_dx=True):
        """Backward pass of :meth:`forward_fused`: ``dy`` is the gradient of the ReLU's output."""
        return self.backward_act(dy, relu.output, need_dx)[0]

    def relu_sums_inputs(self, parts: int, samples: int) -> tuple | None:
        """What a layer writing the gradient of this BatchNorm + ReLU's output (fused with ``store=False`` or
        recomputing the mask from x: mode 1) needs to gather the first pass of :meth:`backward_act` itself, sample
        by sample, as :func:`tuinet.engine.conv.winograd.winograd_forward` takes it: (True, x folded, mean, scale and
        offset along a folded row, and two (parts, fold * C) float64 arrays for the partial sums); hand the last two
        to :meth:`backward_act` as ``sums``. None where the folded rows do not split evenly into the ``samples``."""
        w = self._x.shape[1]
        if self._x.shape[0] % samples:
            return None
        sums = (np.empty((parts, w)), np.empty((parts, w)))
        return (True, self._x, np.tile(self._mean, w // self.channels), self._scale, self._offset) + sums

    def skip_mask(self) -> np.ndarray | None:
        """The ReLU's mask (uint8, 1 where the output is positive; folded as the kernels see the activations) kept
        by the last training forward pass with a skip input, else None."""
        return self._msk

    def sums_target(self) -> tuple:
        """What :meth:`backward_act` (``skip_sums``) needs to gather this BatchNorm's first-pass sums for it: (its
        input folded, its mean along a folded row, two (parts, fold * C) float64 arrays); hand the last two to
        :meth:`backward_terms` as ``sums``."""
        w = self._x.shape[1]
        pdy, pdyx = self._partials(w)
        return self._x, np.tile(self._mean, w // self.channels), pdy, pdyx

    def backward_act(self, dy, out, need_dx=True, keep_masked=False, relu=None, sums=None, mask_only=False,
                     skip_sums=None):
        """Backward through :meth:`forward_act`; ``out`` is its output when a ReLU was fused (None if not).

        Returns (dx or None, the ReLU's input gradient when ``keep_masked``, else None): with a skip connection
        that gradient is also the skip path's. Without a skip connection the ReLU's mask comes from the cached
        input, so ``out`` is not read: ``relu=True`` with ``out=None`` is the backward pass of a ReLU-fused
        forward pass that stored no output (``store=False``). ``sums``: the first pass's partial sums, gathered by
        the layer that wrote dy (:meth:`relu_sums_inputs`; mode 1 only), which saves that pass.
        ``mask_only`` (with ``keep_masked``, ``need_dx``): the skip path's gradient is not written (None is returned
        for it); its user masks dy with :meth:`skip_mask` as it reads it. ``skip_sums`` (with ``mask_only``):
        another BatchNorm's :meth:`sums_target`, the skip input's BatchNorm (``skip_bn`` of the forward pass), whose
        first-pass sums over the skip path's gradient are gathered in this pass.
        """
        dy2 = np.ascontiguousarray(dy).reshape(self._x.shape)  # folded as the forward pass folded x
        dx = np.empty_like(dy2)
        if relu is None:
            relu = out is not None
        mode = 0 if not relu else (2 if keep_masked else 1)
        if mode == 2 and mask_only:
            if not need_dx or self._msk is None or self._msk.shape != dy2.shape:
                raise ValueError("mask_only needs the input gradient and the mask of a forward pass with a skip input")
            mode = 3
        if skip_sums is not None and (mode != 3 or skip_sums[0].shape != dy2.shape):
            raise ValueError("skip_sums needs mask_only and a BatchNorm input of the same shape")
        msk = _NO_MASK
        if mode >= 2:  # the mask the forward pass kept, or (a forward pass without the skip) one made from out
            msk = self._msk
            if msk is None or msk.shape != dy2.shape:
                msk = (np.ascontiguousarray(out).reshape(dy2.shape) > 0).view(np.uint8)
        masked = np.empty_like(dy2) if mode == 2 else dx
        if sums is not None and mode != 1:
            raise ValueError("partial sums are gathered for BatchNorm + ReLU without a skip input only")
        pdy, pdyx = self._partials(dy2.shape[1]) if sums is None else sums
        bn_backward(self._x, dy2, self.params[0], self._mean, self._invstd, self.grads[0], self.grads[1], dx,
                    pdy, pdyx, need_dx, msk, mode, masked, self._fold, self._scale, self._offset, sums is not None,
                    *self._dx_terms(dy2.shape[1]), *((True,) + tuple(skip_sums) if skip_sums is not None else _NO_SS))
        return (dx.reshape(dy.shape) if need_dx else None), (masked.reshape(dy.shape) if mode == 2 else None)

    def _dx_terms(self, width: int) -> tuple[np.ndarray, ...]:
        if self._terms is None or self._terms[0].shape[0] != width:
            self._terms = tuple(np.empty(width, np.float32) for _ in range(4))
        return self._terms

    def backward_terms(self, dy, sums=None, relu=False) -> tuple[np.ndarray, ...]:
        """The backward pass (:meth:`backward`; with ``relu``, of a fused ReLU too, as :meth:`backward_fused`: dy is
        that ReLU's output gradient) up to its input gradient: dgamma and dbeta are set, and the input gradient is
        left to the caller, which makes it where it uses it (:func:`_bn_dx_rows`, mode 1 with ``relu``). Returns
        (dy and x folded as the kernels see them (rows of ``fold`` * C values), mean_w, k, a, b along such a row).
        ``sums``: the first pass's partial sums, already gathered (:meth:`sums_target`); dy is then not read."""
        dy2 = np.ascontiguousarray(dy, np.float32).reshape(self._x.shape)
        pdy, pdyx = self._partials(dy2.shape[1]) if sums is None else sums
        terms = self._dx_terms(dy2.shape[1])
        bn_backward(self._x, dy2, self.params[0], self._mean, self._invstd, self.grads[0], self.grads[1], dy2, pdy,
                    pdyx, False, _NO_MASK, 1 if relu else 0, dy2, self._fold, self._scale, self._offset,
                    sums is not None, *terms, *_NO_SS)
        return (dy2, self._x) + terms

    def config(self):
        return {"type": "BatchNorm", "momentum": self.momentum, "eps": self.eps}

    def describe(self):
        return "BatchNorm"
