"""The Numba side of :func:`tuinet.engine.gemm.matmul`: a product on the convolutions' micro-kernels, its rows
split over Numba's threads, each thread packing B into 32-column panels as it goes (the reasons are in
:mod:`tuinet.engine.gemm`)."""

from __future__ import annotations

import threading
from functools import lru_cache

import numba
import numpy as np
from numba import prange

from tuinet.engine.conv.codegen import LANES, conv_jit
from tuinet.engine.conv.kernels import MK8, MK16, MK32, R8, R16, R32, TILE_ROWS, _copy_flat
from tuinet.engine.conv.microkernels import _add_lanes8, _copy_lanes8, _relu_mask8, _transpose8, tile_kernel
from tuinet.engine.kernels import F0, _relu_fwd

#: rows of the 32-column tiles the whole tiles of a product run in: 12 x 2 zmm accumulators with 512-bit vectors
#: (24 of the 32 registers; the convolutions' 6 x 32 tile loads two vectors of B and six values of A for 12 FMAs,
#: this one two and twelve for 24: 176 against 135 GFLOP/s on one core of an AVX-512 Xeon, 256 x 800 by 800 x 256),
#: 6 rows (two passes of 6 x 16) with 256-bit vectors, the convolutions' own kernel (a strided 6-row one measured
#: the same)
DR32 = 12 if LANES == 16 else R32
assert DR32 <= TILE_ROWS and DR32 % R32 == 0
# A's rows a stride apart (the row length, or 1 for A = a.T)
MKD32 = tile_kernel(DR32, 32, LANES, strided=True) if DR32 != R32 else MK32
#: with 512-bit vectors, the 16 to 31 columns a product's 32-wide panels leave (LeNet's Dense(120), its input
#: gradient's 400) run first in a 16-column panel, in tiles of R16 rows (12 zmm accumulators, strided as MKD32):
#: 8-column tiles use half of each zmm. On 2 AVX-512 cores, us: 256 x 400 by 400 x 120 108-110 -> 95-98, its weight
#: gradient 128-132 -> 106-114, input gradient 97-99 -> 84-94; 64 rows 39-41 -> 35-39. With 256-bit vectors an 8-column
#: tile fills its registers, and 16-column panels measured the same or slower (122-123 -> 127-130 us): not used there
PANEL16 = LANES == 16
MKD16 = tile_kernel(R16, 16, LANES, strided=True)

