"""The Numba side of :func:`tuinet.engine.gemm.matmul`: a product on the convolutions' micro-kernels, its rows
split over Numba's threads, each thread packing B into 32-column panels as it goes (the reasons are in
:mod:`tuinet.engine.gemm`)."""

from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np
from numba import prange

from tuinet.engine.conv.codegen import LANES, conv_jit
from tuinet.engine.conv.kernels import MK8, MK32, R8, R32, TILE_ROWS, _copy_flat
from tuinet.engine.conv.microkernels import tile_kernel

#: rows of the 32-column tiles the whole tiles of a product run in: 12 x 2 zmm accumulators with 512-bit vectors
#: (24 of the 32 registers; the convolutions' 6 x 32 tile loads two vectors of B and six values of A for 12 FMAs,
#: this one two and twelve for 24: 176 against 135 GFLOP/s on one core of an AVX-512 Xeon, 256 x 800 by 800 x 256),
#: 6 rows (two passes of 6 x 16) with 256-bit vectors, the convolutions' own kernel (a strided 6-row one measured
#: the same)
DR32 = 12 if LANES == 16 else R32
assert DR32 <= TILE_ROWS and DR32 % R32 == 0
# A's rows a stride apart (the row length, or 1 for A = a.T)
MKD32 = tile_kernel(DR32, 32, LANES, strided=True) if DR32 != R32 else MK32

@conv_jit(parallel=True)
def _gemm_panels(af, u, rows, v, b, trans, starts, widths, c, bias, parts):
    """c[:rows, :] = A @ B + bias, A[r, t] = af[u[r] + v[t]], B = b (T, M), or b.T when ``trans`` (b is then (M, T)).

    A's rows are a constant stride apart (``u[r + 1] - u[r]``: a Dense product's rows, or its transpose's). ``u``
    extends ``TILE_ROWS`` entries past ``rows`` (any valid offsets). The rows are shared out over ``parts``
    threads in blocks of ``R32``; each thread copies each panel of B (32 columns, or 8 for the last ones: see
    :func:`_panels`) into a (T, 32) buffer of its own, then runs the panel over its rows, a 32-column panel in
    ``DR32``-row tiles, then ``R32``-row ones for the rest (a thread's last tile may be partial; it goes through a
    small buffer). Every element is one micro-kernel's sum over the whole reduction, in order, whichever tile
    computes it (the numbers do not depend on the thread count). Only these micro-kernels are compiled (a first
    run compiles this kernel cold).

    Each thread packs all of B, where the panels could be shared out: packed by a kernel of their own, half by
    each thread, the product then read half of them from the other core's cache, and the two parallel regions
    cost more than the second copy (a Dense(800 -> 256) layer's forward and backward passes at batch 256: 1.35
    against 1.21 ms; 0.49 against 0.38 at batch 64, 0.24 against 0.19 at batch 8).
    """
    no = rows < 0  # False, not a literal (a literal would compile a second version of the micro-kernels)
    T = v.size
    per = -(-(-(-rows // R32)) // parts) * R32  # rows per thread
    for part in prange(parts):
        lo = part * per
        hi = min(rows, lo + per)
        if lo >= hi:
            continue
        tile = np.empty((TILE_ROWS, 32), np.float32)
        panel = np.empty((T, 32), np.float32)
        for p in range(starts.size):
            j0 = starts[p]
            w = widths[p]
            wide = w == 32
            if trans:
                for j in range(w):
                    src = b[j0 + j]
                    for t in range(T):
                        panel[t, j] = src[t]
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
            else:
                while r0 + R8 <= hi:
                    MK8(af, u, r0, v, panel, 0, c, r0, j0, bs, no)
                    r0 += R8
            if r0 < hi:
                if wide:
                    MK32(af, u, r0, v, panel, 0, tile, 0, 0, bs, no)
                else:
                    MK8(af, u, r0, v, panel, 0, tile, 0, 0, bs, no)
                for r in range(hi - r0):
                    _copy_flat(tile[r], c[r0 + r][j0:j0 + w])


@lru_cache(maxsize=64)
def _offsets(n: int, step: int) -> np.ndarray:
    """0, step, 2*step, ... for n rows, then TILE_ROWS copies of the last (a partial tile's padding rows)."""
    u = np.arange(n + TILE_ROWS, dtype=np.int64) * step
    u[n:] = u[n - 1]
    u.flags.writeable = False
    return u


@lru_cache(maxsize=64)
def _panels(m: int) -> tuple[np.ndarray, np.ndarray]:
    """Column starts and widths of the panels of m columns (a multiple of 8): 32 wide, then 8 wide."""
    starts = list(range(0, m - m % 32, 32)) + list(range(m - m % 32, m, 8))
    widths = [32] * (m // 32) + [8] * (m % 32 // 8)
    return np.array(starts, np.int64), np.array(widths, np.int64)


@lru_cache(maxsize=64)
def _zeros(n: int) -> np.ndarray:
    z = np.zeros(n, np.float32)
    z.flags.writeable = False
    return z


def panel_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, trans_a: bool, trans_b: bool) -> np.ndarray:
    """``op(a) @ op(b)`` into ``out`` (C-contiguous float32, ``out.shape[1]`` a multiple of 8)."""
    n, m = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    starts, widths = _panels(m)
    if trans_a:  # A[r, t] = a[t, r]
        u, v = _offsets(n, 1), _offsets(k, n)
    else:
        u, v = _offsets(n, k), _offsets(k, 1)
    _gemm_panels(a.reshape(-1), u, n, v[:k], b, trans_b, starts, widths, out, _zeros(m),
                 max(1, numba.get_num_threads()))
    return out
