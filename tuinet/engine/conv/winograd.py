"""3x3, stride-1 convolutions by Winograd's minimal filtering, F(4x4, 3x3) (Lavin and Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016), as oneDNN and cuDNN offer it: the forward pass, the input gradient and the
weight gradient.

Each 4x4 block of output pixels ("tile") is computed from the 6x6 block of input pixels under it: the input
block is transformed (V = B^T d B, 36 values per channel), the weights once per pass (U = G g G^T, 36 values per
input and output channel), and then the 36 transformed positions are 36 independent matrix products
M[xi] = V[xi] @ U[xi] (tiles x Cin times Cin x Cout), whose result the output transform (Y = A^T M A) turns back
into the 16 output pixels. The products take 36 multiply-adds per input and output channel and 16 outputs, where
the direct convolution takes 9 x 16 = 144: four times fewer. The transforms are additions and a few multiplies
by constants, one pass over the input and one over the output. The input gradient is the same pass over dy with the
flipped, channel-transposed kernel; the weight gradient is F(3x3, 4x4), the same transforms transposed (below).

Here the products run on the convolution GEMMs' register-tile micro-kernels (rows are tiles, reduction over the
input channels), a few samples' tiles per product so that the rows fill whole register tiles, the transformed input
laid out as (36, Cin / vector width, tiles, vector width) so that a tile's rows are one vector apart (the
micro-kernels' ``affine`` variant: one base register, where 12 row pointers spilled; 16-channel products 187 -> 257
GFLOP/s on 2 AVX-512 cores), and the transforms on vectors of input or output channels (:func:`lin2d_kernel`). Used
where both channel counts are multiples of the vector width (16 floats with AVX-512, 8 with AVX2) and the tiles fit
the output well (:func:`eligible`), in training and evaluation alike. ``TUINET_WINOGRAD=0`` turns it off.

The numbers differ from the direct convolution's by rounding only: the transforms' constants (1/4, 1/6, 1/12,
1/24 in G; up to 8 in A) make the error a few times the direct product's (relative error of the output about
5e-6 against 5e-7, of the weight gradient 2e-6 to 5e-6, measured on He-initialized weights and normal inputs). In
the forward pass and the input gradient every sample is computed alone (its tiles are rows of their own in each
product), so those do not depend on the thread count; the weight gradient sums each thread's samples, then the
threads' sums in order, as the direct kernel does.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from tuinet.engine.conv.codegen import _MK_ROWS, LANES, conv_jit
from tuinet.engine.conv.kernels import _out_stats, _pad_act_into, _pad_into
from tuinet.engine.conv.microkernels import _colsum8, tile_kernel
from tuinet.engine.conv.plan import _panels
from tuinet.engine.norm import _NO_MASK, _bwd_sums
from tuinet.engine.parts import PartKernel
from tuinet.engine.parts import make_launcher as _make_launcher
from tuinet.engine.parts import run_parts as _run

#: F(4x4, 3x3): input transform B^T (6x6), weight transform G (6x3), output transform A^T (4x6)
BT = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0),
      (0, 4, 0, -5, 0, 1))
G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6),
     (0, 0, 1))
AT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))
_GT = tuple(zip(*G))  #: G^T (3x6), the weight gradient's G^T Z G
M_OUT = 4  #: output pixels per tile side
ALPHA = 6  #: input pixels per tile side
XI = ALPHA * ALPHA  #: transformed positions per tile
#: the transformed input of one product (a group of samples' tiles) is kept under this size (in L2 with its output)
GROUP_BYTES = 384 * 1024
#: the weight gradient's transformed input and dy of one group of samples are kept under this size
DW_BYTES = 1024 * 1024


def enabled() -> bool:
    """False when ``TUINET_WINOGRAD=0`` (the direct convolution for every layer, e.g. to compare the two)."""
    return os.environ.get("TUINET_WINOGRAD", "1") != "0"


def _bt6(x, add, sub, fma):
    """B^T (F(4x4, 3x3)'s input transform) on 6 values, its rows' common terms shared: 12 operations, where one per
    nonzero coefficient took 28 (a multiply and an add each for 4, -5, -4, 2, -2)."""
    x0, x1, x2, x3, x4, x5 = x
    a, b = fma(x2, -4.0, x4), fma(x1, -4.0, x3)  # rows 1 and 2: a + b, a - b
    c, d = sub(x4, x2), sub(x3, x1)  # rows 3 and 4: c + 2d, c - 2d
    return [fma(x0, 4.0, fma(x2, -5.0, x4)), add(a, b), sub(a, b), fma(d, 2.0, c), fma(d, -2.0, c),
            fma(x1, 4.0, fma(x3, -5.0, x5))]


def _at6(x, add, sub, fma):
    """A^T (the output transform) on 6 values: 10 operations where one per nonzero coefficient took 20."""
    x0, x1, x2, x3, x4, x5 = x
    s12, d12, s34, d34 = add(x1, x2), sub(x1, x2), add(x3, x4), sub(x3, x4)
    return [add(add(x0, s12), s34), fma(d34, 2.0, d12), fma(s34, 4.0, s12), add(fma(d34, 8.0, d12), x5)]


def _a6(h, add, sub, fma):
    """A (the weight gradient's dy transform) on 4 values: 8 operations where one per nonzero coefficient took 18."""
    h0, h1, h2, h3 = h
    e, o = add(h0, h2), add(h1, h3)  # rows 1 and 2: e + o, e - o
    e2, o2 = fma(h2, 4.0, h0), fma(h3, 4.0, h1)  # rows 3 and 4: e2 + 2 o2, e2 - 2 o2
    return [h0, add(e, o), sub(e, o), fma(o2, 2.0, e2), fma(o2, -2.0, e2), h3]


def _key(m) -> tuple:
    return tuple(tuple(float(c) for c in row) for row in m)


def _factored() -> dict:
    """The matrices whose 1-D transform has a shared-term form (checked against the matrix by the tests)."""
    return {_key(BT): _bt6, _key(AT): _at6, _key(tuple(zip(*AT))): _a6}


def lin2d_kernel(left, right, lanes: int):
    """An intrinsic ``f(src, sb, s1, s2, dst, db, d1, d2)`` computing Y = L X R^T on vectors of ``lanes`` floats.

    X[i, j] is the vector at ``src[sb + i * s1 + j * s2:]``, Y[p, q] is stored at ``dst[db + p * d1 + q * d2:]``
    (element offsets into flat float32 arrays; each vector ``lanes`` consecutive floats). ``left`` (P x I) and
    ``right`` (Q x J) are constant matrices, applied as a short straight-line block on whole vectors of channels, the
    columns of X by L, then the rows by R. Winograd's matrices (B^T, A^T, A) go through their shared-term forms
    (:func:`_bt6`, :func:`_at6`, :func:`_a6`: fused multiply-adds, about half the operations); any other matrix
    has one instruction per nonzero coefficient (an add or a subtract for +-1, a multiply and an add otherwise).
    """
    lm = [[float(c) for c in row] for row in left]
    rm = [[float(c) for c in row] for row in right]
    n_i, n_j = len(lm[0]), len(rm[0])
    fact_l, fact_r = _factored().get(_key(lm)), _factored().get(_key(rm))

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        vt = ir.VectorType(ir.FloatType(), lanes)
        src = context.make_array(sig.args[0])(context, builder, args[0])
        dst = context.make_array(sig.args[4])(context, builder, args[4])
        sb, s1, s2 = (context.cast(builder, args[k], sig.args[k], types.int64) for k in (1, 2, 3))
        db, d1, d2 = (context.cast(builder, args[k], sig.args[k], types.int64) for k in (5, 6, 7))

        def vptr(arr, base, a, sa, b, sb_):
            off = builder.add(base, builder.add(builder.mul(ir.Constant(i64, a), sa), builder.mul(ir.Constant(i64, b), sb_)))
            return builder.bitcast(builder.gep(arr.data, [off]), vt.as_pointer())

        def comb(coefs, vals):
            acc = None
            for c, v in zip(coefs, vals):
                if c == 0.0:
                    continue
                if c == -1.0 and acc is not None:
                    acc = builder.fsub(acc, v)
                    continue
                t = v if c == 1.0 else builder.fmul(v, ir.Constant(vt, [c] * lanes))
                acc = t if acc is None else builder.fadd(acc, t)
            return acc if acc is not None else ir.Constant(vt, None)

        fmuladd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]),
                                                 f"llvm.fmuladd.v{lanes}f32")

        def fma(a, c, b):  # a * c + b, c a constant
            return builder.call(fmuladd, [a, ir.Constant(vt, [c] * lanes), b])

        def apply(fact, mat, vals):  # the matrix times a vector of values (one column or row)
            if fact is not None:
                return fact(vals, builder.fadd, builder.fsub, fma)
            return [comb(row, vals) for row in mat]

        x = [[builder.load(vptr(src, sb, i, s1, j, s2), align=4) for j in range(n_j)] for i in range(n_i)]
        cols = [apply(fact_l, lm, [x[i][j] for i in range(n_i)]) for j in range(n_j)]  # L X, column by column
        for p in range(len(lm)):
            for q, v in enumerate(apply(fact_r, rm, [cols[j][p] for j in range(n_j)])):
                builder.store(v, vptr(dst, db, p, d1, q, d2), align=4)
        return context.get_dummy_value()

    def check(src, dst):
        for a in (src, dst):
            if not (isinstance(a, types.Array) and a.ndim == 1 and a.dtype == types.float32):
                raise TypeError(f"lin2d: expected a 1-d float32 array, got {a}")

    @intrinsic
    def lin2d(typingctx, src, sb, s1, s2, dst, db, d1, d2):
        check(src, dst)
        return types.void(src, sb, s1, s2, dst, db, d1, d2), codegen

    return lin2d