@conv_jit(parallel=True)
def _gemm_panels(af, u, rows, v, b, trans, starts, widths, c, bias, parts, cuts, relu, y, dz, db, keep):
    """c[:rows, :] = A @ B + bias, A[r, t] = af[u[r] + v[t]], B = b (T, M), or b.T when ``trans`` (b is then (M, T)).

    A's rows are a constant stride apart (``u[r + 1] - u[r]``: a Dense product's rows, or its transpose's). ``u``
    extends ``TILE_ROWS`` entries past ``rows`` (any valid offsets). The work is shared out over ``parts`` threads
    by columns when ``cuts`` is given (``parts + 1`` panel indices: thread p runs panels ``cuts[p]`` to
    ``cuts[p + 1]`` over all the rows), else by rows (blocks of ``R32``, every thread every panel). Each thread
    copies each panel of B it runs (32 columns, or 16 or 8 for the last ones: see :func:`_panels`) into a (T, 32)
    buffer of its own, then runs the panel over its rows, a 32-column panel in ``DR32``-row tiles, then ``R32``-row
    ones for the rest, a 16-column one in ``R16``-row tiles (a thread's last tile may be partial; it goes through a
    small buffer). Every element is one micro-kernel's sum over the whole reduction, in order, whichever tile computes
    it (the numbers do not depend on the thread count or the split). Only these micro-kernels are compiled (a first
    run compiles this kernel cold).

    ``relu``: c = max(c, 0) as each panel is written (a Dense layer and its ReLU; the bias is added by the
    micro-kernel). ``y.shape[0] > 0`` (``not trans``): B is masked by a ReLU's output as it is packed, B[t, j] =
    b[t, j] where y[t, j] > 0 else 0 (the ReLU's backward pass), the masked values' column sums go to ``db`` (a
    Dense layer's bias gradient, summed down the rows in order) and, with ``keep``, the values to ``dz`` (the input
    gradient's product reads them), each panel's by one thread.

    Splitting by columns packs each panel once (by the thread that runs it), where every thread packs all of B when
    the rows are split: a 784 x 256 B cost each thread 36 us of a 110 us product at 64 rows. Packed instead by a
    kernel of their own, half by each thread, the product then read half of them from the other core's cache, and
    the two parallel regions cost more than the second copy (a Dense(800 -> 256) layer's forward and backward
    passes at batch 256: 1.35 against 1.21 ms).
    """
    no = rows < 0  # False, not a literal (a literal would compile a second version of the micro-kernels)
    T = v.size
    mask = y.shape[0] > 0
    bycol = cuts.size > 0
    per = -(-(-(-rows // R32)) // parts) * R32  # rows per thread when the rows are split
    active = -(-rows // per)  # the threads that have rows then (the masked panels' owners are among them)
    for part in prange(parts):
        if bycol:
            lo, hi, p0, p1 = 0, rows, cuts[part], cuts[part + 1]
        else:
            lo, hi, p0, p1 = part * per, min(rows, part * per + per), 0, starts.size
        if lo >= hi:
            continue
        tile = np.empty((TILE_ROWS, 32), np.float32)
        panel = np.empty((T, 32), np.float32)
        for p in range(p0, p1):
            j0 = starts[p]
            w = widths[p]
            wide = w == 32
            if trans:
                for j in range(w):
                    src = b[j0 + j]
                    for t in range(T):
                        panel[t, j] = src[t]
            elif mask:  # the panel's owner (its thread in a column split, else one by turns) writes dz and db
                _masked_pack(b, y, j0, w, panel, dz, db, keep, bycol or p % active == part)
            else:
                for t in range(T):
                    _copy_flat(b[t][j0:j0 + w], panel[t][:w])
            bs = bias[j0:]
            r0 = lo
            if wide:
                while r0 + DR32 <= hi:
                    MKD32(af, u, r0, v, panel, 0, c, r0, j0, bs, no)
                    r0 += DR32
                while r0 + R32 <= hi:
                    MK32(af, u, r0, v, panel, 0, c, r0, j0, bs, no)
                    r0 += R32
            elif w == 16:
                while r0 + R16 <= hi:
                    MKD16(af, u, r0, v, panel, 0, c, r0, j0, bs, no)
                    r0 += R16
            else:
                while r0 + R8 <= hi:
                    MK8(af, u, r0, v, panel, 0, c, r0, j0, bs, no)
                    r0 += R8
            if r0 < hi:
                if wide:
                    MK32(af, u, r0, v, panel, 0, tile, 0, 0, bs, no)
                elif w == 16:
                    MK16(af, u, r0, v, panel, 0, tile, 0, 0, bs, no)
                else:
                    MK8(af, u, r0, v, panel, 0, tile, 0, 0, bs, no)
                for r in range(hi - r0):
                    _copy_flat(tile[r], c[r0 + r][j0:j0 + w])
            if relu:  # the panel's rows of c, still in the cache (16 KB for 128 rows)
                for r in range(lo, hi):
                    row = c[r][j0:j0 + w]
                    _relu_fwd(row, row)


@conv_jit()
def _masked_pack(b, y, j0, w, panel, dz, db, keep, own):
    """panel[t, :w] = b[t, j0:j0 + w] where y > 0, else 0 (a ReLU's backward pass), for every row t, eight floats at
    a time (``w`` is 32, 16 or 8). With ``own`` also the columns' sums down the rows, in order, into db[j0:j0 + w]
    (the numbers of :func:`tuinet.engine.kernels.relu_grad_bias`), and with ``keep`` the values into dz's rows."""
    T, m = b.shape
    bf, yf, pf, zf = b.reshape(-1), y.reshape(-1), panel.reshape(-1), dz.reshape(-1)
    if own:
        db[j0:j0 + w] = F0
    for t in range(T):
        for q in range(0, w, 8):
            _relu_mask8(bf, t * m + j0 + q, yf, t * m + j0 + q, pf, t * 32 + q)
            if own:
                _add_lanes8(pf, t * 32 + q, db, j0 + q, 8)
                if keep:
                    _copy_lanes8(pf, t * 32 + q, zf, t * m + j0 + q, 8)


@conv_jit(parallel=True)
def _transpose(x, out, parts):
    """out = x.T (x (T, n) and out (n, T), C-contiguous): 8 x 8 blocks transposed in registers, the columns of x
    (rows of out) shared out over ``parts`` threads eight at a time; the ragged edges one element at a time."""
    T, n = x.shape
    xf, of = x.reshape(-1), out.reshape(-1)
    nb = n // 8
    per = -(-nb // parts)
    t8 = T - T % 8
    for part in prange(parts):
        for bi in range(part * per, min(nb, part * per + per)):
            r0 = bi * 8
            for t0 in range(0, t8, 8):
                _transpose8(xf, t0 * n + r0, n, of, r0 * T + t0, T)
            for t in range(t8, T):
                for j in range(8):
                    out[r0 + j, t] = x[t, r0 + j]
        if part == parts - 1:
            for r in range(nb * 8, n):
                for t in range(T):
                    out[r, t] = x[t, r]


_local = threading.local()  # each training thread's transposed copies (see panel_matmul), by shape


def _transposed(a: np.ndarray, parts: int) -> np.ndarray:
    """a.T as a C-contiguous array, in a buffer this thread keeps for the shape (overwritten by the next call; the
    last few shapes are kept: a batch size changed while training brings new ones)."""
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    out = bufs.pop(a.shape[::-1], None)
    if out is None:
        out = np.empty(a.shape[::-1], np.float32)
        while len(bufs) >= 4:
            bufs.pop(next(iter(bufs)))
    bufs[a.shape[::-1]] = out  # (the most recent last)
    _transpose(a, out, parts)
    return out


@lru_cache(maxsize=64)
def _offsets(n: int, step: int) -> np.ndarray:
    """0, step, 2*step, ... for n rows, then TILE_ROWS copies of the last (a partial tile's padding rows)."""
    u = np.arange(n + TILE_ROWS, dtype=np.int64) * step
    u[n:] = u[n - 1]
    u.flags.writeable = False
    return u


@lru_cache(maxsize=64)
def _panels(m: int) -> tuple[np.ndarray, np.ndarray]:
    """Column starts and widths of the panels of m columns (a multiple of 8): 32 wide, then (:data:`PANEL16`) one 16
    wide when 16 or more are left, then 8 wide."""
    rest = m % 32
    sixteen = rest // 16 if PANEL16 else 0
    widths = [32] * (m // 32) + [16] * sixteen + [8] * ((rest - 16 * sixteen) // 8)
    starts = np.cumsum([0] + widths[:-1]) if widths else []
    return np.array(starts, np.int64), np.array(widths, np.int64)


@lru_cache(maxsize=64)
def _zeros(n: int) -> np.ndarray:
    return np.zeros(n, np.float32)  # writable as a layer's bias is (the kernel only reads it): one signature


#: no column split / no mask (the kernel's arguments for "not used": empty arrays of the types it takes)
_NO_CUTS = np.zeros(0, np.int64)
_NO_CUTS.flags.writeable = False  # as the cached cuts (a second signature would compile the kernel again)
_NO_MASK = np.zeros((0, 8), np.float32)
_NO_SUMS = np.zeros(8, np.float32)
#: a B of at least this many floats is packed once, its columns split over the threads (see :func:`panel_matmul`)
SPLIT_FLOATS = 1 << 17
#: a transposed B's columns are split over the threads with no thread's share over this many times an equal one
UNEVEN = 1.25
#: a product with A transposed, at least this long a reduction and this many rows transposes A first (see
#: panel_matmul)
TRANSPOSE_TAPS, TRANSPOSE_ROWS = 128, 512


@lru_cache(maxsize=128)
def _cuts(m: int, parts: int, even: bool = True) -> np.ndarray | None:
    """Panel indices sharing the panels of m columns out over ``parts`` threads (``parts`` + 1 of them): in runs of
    equal width, or with ``even=False`` of about equal width (each cut at the panel end nearest its share, no run
    wider than :data:`UNEVEN` times a share); None where the panels do not split so (the rows are split then)."""
    _, widths = _panels(m)
    ends = np.cumsum(widths)
    cuts = [0]
    for p in range(1, parts):
        cut = int(np.argmin(np.abs(ends - m * p / parts))) + 1  # after the panel ending nearest the share
        if cut <= cuts[-1] or cut >= len(widths):
            return None
        cuts.append(cut)
    cuts.append(len(widths))
    runs = [int(ends[e - 1] - (ends[s - 1] if s else 0)) for s, e in zip(cuts, cuts[1:])]
    if max(runs) > (1 if even else UNEVEN) * m / parts:
        return None
    out = np.array(cuts, np.int64)
    out.flags.writeable = False
    return out


def _parts() -> int:
    return max(1, numba.get_num_threads())


def panel_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, trans_a: bool, trans_b: bool,
                 bias: np.ndarray | None = None, relu: bool = False, mask=None) -> np.ndarray:
    """``op(a) @ op(b)`` into ``out`` (C-contiguous float32, ``out.shape[1]`` a multiple of 8); ``bias`` added to
    every row, then ``relu``: max(out, 0). ``mask=(y, dz, db, keep)`` (b as given): b is masked by the ReLU output
    y > 0 first (see :func:`_gemm_panels`): ``db`` gets the masked b's column sums, and ``dz`` the masked b with
    ``keep``.

    The columns are split over the threads (each panel of B packed once) where B is transposed (its packing is a
    gather; the shares then need only be about equal) or holds at least :data:`SPLIT_FLOATS` (packing it is then a
    large part of the work), the rows otherwise, measured on 2 AVX-512 cores (row split -> column split, us): 64 x
    784 by 784 x 256 115-122 -> 104-106, 256 rows 329-348 -> 322-332; 256 x 128 by (256 x 128)^T 61-63 -> 55-57;
    64 x 256 by (800 x 256)^T 155-167 -> 115-121 (13 and 12 of its 25 panels), 256 rows 356-362 -> 342-351; but
    256 x 256 by 256 x 128 56-59 -> 62-63 (a small B), and a weight gradient x^T @ dz 784 x 64 by 64 x 256 94-99
    -> 124-125 (A transposed: a thread reads all of x for each panel, where it reads half of it for every panel in
    a row split).

    A weight gradient x^T @ dz of a wide layer input (at least :data:`TRANSPOSE_ROWS` features, 2 KiB rows of x) and
    :data:`TRANSPOSE_TAPS` samples transposes x first (:func:`_transpose`, 5-13 us) and runs as a plain product, the
    same numbers: read in place, each of a tile's taps is on another row of x, each row on pages of its own (784 x
    256 by 256 x 256: 333-360 -> 277-304 us; 800 rows 370 -> 308-309; at 128 samples 159-162 -> 151-153; at 64 it
    would lose, 81-82 -> 84-85, and so would a 256-feature input, 55 -> 63, whose rows share pages)."""
    n, m = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    starts, widths = _panels(m)
    parts = _parts()
    if trans_a and not trans_b and k >= TRANSPOSE_TAPS and n >= TRANSPOSE_ROWS:
        a, trans_a = _transposed(a, parts), False
    cuts = _cuts(m, parts, not trans_b) if trans_b or (not trans_a and k * m >= SPLIT_FLOATS) else None
    if trans_a:  # A[r, t] = a[t, r]
        u, v = _offsets(n, 1), _offsets(k, n)
    else:
        u, v = _offsets(n, k), _offsets(k, 1)
    y, dz, db, keep = _NO_MASK, _NO_MASK, _NO_SUMS, False
    if mask is not None:
        if trans_b:
            raise ValueError("a masked product takes B as given")
        y, dz, db, keep = mask
        if not keep:
            dz = _NO_MASK
    _gemm_panels(a.reshape(-1), u, n, v[:k], b, trans_b, starts, widths, out, _zeros(m) if bias is None else bias,
                 parts, _NO_CUTS if cuts is None else cuts, relu, y, dz, db, keep)
    return out
