"""Numba kernels of the convolution and pooling layers (NHWC float32 images).

Every convolution product here is a GEMM whose A operand is read straight from the image ("implicit GEMM",
no im2col buffer): A[r, t] = xf[u[r] + v[t]], with u/v tables of flat offsets (output positions and window
taps; :class:`~tuinet.engine.conv.plan.ConvPlan` builds them). :func:`_panel_gemm` runs it on the
register-blocked micro-kernels of :mod:`tuinet.engine.conv.microkernels`, one column panel at a time.

The Conv2D kernels and their helpers are compiled by ``conv_jit`` (LLVM's SLP vectorizer on, see
:mod:`tuinet.engine.conv.codegen`); the pooling kernels by the engine's usual ``jit``. A Conv2D pass is a serial
"part" kernel (one chunk of the batch) that a small ``parallel=True`` launcher runs once per thread, calling it
through its address (:class:`~tuinet.engine.parts.PartKernel`), so the convolution code is compiled once rather
than again inside the launcher's gufunc and module.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from tuinet.engine.conv.codegen import _MK_ROWS, LANES, ROWS48, conv_jit
from tuinet.engine.conv.microkernels import (
    _add_lanes8, _avg2x2_8, _colsum8, _copy_lanes8, _max2x2_8, _unavg2x2_8, _unpool2x2_8, tile_kernel,
)
from tuinet.engine.kernels import F0, _relu_bwd, _relu_fwd, jit
from tuinet.engine.norm import _bn_dx_rows, _col_sums
from tuinet.engine.parts import PartKernel
from tuinet.engine.parts import make_launcher as _make_launcher
from tuinet.engine.parts import run_parts as _run

# The micro-kernel and tile height of each panel width, chosen once for the vector width Numba compiles for
# (codegen._MK_ROWS). Numba reads these globals as constants when it compiles the kernels below, so only the
# four chosen micro-kernels are emitted; the vector width is part of every cache entry's key (the CPU feature
# string), so a cached kernel always matches these choices.
R32, R24, R16, R8 = _MK_ROWS[32], _MK_ROWS[24], _MK_ROWS[16], _MK_ROWS[8]
TILE_ROWS = max(_MK_ROWS.values())  # the partial-tile buffer's height
MK32 = tile_kernel(R32, 32, LANES)
MK24 = tile_kernel(R24, 24, LANES)
MK16 = tile_kernel(R16, 16, LANES)
MK8 = tile_kernel(R8, 8, LANES)
MKS32 = tile_kernel(R32, 32, LANES, scatter=True)
MKS16 = tile_kernel(R16, 16, LANES, scatter=True)
MKS48 = tile_kernel(ROWS48, 48, LANES, scatter=True)
MKT48 = tile_kernel(ROWS48, 48, LANES, btable=True)

# --- Conv2D kernels --------------------------------------------------------------------------------------------


@conv_jit()
def _tail_tile(xf, u, r0, rows, v, b, j0, wd, c, bias, accumulate, tile):
    """The last, partial tile of a panel (rows r0 .. rows - 1 of c, fewer than a tile's height): computed in the
    small buffer ``tile`` (``u`` extends past ``rows``), then its valid rows copied into c."""
    n = rows - r0
    if accumulate:
        for r in range(n):
            _copy_flat(c[r0 + r][j0:j0 + wd], tile[r][:wd])
    if wd == 32:
        MK32(xf, u, r0, v, b, j0, tile, 0, 0, bias, accumulate)
    elif wd == 24:
        MK24(xf, u, r0, v, b, j0, tile, 0, 0, bias, accumulate)
    elif wd == 16:
        MK16(xf, u, r0, v, b, j0, tile, 0, 0, bias, accumulate)
    else:
        MK8(xf, u, r0, v, b, j0, tile, 0, 0, bias, accumulate)
    for r in range(n):
        _copy_flat(tile[r], c[r0 + r][j0:j0 + wd])


@conv_jit(noinline=True)
def _panel_gemm(xf, u, rows, v, b, c, bias, accumulate, panels):
    """For each column panel (j0, width) of ``panels``: c[:rows, panel] += A @ b[:, panel] (accumulate) or
    = A @ b[:, panel] + bias[panel], where A[r, t] = xf[u[r] + v[t]].

    Whole tiles are written in place; a last, partial tile goes through a small buffer, so ``c`` needs only
    ``rows`` rows, while ``u`` must extend to ``rows`` rounded up to the panel's tile height (the padding
    offsets may point at any valid element).
    """
    tile = np.empty((TILE_ROWS, 32), np.float32)
    for i in range(panels.shape[0]):
        j0 = panels[i, 0]
        wd = panels[i, 1]
        th = R32 if wd == 32 else (R24 if wd == 24 else (R16 if wd == 16 else R8))
        full = rows - rows % th
        if wd == 32:
            for r0 in range(0, full, R32):
                MK32(xf, u, r0, v, b, j0, c, r0, j0, bias, accumulate)
        elif wd == 24:
            for r0 in range(0, full, R24):
                MK24(xf, u, r0, v, b, j0, c, r0, j0, bias, accumulate)
        elif wd == 16:
            for r0 in range(0, full, R16):
                MK16(xf, u, r0, v, b, j0, c, r0, j0, bias, accumulate)
        else:
            for r0 in range(0, full, R8):
                MK8(xf, u, r0, v, b, j0, c, r0, j0, bias, accumulate)
        if full < rows:
            _tail_tile(xf, u, full, rows, v, b, j0, wd, c, bias, accumulate, tile)


@conv_jit(noinline=True)
def _panel_gemm_taps(xf, u, rows, v, b, c, bias, accumulate, panels, tap_lo, tap_hi):
    """:func:`_panel_gemm` where each tile of rows reduces over the taps [tap_lo, tap_hi) of its rows only
    (the smallest tap_lo and the largest tap_hi of the rows in the tile; an empty range writes ``bias``).

    Used for the input gradient, where the taps outside a row's range would only read the zero border of dy.
    ``tap_lo`` and ``tap_hi`` extend to the padded length of ``u``.
    """
    tile = np.empty((TILE_ROWS, 32), np.float32)
    for i in range(panels.shape[0]):
        j0 = panels[i, 0]
        wd = panels[i, 1]
        th = R32 if wd == 32 else (R24 if wd == 24 else (R16 if wd == 16 else R8))
        for r0 in range(0, rows, th):
            t0 = tap_lo[r0]
            t1 = tap_hi[r0]
            for r in range(r0 + 1, r0 + th):
                t0 = min(t0, tap_lo[r])
                t1 = max(t1, tap_hi[r])
            t1 = max(t0, t1)
            vs = v[t0:t1]
            bs = b[t0:t1]
            if r0 + th > rows:
                _tail_tile(xf, u, r0, rows, vs, bs, j0, wd, c, bias, accumulate, tile)
            elif wd == 32:
                MK32(xf, u, r0, vs, bs, j0, c, r0, j0, bias, accumulate)
            elif wd == 24:
                MK24(xf, u, r0, vs, bs, j0, c, r0, j0, bias, accumulate)
            elif wd == 16:
                MK16(xf, u, r0, vs, bs, j0, c, r0, j0, bias, accumulate)
            else:
                MK8(xf, u, r0, vs, bs, j0, c, r0, j0, bias, accumulate)


@conv_jit(noinline=True)
def _panel_gemm_scatter(af, u, rows, v, b, c, cu, panels, zb):
    """For each panel (j0, width, cj0) of ``panels`` (widths 48, 32 or 16) and each row r < rows:
    c[cu[r] + cj0 : ... + width] += (A @ b[:, j0:j0 + width])[r], where A[r, t] = af[u[r] + v[t]].

    The input gradient's col2im fused into the GEMM: a row is an output position's gradient over the taps
    (kh, kw, ci) of its window, ``cu`` the offset of its window in the (padded) input gradient, and every panel
    lies within one kernel row, so its columns are contiguous there (``cj0``: the panel's offset in the
    window). Rows of one call are added one after the other, so windows may overlap. A last, partial tile is
    computed by :func:`_panel_gemm` into a small buffer (``zb``: zeros, as wide as ``b``) and added row by row;
    ``u`` must extend to ``rows`` rounded up to the tile height, ``cu`` need not (a 48-wide panel's partial tile
    goes through _panel_gemm as a 32- and a 16-wide panel: ``u`` must extend that far past its whole tiles, see
    :func:`~tuinet.engine.conv.plan._tile_rows`).
    """
    tile = np.empty((TILE_ROWS, b.shape[1]), np.float32)
    one = np.empty((1, 2), np.int64)  # one panel, as the (n, 2) C array _panel_gemm is compiled for
    two = np.empty((2, 2), np.int64)  # a 48-wide panel as a 32- and a 16-wide one
    no = rows < 0
    for i in range(panels.shape[0]):
        j0 = panels[i, 0]
        wd = panels[i, 1]
        cj0 = panels[i, 2]
        one[0, 0] = j0
        one[0, 1] = wd
        two[0, 0] = j0
        two[0, 1] = 32
        two[1, 0] = j0 + 32
        two[1, 1] = 16
        th = ROWS48 if wd == 48 else (R32 if wd == 32 else R16)
        full = rows - rows % th
        if wd == 48:
            for r0 in range(0, full, ROWS48):
                MKS48(af, u, r0, v, b, j0, c, cu, cj0)
        elif wd == 32:
            for r0 in range(0, full, R32):
                MKS32(af, u, r0, v, b, j0, c, cu, cj0)
        else:
            for r0 in range(0, full, R16):
                MKS16(af, u, r0, v, b, j0, c, cu, cj0)
        if full < rows:  # the same micro-kernel sums, through _panel_gemm (already in the caller: no new code)
            _panel_gemm(af, u[full:], rows - full, v, b, tile, zb, no, two if wd == 48 else one)
            for r in range(rows - full):
                _add_into(c[cu[full + r] + cj0:cu[full + r] + cj0 + wd], tile[r][j0:j0 + wd])


@conv_jit(noinline=True)
def _panel_gemm_t(g, au, rows, av, xf, bu, c, panels, bias):
    """The transposed weight gradient of one sample: for each panel (j0, 48, cj0) of ``panels``,
    c[:rows, cj0:cj0 + 48] += A @ B with A[r, t] = g[au[r] + av[t]] (dy: output channels by positions) and
    B[t, :] = xf[bu[t] + j0:][:48] (the 48 contiguous inputs of one kernel row of position t's window).

    ``rows`` (the padded output channels) is a multiple of the tile height; ``bias`` is not read.
    """
    yes = rows >= 0
    for i in range(panels.shape[0]):
        j0 = panels[i, 0]
        cj0 = panels[i, 2]
        for r0 in range(0, rows, ROWS48):
            MKT48(g, au, r0, av, xf, bu, j0, c, r0, cj0, bias, yes)


@conv_jit()
def _copy_cols(src, dst):
    """dst[i, :w] = src[i, :w] for the rows of dst, w the narrower of the two widths (the rest of a wider dst's
    rows untouched), eight floats at a time (:func:`_copy_lanes8`: rows of 6 or 12 were copied one float at a
    time, a quarter of LeNet's first convolution's forward pass)."""
    sw = src.shape[1]
    dw = dst.shape[1]
    if sw == dw:
        _copy_flat(src.reshape(-1), dst.reshape(-1))
        return
    w = min(sw, dw)
    sf = src.reshape(-1)
    df = dst.reshape(-1)
    for i in range(dst.shape[0]):
        for j in range(0, w, 8):
            _copy_lanes8(sf, i * sw + j, df, i * dw + j, min(8, w - j))


@conv_jit()
def _zero(a):
    for i in range(a.size):
        a[i] = F0


@conv_jit()
def _add_into(dst, src):
    for i in range(dst.size):
        dst[i] += src[i]


@conv_jit()
def _interior(x, xp, pt, pl):
    """The flat, unsigned offsets of a (H, W, C) sample ``x`` in the interior of its zero-bordered ``xp`` at (pt,
    pl): (H, x's row length, xp's row length, the first interior value's offset in xp).

    The copies between the two use one flat view of each array and these offsets (unsigned: no wraparound test),
    not a view per row: every view of a shared array changes that array's reference count, an atomic operation on
    one cache line that the threads' views of it share (each sample's rows took about 140 of them)."""
    H, W, C = x.shape
    return np.uint64(H), np.uint64(W * C), np.uint64(xp.shape[1] * C), np.uint64((pt * xp.shape[1] + pl) * C)


@conv_jit()
def _pad_into(x, xp, pt, pl):
    """Copy a (H, W, C) sample into the interior of the zero-bordered xp (flat: :func:`_interior`)."""
    H, rs, prs, d0 = _interior(x, xp, pt, pl)
    xf = x.reshape(-1)
    pf = xp.reshape(-1)
    for i in range(H):
        s = i * rs
        d = d0 + i * prs
        for j in range(rs):
            pf[d + j] = xf[s + j]


@conv_jit(noinline=True)
def _pad_act_into(x, xp, pt, pl, scale, shift):
    """:func:`_pad_into` of relu(x * scale + shift) (scale, shift: W*C, the per-channel values along a row)."""
    H, rs, prs, d0 = _interior(x, xp, pt, pl)
    xf = x.reshape(-1)
    pf = xp.reshape(-1)
    for i in range(H):
        s = i * rs
        d = d0 + i * prs
        for j in range(rs):
            v = xf[s + j] * scale[j] + shift[j]
            pf[d + j] = v if v > F0 else F0


@conv_jit(noinline=True)
def _out_stats(y, first, shift, acc, acc_sq):
    """Add the rows of y (one sample's output, rows of k * C values) into the sums of (y - shift) and its square
    (:func:`tuinet.engine.norm._col_sums`); ``first``: the chunk's first sample, whose first row becomes the shift
    (one value of each column, near its mean: what the combination needs) and whose sums start from zero."""
    C = y.shape[1]
    if first:
        for j in range(C):
            shift[j] = y[0, j]
        acc[:] = 0.0
        acc_sq[:] = 0.0
    lo = y.shape[0] * 0  # not a literal 0: BatchNorm calls the helper with integer variables (one signature)
    _col_sums(y, lo, y.shape[0], shift, acc, acc_sq)


@conv_jit()
def _copy_flat(src, dst):
    """dst[:] = src[:dst.size]: ``src`` must hold at least as many elements as ``dst`` (nothing checks it)."""
    for i in range(dst.size):
        dst[i] = src[i]


def _make_sample_input(EXT):
    def sample_input(x, n, xpad, padded, pt, pl, pre, scale, shift):
        """Sample n as the GEMMs read it, flat: copied into the zero-bordered ``xpad`` when the convolution pads,
        and (``pre``, extended variant only) transformed to relu(x * scale + shift) on the way."""
        if EXT:  # a compile-time constant: the plain variant does not compile what is under it
            if pre:
                _pad_act_into(x[n], xpad, pt, pl, scale, shift)
                return xpad.reshape(-1)
        if padded:
            _pad_into(x[n], xpad, pt, pl)
            return xpad.reshape(-1)
        return x[n].reshape(-1)

    sample_input.__name__ = sample_input.__qualname__ = "_sample_input_ext" if EXT else "_sample_input"
    return conv_jit()(sample_input)


_sample_input = _make_sample_input(False)
_sample_input_ext = _make_sample_input(True)


def _make_conv2d_forward_part(EXT):
    # (the helpers are named as globals in the body, chosen by EXT: a dispatcher held in a closure cell would enter
    # Numba's cache key pickled with its per-process id, so no later process would ever find the cached kernel)

    def conv2d_forward_part(p, a):
        """Part ``p`` of ``parts`` of :func:`conv2d_forward` (samples p*N//parts to (p+1)*N//parts), serial."""
        (x, wk, bp, out, base_i, off_u, panels, pt, pb, pl, pr, direct, parts, OH, OW, cout, pooled, pool_out, pool_arg,
         pool_relu, pkh, pkw, psh, psw, pair, wk2, bp2, pbase_i, poff_u, panels_pair, stats, st_fold, st_shift, st_sum,
         st_sq, pre, pre_scale, pre_shift, proj_on, proj_out, proj_base_i, proj_off_u, proj_wk, proj_bp, proj_panels,
         proj_stats, proj_fold, proj_shift, proj_sum, proj_sq) = a
        N, H, W, C = x.shape
        P = OH * OW
        cp = wk.shape[1]
        rows = base_i.size
        padded = pt + pb + pl + pr > 0
        no = pt < 0  # False, but not a literal: a literal would compile a second version of the helpers
        ybuf = np.empty((1, 1) if (direct or pair) and not pooled else (rows, cp), np.float32)
        ycopy = np.empty((P, cout) if pooled and cp != cout else (1, 1), np.float32)
        paired = pair and not pooled
        ypair = np.empty((P // 2, 2 * cp) if paired and not direct else (1, 1), np.float32)
        xpad = np.zeros((H + pt + pb, W + pl + pr, C) if padded or pre else (1, 1, 1), np.float32)
        n0 = p * N // parts
        for n in range(n0, (p + 1) * N // parts):
            if EXT:
                xf = _sample_input_ext(x, n, xpad, padded, pt, pl, pre, pre_scale, pre_shift)
            else:
                xf = _sample_input(x, n, xpad, padded, pt, pl, pre, pre_scale, pre_shift)
            if paired:
                if direct:
                    _panel_gemm(xf, pbase_i, P // 2, poff_u, wk2, out[n].reshape((P // 2, 2 * cp)), bp2, no,
                                panels_pair)
                else:
                    _panel_gemm(xf, pbase_i, P // 2, poff_u, wk2, ypair, bp2, no, panels_pair)
                    _copy_cols(ypair.reshape((P, cp)), out[n])
            elif pooled:
                _panel_gemm(xf, base_i, P, off_u, wk, ybuf, bp, no, panels)
                if cp == cout:
                    y3 = ybuf[:P].reshape((OH, OW, cout))
                else:
                    _copy_cols(ybuf, ycopy)
                    y3 = ycopy.reshape((OH, OW, cout))
                if pkh == 2 and pkw == 2:
                    _maxpool2x2_fwd_sample(y3, pool_out[n], pool_arg[n], psh, psw)
                else:
                    _maxpool_fwd_sample(y3, pool_out[n], pool_arg[n], pkh, pkw, psh, psw)
                if pool_relu:  # the ReLU layer's own kernel, in place
                    _relu_fwd(pool_out[n].reshape(-1), pool_out[n].reshape(-1))
            elif direct:
                _panel_gemm(xf, base_i, P, off_u, wk, out[n], bp, no, panels)
                if EXT:
                    if stats:
                        _out_stats(out[n].reshape((P // st_fold, st_fold * cout)), n == n0, st_shift[p], st_sum[p],
                                   st_sq[p])
                    if proj_on:  # the projection of the same input, while it is in cache
                        po = proj_out[n]
                        _panel_gemm(xf, proj_base_i, P, proj_off_u, proj_wk, po, proj_bp, no, proj_panels)
                        if proj_stats:
                            _out_stats(po.reshape((P // proj_fold, proj_fold * po.shape[1])), n == n0, proj_shift[p],
                                       proj_sum[p], proj_sq[p])
            else:
                _panel_gemm(xf, base_i, P, off_u, wk, ybuf, bp, no, panels)
                _copy_cols(ybuf, out[n])
            if pool_relu and not pooled:  # a ReLU right after the convolution: in place, while the sample is in cache
                of = out[n].reshape(-1)
                _relu_fwd(of, of)

    # the name the compile screen shows and Numba's cache files carry, one per variant
    conv2d_forward_part.__name__ = conv2d_forward_part.__qualname__ = \
        "conv2d_forward_ext_part" if EXT else "conv2d_forward_part"
    return conv_jit()(conv2d_forward_part)


conv2d_forward_part = _make_conv2d_forward_part(False)
conv2d_forward_ext_part = _make_conv2d_forward_part(True)


def conv2d_forward(ext, x, wk, bp, out, base_i, off_u, panels, pt, pb, pl, pr, direct, parts, OH, OW, cout, pooled,
                   pool_out, pool_arg, pool_relu, pkh, pkw, psh, psw, pair, wk2, bp2, pbase_i, poff_u, panels_pair,
                   stats, st_fold, st_shift, st_sum, st_sq, pre, pre_scale, pre_shift, proj=None):
    """Convolution of a NHWC batch x (N, H, W, C) into out (N, P, Cout), P = OH*OW.

    wk (K, Cp): weights as a (KH*KW*Cin, Cout padded to 8) matrix; bp (Cp,) the padded bias; base_i (>= P):
    flat offset of each output position's window in the (padded) sample, padding rows repeating the last;
    off_u (K,): flat offset of each tap (kh, kw, ci) within a window; panels: column panels of wk. ``direct``:
    the GEMM's columns are out[n]'s channels (Cp == Cout), so the tiles are written in
    place; otherwise into a per-thread buffer copied out afterwards.

    ``proj`` (extended variant, ``direct``, not pooled): (out2, base2, off2, wk2, bp2, panels2, stats2, fold2,
    shift2, sum2, sq2), a 1x1 convolution of the same input with the same output grid (a residual block's
    projection) computed sample by sample from the same (padded) input while it is in cache: its output out2 (N, P,
    Cout2), the offset of each output position's input pixel in the padded sample (padded to its tile height),
    its plan's ``off_u``, its packed weights and bias, its ``panels_out``, and its output statistics as ``stats``,
    ``st_*`` are this layer's.

    ``pooled``: a MaxPool2D (pkh x pkw windows, stride psh x psw) follows, fused: each sample's convolution
    stays in the per-thread buffer and is max-pooled from there into pool_out (N, PH, PW, Cout) and pool_arg
    (as :func:`maxpool_forward`); out is not written (pass any array). The (OH, OW, Cout) output never goes
    through memory (it is neither written nor read back). ``pool_relu``: a ReLU follows the pooling, fused too:
    pool_out gets max(pooled, 0), each sample while it is in cache (the same numbers as a ReLU pass after). Not
    ``pooled``: a ReLU follows the convolution, fused: out gets max(y, 0), each sample while it is in cache.

    ``pair`` (not with ``pooled``): two output positions per GEMM row (see
    :class:`~tuinet.engine.conv.plan.ConvPlan`), the paired weights ``wk2`` (KH*(KW+1), 2*Cp) and bias ``bp2``.

    ``stats`` (``direct`` only, for a BatchNorm that follows; extended variant): each sample's output, still in
    cache, is added into per-channel sums of (y - shift) and of its square, per thread chunk: ``st_shift``
    (parts, st_fold * Cout) gets the chunk's first row of st_fold * Cout values, ``st_sum`` and ``st_sq``
    (float64, same shape) the sums over the output seen as rows of st_fold * Cout (P must be a multiple of
    st_fold); see :func:`tuinet.engine.norm._col_sums`.

    ``pre``: the layer's input is relu(x * scale + shift) per channel (a BatchNorm + ReLU before it, whose output is
    never stored): applied while each sample is copied into the padded buffer (``pre_scale``, ``pre_shift``: W*C).

    ``ext``: the extended variant (``stats``, ``pre``). The batch is cut into ``parts``, one per Numba thread.
    """
    parts = min(parts, x.shape[0])
    _run(_launch_forward, _FWD[ext], parts, x, wk, bp, out, base_i, off_u, panels, pt, pb, pl, pr, direct, parts, OH,
         OW, cout, pooled, pool_out, pool_arg, pool_relu, pkh, pkw, psh, psw, pair, wk2, bp2, pbase_i, poff_u,
         panels_pair, stats, st_fold, st_shift, st_sum, st_sq, pre, pre_scale, pre_shift,
         *(_NO_PROJ_FWD if proj is None else (True,) + tuple(proj)))


#: the ``proj`` arguments of :func:`conv2d_forward` when there is no projection (same types, no second compile)
_NO_PROJ_FWD = (False, np.zeros((1, 1, 8), np.float32), np.zeros(1, np.int64), np.zeros(1, np.uint64),
                np.zeros((1, 8), np.float32), np.zeros(8, np.float32), np.zeros((1, 2), np.int64), False, 1,
                np.zeros((1, 8), np.float32), np.zeros((1, 8)), np.zeros((1, 8)))


@conv_jit()
def _scatter_dy(g, dyf, OW, sh, sw, top, left):
    """dyf[top + oh*sh, left + ow*sw, :] = g[oh*OW + ow] (dyf: zero-bordered (FH, FW, Cout)); flat, no view per
    pixel (as :func:`_pad_into`)."""
    C = np.uint64(g.shape[1])
    FW = dyf.shape[1]
    df = dyf.reshape(-1)
    for q in range(g.shape[0]):
        oh = q // OW
        ow = q - oh * OW
        d = np.uint64(((top + oh * sh) * FW + left + ow * sw) * g.shape[1])
        for c in range(C):
            df[d + c] = g[q, c]


@conv_jit()
def _col2im_add(cb, dst, OW, sh, sw, KH, KW, C):
    """dst[oh*sh + kh, ow*sw + kw, :] += cb[oh*OW + ow, (kh*KW + kw)*C : ... + C] for every output position of
    cb (P, >= KH*KW*C) and every tap: one add over the KW*C contiguous values of each kernel row (flat, no view
    per pixel, as :func:`_pad_into`), eight floats at a time (:func:`_add_lanes8`: a loop over LeNet's 30 ran as
    scalar code)."""
    rs = dst.shape[1] * C
    df = dst.reshape(-1)
    cf = cb.reshape(-1)
    cw = cb.shape[1]
    L = KW * C
    for q in range(cb.shape[0]):
        oh = q // OW
        ow = q - oh * OW
        c0 = ow * sw * C
        for kh in range(KH):
            d = (oh * sh + kh) * rs + c0
            s = q * cw + kh * L
            for i in range(0, L, 8):
                _add_lanes8(cf, s + i, df, d + i, min(8, L - i))


@conv_jit()
def _crop_zero_into(xp, x, pt, pl, add, use_add):
    """x = the (H, W, C) interior of the padded xp (the reverse of :func:`_pad_into`, flat as it is), plus ``add``
    (x's shape) when ``use_add``, and xp left all zero for the next sample: the interior zeroed as it is read, then
    the border (one pass over the buffer where a crop, a clearing of the whole buffer and an add over x took
    three)."""
    nrows, rs, prs, s0 = _interior(x, xp, pt, pl)
    H, W, C = x.shape
    xf = x.reshape(-1)
    af = add.reshape(-1)
    pf = xp.reshape(-1)
    for i in range(nrows):
        s = s0 + i * prs
        d = i * rs
        if use_add:
            for j in range(rs):
                xf[d + j] = pf[s + j] + af[d + j]
                pf[s + j] = F0
        else:
            for j in range(rs):
                xf[d + j] = pf[s + j]
                pf[s + j] = F0
    HP, WP = xp.shape[0], xp.shape[1]
    for i in range(HP):
        if i < pt or i >= pt + H:
            for j in range(np.uint64(i * WP * C), np.uint64((i + 1) * WP * C)):
                pf[j] = F0
        else:
            for j in range(np.uint64(i * WP * C), np.uint64((i * WP + pl) * C)):
                pf[j] = F0
            for j in range(np.uint64((i * WP + pl + W) * C), np.uint64((i + 1) * WP * C)):
                pf[j] = F0


def _make_conv2d_backward_part(EXT):
    def conv2d_backward_part(p, a):
        """Part ``p`` of ``parts`` of :func:`conv2d_backward`: its samples' partial sums into dw_parts[p] (or
        dw2_parts[p]) and db_parts[p], their input gradients into dx; serial code."""
        (x, dy, wf, dw_parts, db_parts, dx, base_i, base_u, off_i, off_u, dbase_i, doff_u, dtap_lo, dtap_hi, panels_w,
         panels_x, OW, sh, sw, KH, KW, pt, pb, pl, pr, FH, FW, direct_dx, need_dx, parts, cout, pooled, pool_dy,
         pool_arg, pool_relu, pool_y, pool2, dx_gemm, wt, qbase_i, co_u, panels_k, pair, dw2_parts, poff_i, pbase_u,
         panels_pair, scat, panels_s, tdw, panels_t, co_i, pos_u, add_dx, dx_add, pre, pre_scale, pre_shift,
         proj_add, proj_dy, proj_rows, proj_bn, proj_x, proj_mean, proj_k, proj_a, proj_b, proj_q, proj_co, proj_wt,
         proj_cu, proj_panels, proj_zk, proj_dw, proj_off_i, proj_krows, proj_base_u, proj_panels_w, proj_zc,
         proj_masked, proj_msk, dbn, bx, bdy, brows, bmean, bk, ba, bb, bscale, boffset, bmode) = a
        N, H, W, C = x.shape
        P = base_u.size
        cp = dw_parts.shape[2]
        cin_p = wf.shape[1]
        krows = off_u.size
        padded = pt + pb + pl + pr > 0
        yes = pt >= 0  # True, but not a literal (see conv2d_forward)
        dwp = dw2_parts[p] if pair or tdw else dw_parts[p]
        dbp = db_parts[p]
        _zero(dwp.reshape(-1))
        _zero(dbp)
        dybuf = np.zeros((P, cp) if cp != cout else (1, 1), np.float32)
        xpad = np.zeros((H + pt + pb, W + pl + pr, C) if padded or pre else (1, 1, 1), np.float32)
        dyf = np.zeros((FH, FW, cout) if need_dx and not dx_gemm else (1, 1, 1), np.float32)
        dxbuf = np.empty((dbase_i.size, cin_p) if need_dx and not direct_dx and not dx_gemm else (1, 1), np.float32)
        cbuf = np.empty((P, wt.shape[1]) if need_dx and dx_gemm and not scat else (1, 1), np.float32)
        dxpad = np.zeros((H + pt + pb, W + pl + pr, C) if need_dx and dx_gemm and padded else (1, 1, 1), np.float32)
        zk = np.zeros(wt.shape[1], np.float32)
        zc = np.zeros(cin_p, np.float32)
        pbuf = np.empty((P, cout) if pooled else (1, 1), np.float32)
        gbuf = np.empty((proj_rows, proj_dy.shape[1]) if proj_bn else (1, 1), np.float32)  # a sample's projection dy
        if EXT:
            if proj_add:
                _zero(proj_dw[p].reshape(-1))
        rbuf = np.empty(pool_dy.shape[1] if pooled and pool_relu else 1, np.float32)
        cbuf2 = np.empty((P, cout) if pool_relu and not pooled else (1, 1), np.float32)  # a sample's masked dy
        bbuf = np.empty((P, cout) if dbn else (1, 1), np.float32)  # a sample's dy, made from the BatchNorm's
        for n in range(p * N // parts, (p + 1) * N // parts):
            if EXT:
                xf = _sample_input_ext(x, n, xpad, padded, pt, pl, pre, pre_scale, pre_shift)
            else:
                xf = _sample_input(x, n, xpad, padded, pt, pl, pre, pre_scale, pre_shift)
            if pooled and pool2:
                _maxpool2x2_bwd_sample(pool_dy[n], pool_y[n] if pool_relu else pool_dy[n], pool_arg[n], pool_relu, OW,
                                       pbuf)
                dyn = pbuf
            elif pooled:
                if pool_relu:  # the ReLU's backward pass into a small buffer (a masked scatter would branch)
                    _relu_bwd(pool_dy[n], pool_y[n], rbuf)
                    _maxpool_bwd_sample(rbuf, pool_arg[n], pbuf.reshape(-1))
                else:
                    _maxpool_bwd_sample(pool_dy[n], pool_arg[n], pbuf.reshape(-1))
                dyn = pbuf
            elif pool_relu:  # a ReLU right after the convolution: its mask applied to the sample's dy
                _relu_bwd(dy[n].reshape(-1), pool_y[n], cbuf2.reshape(-1))
                dyn = cbuf2
            else:
                dyn = dy[n]
            if EXT:
                if dbn:  # dy is the input gradient of the BatchNorm after this layer, made here as it is used
                    _bn_dx_rows(bx, bdy, n * brows, (n + 1) * brows, bmean, bk, ba, bb, bbuf.reshape((brows, -1)),
                                bmode, proj_msk, bscale, boffset, n * brows)  # (any uint8 array: no mask read)
                    dyn = bbuf
            if cp != cout:
                _copy_cols(dyn, dybuf)  # (its last cp - cout columns stay 0)
                g = dybuf
            else:
                g = dyn
            for j0 in range(0, cp, 8):
                _colsum8(g, j0, dbp)
            wdone = False
            if EXT:
                if tdw:
                    _panel_gemm_t(g.reshape(-1), co_i, cp, pos_u, xf, base_u, dwp, panels_t, dbp)
                    wdone = True
            if pair:
                _panel_gemm(xf, poff_i, poff_i.size, pbase_u, g.reshape((P // 2, 2 * cp)), dwp, dbp, yes,
                            panels_pair)
            elif not wdone:
                _panel_gemm(xf, off_i, krows, base_u, g, dwp, dbp, yes, panels_w)
            xdone = False
            added = False
            if EXT:
                if need_dx and dx_gemm and scat:
                    # dxpad is all zero here (made so, then left so by _crop_zero_into)
                    tf = dxpad.reshape(-1) if padded else dx[n].reshape(-1)
                    if not padded:
                        _zero(tf)
                    _panel_gemm_scatter(dyn.reshape(-1), qbase_i, P, co_u, wt, tf, base_i, panels_s, zk)
                    if proj_add:  # the projection's gradients: its input's, into the same pixels' sums, and its weights'
                        lo = n * proj_rows
                        if proj_bn:  # its BatchNorm's input gradient made here, as it is used
                            _bn_dx_rows(proj_x, proj_dy, lo, lo + proj_rows, proj_mean, proj_k, proj_a, proj_b, gbuf,
                                        2 if proj_masked else 0, proj_msk, proj_mean, proj_mean, lo)
                            g2 = gbuf
                        else:
                            g2 = proj_dy[lo:lo + proj_rows]
                        _panel_gemm_scatter(g2.reshape(-1), proj_q, P, proj_co, proj_wt, tf, proj_cu, proj_panels,
                                            proj_zk)
                        _panel_gemm(xf, proj_off_i, proj_krows, proj_base_u, g2.reshape((P, proj_zc.size)),
                                    proj_dw[p], proj_zc, yes, proj_panels_w)
                    if padded:
                        _crop_zero_into(dxpad, dx[n], pt, pl, dx_add[n] if add_dx else dx[n], add_dx)
                        added = True
                    xdone = True
            if xdone:
                pass
            elif need_dx and dx_gemm:
                _panel_gemm(dyn.reshape(-1), qbase_i, P, co_u, wt, cbuf, zk, not yes, panels_k)
                if padded:  # dxpad is all zero here, as above
                    _col2im_add(cbuf, dxpad, OW, sh, sw, KH, KW, C)
                    _crop_zero_into(dxpad, dx[n], pt, pl, dx_add[n] if add_dx else dx[n], add_dx and EXT)
                    added = True
                else:
                    _zero(dx[n].reshape(-1))
                    _col2im_add(cbuf, dx[n], OW, sh, sw, KH, KW, C)
            elif need_dx:
                _scatter_dy(dyn, dyf, OW, sh, sw, KH - 1, KW - 1)
                dxn = dx[n].reshape(H * W, C)
                if direct_dx:
                    _panel_gemm_taps(dyf.reshape(-1), dbase_i, H * W, doff_u, wf, dxn, zc, not yes, panels_x,
                                     dtap_lo, dtap_hi)
                else:
                    _panel_gemm_taps(dyf.reshape(-1), dbase_i, H * W, doff_u, wf, dxbuf, zc, not yes, panels_x,
                                     dtap_lo, dtap_hi)
                    _copy_cols(dxbuf, dxn)
            if EXT:
                if need_dx and add_dx and not added:
                    _add_into(dx[n].reshape(-1), dx_add[n].reshape(-1))

    # the name the compile screen shows and Numba's cache files carry, one per variant
    conv2d_backward_part.__name__ = conv2d_backward_part.__qualname__ = \
        "conv2d_backward_ext_part" if EXT else "conv2d_backward_part"
    return conv_jit()(conv2d_backward_part)


conv2d_backward_part = _make_conv2d_backward_part(False)
conv2d_backward_ext_part = _make_conv2d_backward_part(True)


def conv2d_backward(ext, x, dy, wf, dw_parts, db_parts, dx, base_i, base_u, off_i, off_u, dbase_i, doff_u, dtap_lo,
                    dtap_hi, panels_w, panels_x, OW, sh, sw, KH, KW, pt, pb, pl, pr, FH, FW, direct_dx, need_dx, parts,
                    cout, pooled, pool_dy, pool_arg, pool_relu, pool_y, pool2, dx_gemm, wt, qbase_i, co_u, panels_k, pair,
                    dw2_parts, poff_i, pbase_u, panels_pair, scat, panels_s, tdw, panels_t, co_i, pos_u, add_dx, dx_add,
                    pre, pre_scale, pre_shift, proj=None, bn=None):
    """Weight, bias and (need_dx) input gradients of :func:`conv2d_forward`; dy is (N, P, Cout).

    dW = sum over samples of cols^T @ dy: an implicit GEMM whose rows are the K taps (off_i, padded to the tile
    height) and whose reduction runs over the P output positions (base_u). dw_parts (parts, Kpad, Cp) and
    db_parts (parts, Cp) get one partial sum per batch chunk; the totals end up in dw_parts[0], db_parts[0].

    dX is the "full" convolution of dy with the flipped kernel: dy is scattered (dilated by the stride) into a
    zero-bordered (FH, FW, Cout) buffer and convolved like a forward pass with wf (KH*KW*Cout, Cin padded to 8)
    = W flipped in both spatial axes with the channel axes swapped; dbase_i holds the offset of each input
    pixel's window (rows padded like base_i), doff_u those of the (kh, kw, co) taps. Long reductions
    (KH*KW*Cout) instead of a short GEMM over Cout followed by a col2im scatter. Each pixel row of dx reduces
    only over the kernel rows that reach a row of dy, [dtap_lo, dtap_hi) in tap order (the others would only
    multiply the zero border).

    ``dx_gemm`` (strided convolutions, Cin not a multiple of 8; see :class:`~tuinet.engine.conv.plan.ConvPlan`):
    dX instead as dcols = dy @ wt, wt (Cout, Kp) = W^T with its columns the taps (kh, kw, ci), rows ``qbase_i``
    (output positions), reduction ``co_u``, columns ``panels_k``; each row of dcols is then added into the input
    pixels under its window (col2im), through a zero-bordered buffer when the convolution pads.

    ``scat`` (with ``dx_gemm``, when every kernel row's KW*Cin taps make whole panels of 32 and 16): the col2im
    fused into that GEMM (:func:`_panel_gemm_scatter`, panels ``panels_s``), no dcols buffer.

    ``tdw`` (Cout padded to 8 or 16, kernel rows of 48k inputs): the weight gradient transposed, dW^T = dy^T @ cols
    (:func:`_panel_gemm_t`: rows the output channels ``co_i``, reduction the positions ``pos_u``, columns the
    48 contiguous inputs of a kernel row, panels ``panels_t``) into dw2_parts (parts, Cp, Kp): 48-wide tiles need
    11 loads per 24 multiply-adds where a 16-wide one needs 13 per 12. The caller transposes it back.

    ``add_dx``: dx_add (x's shape) is added into each sample's dx right after it is computed (in cache).

    ``proj`` (extended variant, with ``scat``): the backward pass of a 1x1 convolution without bias of the same input
    with the same stride and output grid (a residual block's projection), made sample by sample in this pass while
    the sample's input is in cache: its input gradient added into the sample's dx by one more scatter GEMM into the
    same buffer (:func:`_panel_gemm_scatter`), its weight gradient's partial sums by one more GEMM over the same
    input. ``proj`` = (dy2, rows, bn, x2, mean_w, k, a, b, q, co, wt2, cu, panels, zeros, dw2_parts, off_i, krows,
    base_u, panels_w, zeros2): its output's gradient dy2 as (N * rows, W) (rows per sample); with ``bn``, dy2 is the
    gradient of a BatchNorm's output whose input is x2 (folded alike) and whose input gradient (the projection's
    output gradient) is made per sample from the terms mean_w, k, a, b (:func:`~tuinet.engine.norm._bn_dx_rows`);
    then the projection's plan's ``qbase_i`` and ``co_u``, its W^T (Cout2, Cin), ``cu`` the offset of each output
    position's input pixel in this layer's (padded) input, its ``panels_s``, zeros as wide as wt2, its weight
    gradient's (parts, Kpad, Cout2) partial sums (the totals end up in dw2_parts[0]), its plan's ``off_i``, Cin, the
    positions ``cu`` as unsigned offsets, its ``panels_out``, Cout2 zeros, and (masked, msk): with ``bn``, dy2 is
    taken as 0 where the uint8 msk (rows as dy2's) is 0 (a ReLU's output gradient, masked as it is read). The
    projection's own backward pass is then not run: its input gradient is never written, nor its BatchNorm's.

    ``bn`` (extended variant, not pooled): (x2, dy2, rows, mean_w, k, a, b, scale, offset, mode): dy is not read;
    each sample's is the input gradient of the BatchNorm (+ ReLU) after this layer, made from its input x2 and its
    output's gradient dy2 (both folded: ``rows`` rows per sample) and its terms
    (:meth:`~tuinet.engine.norm.BatchNorm.backward_terms`) into a small buffer as it is used
    (:func:`~tuinet.engine.norm._bn_dx_rows`, ``mode`` 1: the ReLU's mask from x2, scale and offset): the
    BatchNorm's input gradient is never written, nor read back.

    ``pre``: the forward pass's input transform (see :func:`conv2d_forward`), applied again for the weight
    gradient; dx is the gradient of the transformed input.

    ``pair``: the weight gradient as the paired GEMM of :class:`~tuinet.engine.conv.plan.ConvPlan` (rows
    ``poff_i``, reduction ``pbase_u``, B = dy as (P/2, 2*Cp)), into dw2_parts (parts, rows, 2*Cp) instead of
    dw_parts; the caller folds it back into dW.

    ``pooled``: the layer's output went through a fused MaxPool2D; dy is not used (pass any array), each
    sample's dy is rebuilt in a per-thread buffer from the pooled gradient pool_dy (N, M) and the winners
    pool_arg (N, M), as :func:`maxpool_backward` would write it. ``pool_relu``: a fused ReLU followed the pooling
    (see :func:`conv2d_forward`); pool_dy is its output's gradient and pool_y (N, M) its output, whose mask
    (pool_y > 0) is applied on the way. ``pool_relu`` without ``pooled``: a fused ReLU followed the convolution;
    dy is its output's gradient and pool_y (N, P * Cout) its output, the mask applied to each sample's dy in a
    per-thread buffer (the ReLU's own backward pass is not run). ``pool2`` (with ``pooled``): the windows are 2x2
    with stride 2, and each sample's dy is written in one pass (:func:`_maxpool2x2_bwd_sample`).

    ``ext``: the extended variant (``tdw``, ``scat``, ``add_dx``, ``pre``). The batch is cut into ``parts``, one
    per Numba thread.
    """
    parts = min(parts, x.shape[0])
    _run(_launch_backward, _BWD[ext], parts, x, dy, wf, dw_parts, db_parts, dx, base_i, base_u, off_i, off_u, dbase_i,
         doff_u, dtap_lo, dtap_hi, panels_w, panels_x, OW, sh, sw, KH, KW, pt, pb, pl, pr, FH, FW, direct_dx, need_dx,
         parts, cout, pooled, pool_dy, pool_arg, pool_relu, pool_y, pool2, dx_gemm, wt, qbase_i, co_u, panels_k, pair,
         dw2_parts, poff_i, pbase_u, panels_pair, scat, panels_s, tdw, panels_t, co_i, pos_u, add_dx, dx_add, pre,
         pre_scale, pre_shift, *(_NO_PROJ if proj is None else (True,) + tuple(proj)),
         *(_NO_BN if bn is None else (True,) + tuple(bn)))
    dw = dw2_parts if pair or tdw else dw_parts
    for p in range(1, parts):  # the parts' partial sums into part 0, in part order
        np.add(dw[0], dw[p], out=dw[0])
        np.add(db_parts[0], db_parts[p], out=db_parts[0])
        if proj is not None:
            np.add(proj[14][0], proj[14][p], out=proj[14][0])


#: the ``bn`` arguments of :func:`conv2d_backward` when there is no BatchNorm to make dy from
_NO_BN = (False, np.zeros((1, 8), np.float32), np.zeros((1, 8), np.float32), 1) + tuple(
    np.zeros(8, np.float32) for _ in range(6)) + (0,)
#: the ``proj`` arguments of :func:`conv2d_backward` when there is no projection (same types, no second compile)
_NO_PROJ = (False, np.zeros((1, 8), np.float32), 1, False, np.zeros((1, 8), np.float32)) + tuple(
    np.zeros(8, np.float32) for _ in range(4)) + (
    np.zeros(1, np.int64), np.zeros(1, np.uint64), np.zeros((1, 8), np.float32), np.zeros(1, np.int64),
    np.zeros((1, 3), np.int64), np.zeros(8, np.float32), np.zeros((1, 1, 8), np.float32), np.zeros(1, np.int64), 1,
    np.zeros(1, np.uint64), np.zeros((1, 2), np.int64), np.zeros(8, np.float32), False, np.zeros((1, 1), np.uint8))

_launch_forward = _make_launcher("_launch_forward")
_launch_backward = _make_launcher("_launch_backward")


_FWD = {False: PartKernel(conv2d_forward_part), True: PartKernel(conv2d_forward_ext_part)}
_BWD = {False: PartKernel(conv2d_backward_part), True: PartKernel(conv2d_backward_ext_part)}


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


@jit()
def _maxpool2x2_fwd_sample(x, out, arg, sh, sw):
    """2x2 windows: all four candidates at once, eight channels at a time, masked for the last ones
    (:func:`_max2x2_8`: the general version makes five passes over each output pixel's channels, loading and storing
    ``o`` and ``a`` in each, and a loop over a pixel's channels is too short for LLVM's vectorizer at 512 bits: 24
    channels ran as scalar code, 1.6 against 1.0 us for a 24 x 24 x 24 sample on an AVX-512 Xeon)."""
    W, C = x.shape[1], x.shape[2]
    OH, OW = out.shape[0], out.shape[1]
    xf = x.reshape(-1)
    of = out.reshape(-1)
    af = arg.reshape(-1)
    for oh in range(OH):
        for ow in range(OW):
            b00 = (oh * sh * W + ow * sw) * C
            o = (oh * OW + ow) * C
            for c in range(0, C - C % 8, 8):  # (a literal 8: whole vectors, no mask left after inlining)
                _max2x2_8(xf, b00 + c, C, W * C, of, af, o + c, 8)
            if C % 8:
                c = C - C % 8
                _max2x2_8(xf, b00 + c, C, W * C, of, af, o + c, C % 8)


@jit(parallel=True)
def maxpool_forward(x, out, arg, kh, kw, sh, sw):
    """Max over kh x kw windows (no padding); ``arg`` (int32) gets each winner's flat index in its sample.

    Ties go to the first maximum in row-major window order; a NaN wins only as the first element of a window.
    """
    for n in prange(x.shape[0]):
        if kh == 2 and kw == 2:
            _maxpool2x2_fwd_sample(x[n], out[n], arg[n], sh, sw)
        else:
            _maxpool_fwd_sample(x[n], out[n], arg[n], kh, kw, sh, sw)


@jit()
def _maxpool2x2_bwd_sample(dy, y, arg, relu, OW, dx):
    """:func:`_maxpool_bwd_sample` for 2x2 windows with stride 2 (which never overlap), (P, C) ``dx`` of an OH x OW
    image: each element written once, the gradient where it won its window's max and 0 elsewhere (the general
    kernel zeroes all of dx, then adds each winner's gradient), eight channels at a time, masked for the last ones
    (:func:`_unpool2x2_8`). ``relu``: dy is that of a ReLU after the pooling, whose output is ``y`` (any array of
    dy's size without ``relu``): dy is taken as 0 where y <= 0 (as :func:`~tuinet.engine.kernels._relu_bwd` would
    write it first). An odd last row or column, in no window, gets 0."""
    P, C = dx.shape
    OH = P // OW
    PW = OW // 2
    dxf = dx.reshape(-1)
    for ph in range(OH // 2):
        for pw in range(PW):
            q = (ph * PW + pw) * C
            b00 = (2 * ph * OW + 2 * pw) * C
            for c in range(0, C - C % 8, 8):  # (a literal 8: whole vectors, no mask left after inlining)
                _unpool2x2_8(dy, y, relu, arg, q + c, b00 + c, C, OW * C, dxf, 8)
            if C % 8:
                c = C - C % 8
                _unpool2x2_8(dy, y, relu, arg, q + c, b00 + c, C, OW * C, dxf, C % 8)
    if OW % 2:
        for oh in range(OH - OH % 2):
            for c in range(C):
                dxf[(oh * OW + OW - 1) * C + c] = F0
    if OH % 2:
        for i in range((OH - 1) * OW * C, P * C):
            dxf[i] = F0


@jit()
def _maxpool_bwd_sample(dy, arg, dx):
    for i in range(dx.size):
        dx[i] = F0
    for i in range(dy.size):
        dx[arg[i]] += dy[i]


@jit(parallel=True)
def maxpool_backward(dy, arg, dx, W, C, pool2):
    """Scatter each output gradient to the input element that won the max (dy, arg: (N, M); dx: (N, K) of W-wide
    images of C channels); ``pool2``: 2x2 windows with stride 2, each element of dx written once
    (:func:`_maxpool2x2_bwd_sample`)."""
    for n in prange(dy.shape[0]):
        if pool2:
            # (no ReLU: False, but not a literal, which would compile the kernel a second time)
            _maxpool2x2_bwd_sample(dy[n], dy[n], arg[n], W < 0, W, dx[n].reshape((-1, C)))
        else:
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


@jit()
def _avgpool2x2_fwd_sample(x, out, scale):
    """2x2 windows, stride 2: the four candidates summed in registers, eight channels at a time, masked for the last
    ones (:func:`_avg2x2_8`), the same additions in the same order as :func:`_avgpool_fwd_sample` (whose output
    element is loaded and stored at every tap: LeNet's 28x28x6 at batch 256, 0.51 -> 0.20 ms; a loop over its 6
    channels ran as scalar code, the vectors took it to 0.09 ms)."""
    W, C = x.shape[1], x.shape[2]
    OH, OW = out.shape[0], out.shape[1]
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for oh in range(OH):
        for ow in range(OW):
            i = (2 * oh * W + 2 * ow) * C
            o = (oh * OW + ow) * C
            for c in range(0, C, 8):
                _avg2x2_8(xf, i + c, C, W * C, scale, of, o + c, min(8, C - c))


@jit(parallel=True)
def avgpool_forward(x, out, kh, kw, sh, sw, scale):
    """Mean over kh x kw windows (no padding); ``scale`` = 1 / (kh * kw)."""
    two = kh == 2 and kw == 2 and sh == 2 and sw == 2
    for n in prange(x.shape[0]):
        if two:
            _avgpool2x2_fwd_sample(x[n], out[n], scale)
        else:
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


@jit()
def _avgpool2x2_bwd_sample(dy, dx, scale):
    """2x2 windows, stride 2: every input element is in at most one window, so it is written once, ``dy * scale``
    (or 0 past the last window), where :func:`_avgpool_bwd_sample` zeroes the gradient and adds into it: the same
    numbers (0 + v is v), LeNet's 28x28x6 at batch 256 0.43 -> 0.30 ms; eight channels at a time, masked for the
    last ones (:func:`_unavg2x2_8`), 0.30 -> 0.10 ms."""
    H, W, C = dx.shape
    OH, OW = dy.shape[0], dy.shape[1]
    gf = dy.reshape(-1)
    df = dx.reshape(-1)
    for oh in range(OH):
        for ow in range(OW):
            q = (oh * OW + ow) * C
            i = (2 * oh * W + 2 * ow) * C
            for c in range(0, C, 8):
                _unavg2x2_8(gf, q + c, scale, df, i + c, C, W * C, min(8, C - c))
        if W > 2 * OW:  # the last, odd column: in no window
            for j in range(2):
                r = dx[2 * oh + j, W - 1]
                for c in range(C):
                    r[c] = F0
    for h in range(2 * OH, H):
        r = dx[h]
        for w in range(W):
            rw = r[w]
            for c in range(C):
                rw[c] = F0


@jit(parallel=True)
def avgpool_backward(dy, dx, kh, kw, sh, sw, scale):
    """Spread each output gradient evenly over its window."""
    two = kh == 2 and kw == 2 and sh == 2 and sw == 2
    for n in prange(dy.shape[0]):
        if two:
            _avgpool2x2_bwd_sample(dy[n], dx[n], scale)
        else:
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