IN6 = lin2d_kernel(BT, BT, LANES)  # V = B^T d B on a 6x6 block of pixel vectors
OUT4 = lin2d_kernel(AT, AT, LANES)  # Y = A^T M A: 36 vectors of M to a 4x4 block of output pixel vectors

# the products' micro-kernels: rows of A one vector (LANES floats) apart
W32, W24, W16, W8 = _MK_ROWS[32], _MK_ROWS[24], _MK_ROWS[16], _MK_ROWS[8]
WK32 = tile_kernel(W32, 32, LANES, affine=LANES)
WK24 = tile_kernel(W24, 24, LANES, affine=LANES)
WK16 = tile_kernel(W16, 16, LANES, affine=LANES)
WK8 = tile_kernel(W8, 8, LANES, affine=LANES)


#: the most pixels the 4x4 tiles may cover per output pixel (the last row and column of tiles reach past the output)
MAX_COVER = 1.35


def eligible(kernel_size, stride, padding, input_shape, output_shape) -> bool:
    """True when a convolution of these shapes runs by Winograd: 3x3 windows, stride 1, "same" padding (one pixel on
    every side), both channel counts multiples of the vector width, and tiles that cover at most :data:`MAX_COVER`
    times the output. Measured against the direct convolution (batch 256, 2 threads, AVX-512; forward / forward +
    backward): used: 12x12 32->32 1.69x / 1.51x, 28x28 32->32 1.71x / 1.70x, 28x28 16->32 1.41x / 1.66x, and
    resnet's 28x28 16->16, 14x14 32->32 and 7x7 64->64; not: an 11x11 "valid" output 16->32 1.05x / 0.84x (the direct
    kernel's 32-wide products run at 300 GFLOP/s), 10x10 32->16 (tiles over 1.44x the output) 1.20x / 0.90x, 6x6
    64->64 (1.78x) 1.29x / 1.02x, 5x5 64->64 1.12x / 0.88x."""
    oh, ow, cout = output_shape
    cover = (-(-oh // M_OUT) * -(-ow // M_OUT) * M_OUT * M_OUT) / (oh * ow)
    return (tuple(kernel_size) == (3, 3) and tuple(stride) == (1, 1) and tuple(padding) == (1, 1, 1, 1)
            and input_shape[2] % LANES == 0 and cout % LANES == 0 and cover <= MAX_COVER and enabled())


@dataclass(frozen=True, eq=False)
class WinogradPlan:
    """The tiles and tables of one Conv2D's Winograd passes (they depend on the shapes only)."""

    th: int  #: tiles down and across (the last ones may reach past the output)
    tw: int
    hp: int  #: the zero-bordered input buffer: 4 * th + 2 rows, 4 * tw + 2 columns
    wp: int
    group: int  #: samples whose tiles share one product
    u: np.ndarray  #: the products' rows (tiles, padded to whole register tiles of every panel): r * LANES
    v: np.ndarray  #: their reduction, the Cin channels: (c // LANES) * rows * LANES + c % LANES (uint64)
    panels: np.ndarray  #: column panels of the Cout columns
    dw_group: int  #: samples whose tiles share one weight-gradient product (their tiles are its reduction)
    cu: np.ndarray  #: the weight gradient's products' rows, Cout: the offset of each one's vector block (int64)
    tv: np.ndarray  #: their reduction, a group's tiles: r * LANES (uint64)

    @classmethod
    def build(cls, input_shape, output_shape) -> "WinogradPlan":
        h, w, c = input_shape
        oh, ow, cout = output_shape
        th, tw = -(-oh // M_OUT), -(-ow // M_OUT)
        tiles = th * tw
        panels = _panels(cout)
        height = math.lcm(*(_MK_ROWS[int(wd)] for wd in panels[:, 1]))  # every panel's tiles end at the rows' end
        most = max(1, min(16, GROUP_BYTES // (tiles * XI * c * 4)))

        def waste(g):  # rows computed for nothing, as a share of the rows needed
            rows = g * tiles
            return (-(-rows // height) * height - rows) / rows

        group = min(range(1, most + 1), key=lambda g: (round(waste(g), 3), g))
        rows = -(-group * tiles // height) * height
        taps = np.arange(c)
        # the weight gradient's products reduce over the group's tiles: as many as DW_BYTES of transformed input and
        # dy allow (a reduction of 12 tiles, 7x7 outputs three samples at a time, spent its time starting tiles)
        dw_group = max(1, min(64, DW_BYTES // (tiles * XI * (c + cout) * 4)))
        dw_rows = dw_group * tiles
        return cls(th=th, tw=tw, hp=M_OUT * th + 2, wp=M_OUT * tw + 2, group=group,
                   u=np.arange(rows, dtype=np.int64) * LANES,
                   v=((taps // LANES) * rows * LANES + taps % LANES).astype(np.uint64), panels=panels,
                   dw_group=dw_group, cu=(np.arange(cout) // LANES * dw_rows * LANES).astype(np.int64),
                   tv=(np.arange(dw_rows) * LANES).astype(np.uint64))


@lru_cache(maxsize=None)
def _kron(left: tuple, right: tuple) -> np.ndarray:
    """The Kronecker product of two constant matrices (tuples of rows), float32, made once: ``np.kron`` took about
    0.06 ms a call, twelve calls a ``resnet`` step on the thread the others wait for."""
    k = np.kron(np.asarray(left, np.float64), np.asarray(right, np.float64)).astype(np.float32)
    k.flags.writeable = False
    return k


def _sandwich(left: tuple, x: np.ndarray, right: tuple) -> np.ndarray:
    """Y[a, b] = sum over k, l of left[a, k] x[k, l] right[b, l], for x (K, L, ...) (its other axes carried along,
    flattened) and constant matrices ``left``, ``right`` (tuples of rows), float32: one matrix product by the
    Kronecker product of the two matrices (36 x 9 for the weights), where two tensor contractions and a transpose
    copied the channels with a stride (0.8 ms at 64 channels)."""
    n_k, n_l = x.shape[:2]
    k = _kron(left, right)
    xm = x.reshape(n_k * n_l, -1).astype(np.float32, copy=False)
    cols = xm.shape[1]
    if cols <= SANDWICH_COLS:
        y = k @ xm
    else:  # in column chunks: the same numbers, 26 us instead of 57 at 4,096 columns (64 x 64 channels)
        y = np.empty((k.shape[0], cols), np.float32)
        for j in range(0, cols, SANDWICH_COLS):
            np.matmul(k, xm[:, j:j + SANDWICH_COLS], out=y[:, j:j + SANDWICH_COLS])
    return y.reshape(len(left), len(right), -1)


#: columns of one matrix product in :func:`_sandwich`: OpenBLAS multiplies a 36 x 9 matrix by 9 x 2,048 at more than
#: twice the rate per column it reaches at 9 x 4,096 (its packing for so short a reduction)
SANDWICH_COLS = 2048


def transform_weights(w: np.ndarray) -> np.ndarray:
    """U[xi] = (G g G^T)[xi] for every input and output channel: (36, Cin, Cout) float32 from (3, 3, Cin, Cout)."""
    return _sandwich(G, w, G).reshape(XI, w.shape[2], w.shape[3])


@conv_jit()
def _in_tiles(xf, wp, c, th, tw, vf, rows, r0):
    """The transformed 6x6 input block of every tile of one padded sample (flat ``xf``, rows of ``wp`` pixels of
    ``c`` channels) into rows r0.. of the flat (36, c / LANES, rows, LANES) ``vf``."""
    rs = wp * c
    ps = c * rows  # one transformed position
    for ty in range(th):
        for tx in range(tw):
            r = r0 + ty * tw + tx
            base = M_OUT * (ty * rs + tx * c)
            for c0 in range(0, c, LANES):
                IN6(xf, base + c0, rs, c, vf, c0 * rows + r * LANES, ALPHA * ps, ps)


@conv_jit()
def _sample_tiles(x, n, xpad, pt, pl, pre, pre_scale, pre_shift, th, tw, vf, rows, r0):
    """Sample n of x copied into the zero-bordered ``xpad`` at (pt, pl), as relu(x * scale + shift) when ``pre`` (a
    BatchNorm + ReLU before the layer), and its tiles' transformed input blocks into rows r0.. of ``vf``."""
    if pre:
        _pad_act_into(x[n], xpad, pt, pl, pre_scale, pre_shift)
    else:
        _pad_into(x[n], xpad, pt, pl)
    _in_tiles(xpad.reshape(-1), xpad.shape[1], xpad.shape[2], th, tw, vf, rows, r0)


@conv_jit()
def _products(vf, c, u, v, rows, U, m, panels, zero):
    """m[xi] = A_xi @ U[xi] for the 36 positions, A_xi[r, t] = vf[xi * c * rows + u[r] + v[t]] (all ``rows``);
    ``zero``: Cout zeros (the tiles' bias)."""
    no = rows < 0  # False, but not a literal
    for k in range(XI):
        xf = vf[k * c * rows:]
        b = U[k]
        mk = m[k]
        for i in range(panels.shape[0]):
            j0 = panels[i, 0]
            wd = panels[i, 1]
            if wd == 32:
                for r0 in range(0, rows, W32):
                    WK32(xf, u, r0, v, b, j0, mk, r0, j0, zero, no)
            elif wd == 24:
                for r0 in range(0, rows, W24):
                    WK24(xf, u, r0, v, b, j0, mk, r0, j0, zero, no)
            elif wd == 16:
                for r0 in range(0, rows, W16):
                    WK16(xf, u, r0, v, b, j0, mk, r0, j0, zero, no)
            else:
                for r0 in range(0, rows, W8):
                    WK8(xf, u, r0, v, b, j0, mk, r0, j0, zero, no)


@conv_jit()
def _copy_pixels(src, s0, srs, dst, d0, drs, h, w):
    """``h`` rows of ``w`` values from the flat ``src`` (from s0, rows ``srs`` apart) to the flat ``dst`` (from d0,
    rows ``drs`` apart): a tile's pixels between an image and a (4, 4, C) buffer."""
    for i in range(h):
        for j in range(w):
            dst[d0 + i * drs + j] = src[s0 + i * srs + j]


@conv_jit()
def _out_tiles(mf, ms, r0, th, tw, oh, ow, cout, of, edge):
    """The output pixels of one sample's tiles (rows r0.. of the products, flat ``mf``: 36 blocks of ``ms``) into
    the flat (oh, ow, cout) ``of``; a tile reaching past the output goes through the (4, 4, cout) ``edge``."""
    ors = ow * cout
    ef = edge.reshape(-1)
    zero0 = r0 * 0  # 0, but not a literal (a literal in either place would compile a second _copy_pixels)
    for ty in range(th):
        for tx in range(tw):
            r = r0 + ty * tw + tx
            y0 = M_OUT * ty
            x0 = M_OUT * tx
            if y0 + M_OUT <= oh and x0 + M_OUT <= ow:
                for c0 in range(0, cout, LANES):
                    OUT4(mf, r * cout + c0, ALPHA * ms, ms, of, y0 * ors + x0 * cout + c0, ors, cout)
            else:
                for c0 in range(0, cout, LANES):
                    OUT4(mf, r * cout + c0, ALPHA * ms, ms, ef, c0, M_OUT * cout, cout)
                _copy_pixels(ef, zero0, M_OUT * cout, of, y0 * ors + x0 * cout, ors, min(M_OUT, oh - y0),
                             min(M_OUT, ow - x0) * cout)


@conv_jit()
def winograd_forward_part(p, a):
    """Part ``p`` of ``parts`` of :func:`winograd_forward` (samples p*N//parts to (p+1)*N//parts), serial."""
    (x, U, out, bias, use_bias, add, use_add, pt, pl, th, tw, hp, wp, group, u, v, panels, parts, stats, st_fold,
     st_shift, st_sum, st_sq, pre, pre_scale, pre_shift, bs, bx, bmean, bscale, boffset, bsum, bsumx, bmsk,
     add_masked, add_msk) = a
    N, H, W, C = x.shape
    oh, ow, cout = out.shape[1], out.shape[2], out.shape[3]
    tiles = th * tw
    rows = u.size
    zero = np.zeros(cout, np.float32)
    mode1 = p * 0 + 1  # 1, but not a literal: BatchNorm calls _bwd_sums with an integer variable (one signature)
    xpad = np.zeros((hp, wp, C), np.float32)
    vbuf = np.zeros((XI, C // LANES, rows, LANES), np.float32)
    vf = vbuf.reshape(-1)
    m = np.empty((XI, rows, cout), np.float32)
    mf = m.reshape(-1)
    edge = np.empty((M_OUT, M_OUT, cout), np.float32)
    n0 = p * N // parts
    n1 = (p + 1) * N // parts
    brows = bx.shape[0] // N  # rows of bx per sample (bs)
    b2 = out.reshape((-1, bx.shape[1])) if bs else bx  # the output as bx's rows
    if bs:
        bsum[p, :] = 0.0
        bsumx[p, :] = 0.0
    for g0 in range(n0, n1, group):
        g1 = min(g0 + group, n1)
        for n in range(g0, g1):
            _sample_tiles(x, n, xpad, pt, pl, pre, pre_scale, pre_shift, th, tw, vf, rows, (n - g0) * tiles)
        _products(vf, C, u, v, rows, U, m, panels, zero)
        for n in range(g0, g1):
            of = out[n].reshape(-1)
            _out_tiles(mf, rows * cout, (n - g0) * tiles, th, tw, oh, ow, cout, of, edge)
            if use_bias:
                for i in range(oh * ow):
                    for k in range(cout):
                        of[i * cout + k] += bias[k]
            if use_add:
                af = add[n].reshape(-1)
                if add_masked:  # where the mask is 0 the gradient added is 0 (a ReLU's)
                    am = add_msk[n]
                    for i in range(of.size):
                        of[i] += af[i] if am[i] != 0 else np.float32(0.0)
                else:
                    for i in range(of.size):
                        of[i] += af[i]
            if stats:
                _out_stats(out[n].reshape((oh * ow // st_fold, st_fold * cout)), n == n0, st_shift[p], st_sum[p],
                           st_sq[p])
            if bs:
                _bwd_sums(bx, b2, n * brows, (n + 1) * brows, bmean, bsum[p], bsumx[p], bmsk, mode1, bscale, boffset)


_launch_winograd = _make_launcher("_launch_winograd")
_WINO = PartKernel(winograd_forward_part)


#: the arguments of :func:`winograd_forward` that gather no BatchNorm backward sums
_NO_BSUMS = (False, np.zeros((1, 1), np.float32), np.zeros(1, np.float32), np.zeros(1, np.float32),
             np.zeros(1, np.float32), np.zeros((1, 1)), np.zeros((1, 1)))


def winograd_forward(x, U, out, bias, use_bias, add, use_add, pt, pl, plan: WinogradPlan, parts, stats, st_fold,
                     st_shift, st_sum, st_sq, pre, pre_scale, pre_shift, bsums=_NO_BSUMS, add_mask=None):
    """The convolution of the NHWC batch x (N, H, W, Cin) into out (N, OH, OW, Cout) by F(4x4, 3x3).

    ``U``: :func:`transform_weights` of the weights; ``bias`` (Cout) added when ``use_bias``, ``add`` (out's
    shape) when ``use_add`` (each sample while in cache); ``pt``, ``pl``: the padding above and left of the input. ``stats``, ``st_*``, ``pre``, ``pre_scale``, ``pre_shift``: as in
    :func:`tuinet.engine.conv.kernels.conv2d_forward` (a following BatchNorm's statistics gathered per sample; the
    input transformed to relu(x * scale + shift) on its way into the padded buffer).

    ``bsums`` (an input gradient: out is the gradient of a BatchNorm + ReLU's output): (True, bx, mean, scale,
    offset, sums, sums_x), the BatchNorm's input folded as its kernels see it (rows of fold * C), its mean, scale and
    offset along such a row, and (parts, fold * C) float64 arrays that receive, per part, the sums of its backward
    pass (:func:`tuinet.engine.norm._bwd_sums`, mode 1) over each sample's rows while they are in cache: the pass
    over the whole gradient and x that BatchNorm's backward would make for them.

    ``add_mask`` (uint8, (N, OH * OW * Cout)): ``add`` is added only where it is not 0 (``add`` is the gradient of a
    ReLU's output, masked here: a gradient nobody else needed masked is never written masked).
    """
    parts = min(parts, x.shape[0])
    _run(_launch_winograd, _WINO, parts, x, U, out, bias, use_bias, add, use_add, pt, pl, plan.th, plan.tw, plan.hp, plan.wp,
         plan.group, plan.u, plan.v, plan.panels, parts, stats, st_fold, st_shift, st_sum, st_sq, pre, pre_scale,
         pre_shift, *bsums, _NO_MASK, add_mask is not None, _NO_MASK if add_mask is None else add_mask)


# --- the weight gradient ---------------------------------------------------------------------------------------
# The gradient of the 3x3 weights is the correlation of each 6x6 input block with the 4x4 block of dy over its
# tile, F(3x3, 4x4), whose matrices are F(4x4, 3x3)'s transposed (the same bilinear form read the other way):
# dW = G^T [sum over the tiles of (A H A^T) * (B^T D B)] G, H a tile's dy and D its input block. The sum runs in the
# transformed domain, one product per position, Z[xi] (Cout x Cin) += Hh[xi]^T @ V[xi], reducing over every tile of
# a thread's samples; G^T Z G once at the end.

DY4 = lin2d_kernel(tuple(zip(*AT)), tuple(zip(*AT)), LANES)  # Hh = A H A^T: a 4x4 block of dy vectors to 6x6
#: Cout rows of one vector block (a row apart) by one vector of Cin columns, reducing over tiles (LANES apart)
WKT = tile_kernel(LANES, LANES, LANES, affine=1)


@conv_jit()
def _dy_tiles(gf, ow, cout, oh, th, tw, hf, rows, r0, edge):
    """The transformed 4x4 blocks of one sample's dy (flat ``gf``, (oh, ow, cout)) into rows r0.. of the flat
    (36, cout / LANES, rows, LANES) ``hf``; a block reaching past dy goes through the zero-filled (4, 4, cout)
    ``edge``."""
    ors = ow * cout
    ps = cout * rows
    ef = edge.reshape(-1)
    zero0 = r0 * 0  # 0, but not a literal (see _out_tiles)
    for ty in range(th):
        for tx in range(tw):
            r = r0 + ty * tw + tx
            y0 = M_OUT * ty
            x0 = M_OUT * tx
            if y0 + M_OUT <= oh and x0 + M_OUT <= ow:
                for c0 in range(0, cout, LANES):
                    DY4(gf, y0 * ors + x0 * cout + c0, ors, cout, hf, c0 * rows + r * LANES, ALPHA * ps, ps)
            else:
                ef[:] = 0.0
                _copy_pixels(gf, y0 * ors + x0 * cout, ors, ef, zero0, M_OUT * cout, min(M_OUT, oh - y0),
                             min(M_OUT, ow - x0) * cout)
                for c0 in range(0, cout, LANES):
                    DY4(ef, c0, M_OUT * cout, cout, hf, c0 * rows + r * LANES, ALPHA * ps, ps)


@conv_jit()
def _dw_products(hf, vbuf, cout, rows, cu, tv, z, zero):
    """z[xi] (cout, Cin) += Hh[xi]^T @ V[xi] over the tiles ``tv`` (offsets r * LANES) for the 36 positions."""
    yes = rows > 0  # True, but not a literal
    ps = cout * rows
    for k in range(XI):
        af = hf[k * ps:]
        zk = z[k]
        for r0 in range(0, cout, LANES):
            for b in range(vbuf.shape[1]):
                WKT(af, cu, r0, tv, vbuf[k, b], 0, zk, r0, b * LANES, zero, yes)


@conv_jit()
def winograd_dw_part(p, a):
    """Part ``p`` of ``parts`` of :func:`winograd_weight_grad` (samples p*N//parts to (p+1)*N//parts), serial:
    the sums over its samples' tiles of the 36 products into z[p] (36, Cout, Cin)."""
    (x, dy, z, pt, pl, th, tw, hp, wp, group, cu, tv, parts, pre, pre_scale, pre_shift, use_bias, db) = a
    N, H, W, C = x.shape
    oh, ow, cout = dy.shape[1], dy.shape[2], dy.shape[3]
    tiles = th * tw
    rows = tv.size
    zero = np.zeros(LANES, np.float32)
    xpad = np.zeros((hp, wp, C), np.float32)
    # (every row a product reads is written first: the group's tiles, all of them, in both buffers)
    vbuf = np.empty((XI, C // LANES, rows, LANES), np.float32)
    vf = vbuf.reshape(-1)
    hbuf = np.empty((XI, cout // LANES, rows, LANES), np.float32)
    hf = hbuf.reshape(-1)
    edge = np.empty((M_OUT, M_OUT, cout), np.float32)
    zp = z[p]
    zp[:] = 0.0
    dbp = db[p if use_bias else 0]
    if use_bias:
        dbp[:] = 0.0
    n0 = p * N // parts
    n1 = (p + 1) * N // parts
    for g0 in range(n0, n1, group):
        g1 = min(g0 + group, n1)
        for n in range(g0, g1):
            _sample_tiles(x, n, xpad, pt, pl, pre, pre_scale, pre_shift, th, tw, vf, rows, (n - g0) * tiles)
            _dy_tiles(dy[n].reshape(-1), ow, cout, oh, th, tw, hf, rows, (n - g0) * tiles, edge)
            if use_bias:  # the bias gradient: dy's column sums, while the sample is in cache
                g2 = dy[n].reshape((oh * ow, cout))
                for j0 in range(0, cout, 8):
                    _colsum8(g2, j0, dbp)
        _dw_products(hf, vbuf, cout, rows, cu, tv[:(g1 - g0) * tiles], zp, zero)


_launch_winograd_dw = _make_launcher("_launch_winograd_dw")
_NO_DB = np.zeros((1, 8), np.float32)  #: the bias-gradient argument when there is none
_WINO_DW = PartKernel(winograd_dw_part)


def winograd_weight_grad(x, dy, z, pt, pl, plan: WinogradPlan, parts, pre, pre_scale, pre_shift,
                         db=None) -> np.ndarray:
    """The weight gradient (3, 3, Cin, Cout) of the convolution of x (N, H, W, Cin) whose output's gradient is dy
    (N, OH, OW, Cout), by F(3x3, 4x4) on the forward pass's tiles (``plan``). ``z``: (parts or more, 36, Cout,
    Cin) float32, each thread's sums; ``pre``: the input is relu(x * scale + shift), as in the forward pass. The
    threads' sums are added in part order (in float64), then G^T Z G. ``db`` ((parts or more, Cout) float32): the
    bias gradient is also gathered, each part's column sums of dy in its row (where a NumPy sum over dy took as long
    as this whole pass)."""
    parts = min(parts, x.shape[0])
    use_bias = db is not None
    _run(_launch_winograd_dw, _WINO_DW, parts, x, dy, z, pt, pl, plan.th, plan.tw, plan.hp, plan.wp, plan.dw_group,
         plan.cu, plan.tv, parts, pre, pre_scale, pre_shift, use_bias, db if use_bias else _NO_DB)
    dw = np.empty((3, 3, x.shape[3], dy.shape[3]), np.float32)
    _weight_grad_finish(z, parts, _gtg(), dw)
    return dw


@lru_cache(maxsize=None)
def _gtg() -> np.ndarray:
    """G^T (x) G^T (9 x 36, float64): row 3a + b, column 6k + l holds G^T[a, k] G^T[b, l]."""
    g = np.asarray(_GT, np.float64)
    return np.kron(g, g)


@conv_jit(parallel=True)
def _weight_grad_finish(z, parts, gtg, dw):
    """dw (3, 3, Cin, Cout) = G^T Z G, Z the sum of the parts' z[p] (36, Cout, Cin) in float64, in part order (one
    pass on every core, where NumPy's sums, transform and transpose ran on one: 0.22 ms at 64 x 64 channels)."""
    cout, cin = z.shape[2], z.shape[3]
    for co in prange(cout):
        tot = np.empty((XI, cin), np.float64)
        acc = np.empty(cin, np.float64)
        for k in range(XI):
            t = tot[k]
            for ci in range(cin):
                t[ci] = z[0, k, co, ci]
            for p in range(1, parts):
                for ci in range(cin):
                    t[ci] += z[p, k, co, ci]
        for a in range(9):
            acc[:] = 0.0
            for k in range(XI):
                f = gtg[a, k]
                t = tot[k]
                for ci in range(cin):
                    acc[ci] += f * t[ci]
            for ci in range(cin):
                dw[a // 3, a % 3, ci, co] = np.float32(acc[ci])
