"""Convolution and pooling on NHWC float32 images: Numba kernels and the layers that use them.

Kernel strategy (details above the Conv2D kernels, measured figures in docs/cnn.md):

* Conv2D runs every product as an implicit GEMM (no im2col buffer) on register-blocked micro-kernels: a tile
  of 3-8 rows x 8-32 columns of the result stays in ymm registers for the whole reduction. Forward: rows are
  output positions, columns output channels, the reduction runs over the KH*KW*Cin taps. Weight gradient:
  rows are taps, the reduction runs over the output positions. Input gradient: the full convolution of dy
  (scattered into a zero-bordered buffer) with the spatially flipped, channel-transposed kernel, each tile of
  rows reducing only over the kernel rows that reach dy (not over the zero border above and below).
* ``prange`` runs over one batch chunk per thread; each chunk sums its weight and bias gradients into its own
  partial buffer, and the partials are added afterwards (no racing ``+=`` inside ``prange``).
* MaxPool2D keeps, per output element, the flat index of the input element that won, and its backward pass
  scatters the gradient there; 2x2 windows have their own one-pass kernel.
* A Conv2D followed by a MaxPool2D runs fused when the model calls :meth:`Conv2D.forward_fused` /
  :meth:`Conv2D.backward_fused` (``Sequential`` does for every such pair): each sample's convolution output
  (and, backward, its gradient) lives only in a per-thread buffer, so the full-size activation never goes
  through memory. Results are bit-for-bit those of the two layers run one after the other.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import ClassVar

import numba
import numpy as np
from numba import njit, prange

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
#
# Every convolution product here is a GEMM whose A operand is read straight from the image ("implicit GEMM",
# no im2col buffer): A[r, t] = xf[u[r] + v[t]], with u/v tables of flat offsets (output positions and window
# taps). The GEMMs run on register-blocked micro-kernels that keep an R x W tile of C (R rows, W = 8..32
# columns) in scalar locals for the whole reduction; LLVM's SLP vectorizer packs each row of W scalars into
# W/8 ymm registers, so the inner loop is R broadcasts, W/8 vector loads of B and R*W/8 vector FMAs, with no
# loads or stores of C. Two compiler settings make this work and are specific to these kernels:
#
# * SLP vectorization is off in Numba by default (NUMBA_SLP_VECTORIZE=0); Conv2D turns it on only while its
#   kernels are called (:func:`_slp_vectorize`), i.e. while they compile; cached machine code keeps it.
# * The micro-kernels are compiled without the 'reassoc' fast-math flag (``_mk_jit``): with it the loop
#   vectorizer treats every accumulator as a reduction over t and vectorizes the wrong loop (strided loads of B
#   and horizontal sums; measured 4-10x slower).
#
# The micro-kernel sources are generated by :func:`microkernel_source` (a test checks they match it).

_MK_ROWS = {32: 3, 24: 3, 16: 4, 8: 8}  # panel width -> rows per tile (12, 9, 8, 8 ymm accumulators)


def _mk_jit():
    return njit(cache=True, nogil=True, fastmath={"contract", "arcp", "nsz"}, error_model="numpy")


@contextmanager
def _slp_vectorize():
    """Enable LLVM's SLP vectorizer for whatever Numba compiles inside the block (the conv kernels).

    Numba re-reads its configuration from the ``NUMBA_*`` environment variables before each compilation
    whenever they changed, so both the variable and ``numba.config`` are set, and both restored afterwards.
    """
    old_env = os.environ.get("NUMBA_SLP_VECTORIZE")
    old = numba.config.SLP_VECTORIZE
    os.environ["NUMBA_SLP_VECTORIZE"] = "1"
    numba.config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("NUMBA_SLP_VECTORIZE", None)
        else:
            os.environ["NUMBA_SLP_VECTORIZE"] = old_env
        numba.config.SLP_VECTORIZE = old


def _pack_lines(stmts, indent, width=116):
    lines, cur = [], ""
    for s in stmts:
        cand = s if not cur else cur + "; " + s
        if len(indent) + len(cand) > width and cur:
            lines.append(indent + cur)
            cur = s
        else:
            cur = cand
    if cur:
        lines.append(indent + cur)
    return lines


def microkernel_source(rows: int, width: int) -> str:
    """Source of the ``_mk{rows}x{width}`` micro-kernel (the generated code below)."""
    R, W = rows, width
    out = ["@_mk_jit()",
           f"def _mk{R}x{W}(xf, u, r0, v, b, j0, c, bias, accumulate):  # noqa: E702",
           f'    """T = sum_t xf[u[r0 + r] + v[t]] * b[t, j0:j0 + {W}] for r < {R} (generated code).',
           "",
           f'    c[r0 + r, j0:j0 + {W}] += T (accumulate) or = T + bias[j0:j0 + {W}]."""']
    out += _pack_lines([f"x{r} = xf[u[r0 + {r}]:]" for r in range(R)], "    ")
    out += _pack_lines([f"c{r}_{w} = F0" for r in range(R) for w in range(W)], "    ")
    out.append("    for t in range(v.size):")
    out.append(f"        vt = v[t]; br = b[t][j0:j0 + {W}]")
    out += _pack_lines([f"b{w} = br[{w}]" for w in range(W)], "        ")
    for r in range(R):
        out += _pack_lines([f"a = x{r}[vt]"] + [f"c{r}_{w} += a * b{w}" for w in range(W)], "        ")
    out.append("    if accumulate:")
    for r in range(R):
        out += _pack_lines([f"cr = c[r0 + {r}][j0:j0 + {W}]"] + [f"cr[{w}] += c{r}_{w}" for w in range(W)],
                           "        ")
    out.append("    else:")
    out.append(f"        br = bias[j0:j0 + {W}]")
    out += _pack_lines([f"b{w} = br[{w}]" for w in range(W)], "        ")
    for r in range(R):
        out += _pack_lines([f"cr = c[r0 + {r}][j0:j0 + {W}]"] + [f"cr[{w}] = c{r}_{w} + b{w}" for w in range(W)],
                           "        ")
    return "\n".join(out) + "\n"


# fmt: off
# BEGIN GENERATED MICRO-KERNELS


@_mk_jit()
def _mk3x32(xf, u, r0, v, b, j0, c, bias, accumulate):  # noqa: E702
    """T = sum_t xf[u[r0 + r] + v[t]] * b[t, j0:j0 + 32] for r < 3 (generated code).

    c[r0 + r, j0:j0 + 32] += T (accumulate) or = T + bias[j0:j0 + 32]."""
    x0 = xf[u[r0 + 0]:]; x1 = xf[u[r0 + 1]:]; x2 = xf[u[r0 + 2]:]
    c0_0 = F0; c0_1 = F0; c0_2 = F0; c0_3 = F0; c0_4 = F0; c0_5 = F0; c0_6 = F0; c0_7 = F0; c0_8 = F0; c0_9 = F0
    c0_10 = F0; c0_11 = F0; c0_12 = F0; c0_13 = F0; c0_14 = F0; c0_15 = F0; c0_16 = F0; c0_17 = F0; c0_18 = F0
    c0_19 = F0; c0_20 = F0; c0_21 = F0; c0_22 = F0; c0_23 = F0; c0_24 = F0; c0_25 = F0; c0_26 = F0; c0_27 = F0
    c0_28 = F0; c0_29 = F0; c0_30 = F0; c0_31 = F0; c1_0 = F0; c1_1 = F0; c1_2 = F0; c1_3 = F0; c1_4 = F0; c1_5 = F0
    c1_6 = F0; c1_7 = F0; c1_8 = F0; c1_9 = F0; c1_10 = F0; c1_11 = F0; c1_12 = F0; c1_13 = F0; c1_14 = F0
    c1_15 = F0; c1_16 = F0; c1_17 = F0; c1_18 = F0; c1_19 = F0; c1_20 = F0; c1_21 = F0; c1_22 = F0; c1_23 = F0
    c1_24 = F0; c1_25 = F0; c1_26 = F0; c1_27 = F0; c1_28 = F0; c1_29 = F0; c1_30 = F0; c1_31 = F0; c2_0 = F0
    c2_1 = F0; c2_2 = F0; c2_3 = F0; c2_4 = F0; c2_5 = F0; c2_6 = F0; c2_7 = F0; c2_8 = F0; c2_9 = F0; c2_10 = F0
    c2_11 = F0; c2_12 = F0; c2_13 = F0; c2_14 = F0; c2_15 = F0; c2_16 = F0; c2_17 = F0; c2_18 = F0; c2_19 = F0
    c2_20 = F0; c2_21 = F0; c2_22 = F0; c2_23 = F0; c2_24 = F0; c2_25 = F0; c2_26 = F0; c2_27 = F0; c2_28 = F0
    c2_29 = F0; c2_30 = F0; c2_31 = F0
    for t in range(v.size):
        vt = v[t]; br = b[t][j0:j0 + 32]
        b0 = br[0]; b1 = br[1]; b2 = br[2]; b3 = br[3]; b4 = br[4]; b5 = br[5]; b6 = br[6]; b7 = br[7]; b8 = br[8]
        b9 = br[9]; b10 = br[10]; b11 = br[11]; b12 = br[12]; b13 = br[13]; b14 = br[14]; b15 = br[15]; b16 = br[16]
        b17 = br[17]; b18 = br[18]; b19 = br[19]; b20 = br[20]; b21 = br[21]; b22 = br[22]; b23 = br[23]
        b24 = br[24]; b25 = br[25]; b26 = br[26]; b27 = br[27]; b28 = br[28]; b29 = br[29]; b30 = br[30]
        b31 = br[31]
        a = x0[vt]; c0_0 += a * b0; c0_1 += a * b1; c0_2 += a * b2; c0_3 += a * b3; c0_4 += a * b4; c0_5 += a * b5
        c0_6 += a * b6; c0_7 += a * b7; c0_8 += a * b8; c0_9 += a * b9; c0_10 += a * b10; c0_11 += a * b11
        c0_12 += a * b12; c0_13 += a * b13; c0_14 += a * b14; c0_15 += a * b15; c0_16 += a * b16; c0_17 += a * b17
        c0_18 += a * b18; c0_19 += a * b19; c0_20 += a * b20; c0_21 += a * b21; c0_22 += a * b22; c0_23 += a * b23
        c0_24 += a * b24; c0_25 += a * b25; c0_26 += a * b26; c0_27 += a * b27; c0_28 += a * b28; c0_29 += a * b29
        c0_30 += a * b30; c0_31 += a * b31
        a = x1[vt]; c1_0 += a * b0; c1_1 += a * b1; c1_2 += a * b2; c1_3 += a * b3; c1_4 += a * b4; c1_5 += a * b5
        c1_6 += a * b6; c1_7 += a * b7; c1_8 += a * b8; c1_9 += a * b9; c1_10 += a * b10; c1_11 += a * b11
        c1_12 += a * b12; c1_13 += a * b13; c1_14 += a * b14; c1_15 += a * b15; c1_16 += a * b16; c1_17 += a * b17
        c1_18 += a * b18; c1_19 += a * b19; c1_20 += a * b20; c1_21 += a * b21; c1_22 += a * b22; c1_23 += a * b23
        c1_24 += a * b24; c1_25 += a * b25; c1_26 += a * b26; c1_27 += a * b27; c1_28 += a * b28; c1_29 += a * b29
        c1_30 += a * b30; c1_31 += a * b31
        a = x2[vt]; c2_0 += a * b0; c2_1 += a * b1; c2_2 += a * b2; c2_3 += a * b3; c2_4 += a * b4; c2_5 += a * b5
        c2_6 += a * b6; c2_7 += a * b7; c2_8 += a * b8; c2_9 += a * b9; c2_10 += a * b10; c2_11 += a * b11
        c2_12 += a * b12; c2_13 += a * b13; c2_14 += a * b14; c2_15 += a * b15; c2_16 += a * b16; c2_17 += a * b17
        c2_18 += a * b18; c2_19 += a * b19; c2_20 += a * b20; c2_21 += a * b21; c2_22 += a * b22; c2_23 += a * b23
        c2_24 += a * b24; c2_25 += a * b25; c2_26 += a * b26; c2_27 += a * b27; c2_28 += a * b28; c2_29 += a * b29
        c2_30 += a * b30; c2_31 += a * b31
    if accumulate:
        cr = c[r0 + 0][j0:j0 + 32]; cr[0] += c0_0; cr[1] += c0_1; cr[2] += c0_2; cr[3] += c0_3; cr[4] += c0_4
        cr[5] += c0_5; cr[6] += c0_6; cr[7] += c0_7; cr[8] += c0_8; cr[9] += c0_9; cr[10] += c0_10; cr[11] += c0_11
        cr[12] += c0_12; cr[13] += c0_13; cr[14] += c0_14; cr[15] += c0_15; cr[16] += c0_16; cr[17] += c0_17
        cr[18] += c0_18; cr[19] += c0_19; cr[20] += c0_20; cr[21] += c0_21; cr[22] += c0_22; cr[23] += c0_23
        cr[24] += c0_24; cr[25] += c0_25; cr[26] += c0_26; cr[27] += c0_27; cr[28] += c0_28; cr[29] += c0_29
        cr[30] += c0_30; cr[31] += c0_31
        cr = c[r0 + 1][j0:j0 + 32]; cr[0] += c1_0; cr[1] += c1_1; cr[2] += c1_2; cr[3] += c1_3; cr[4] += c1_4
        cr[5] += c1_5; cr[6] += c1_6; cr[7] += c1_7; cr[8] += c1_8; cr[9] += c1_9; cr[10] += c1_10; cr[11] += c1_11
        cr[12] += c1_12; cr[13] += c1_13; cr[14] += c1_14; cr[15] += c1_15; cr[16] += c1_16; cr[17] += c1_17
        cr[18] += c1_18; cr[19] += c1_19; cr[20] += c1_20; cr[21] += c1_21; cr[22] += c1_22; cr[23] += c1_23
        cr[24] += c1_24; cr[25] += c1_25; cr[26] += c1_26; cr[27] += c1_27; cr[28] += c1_28; cr[29] += c1_29
        cr[30] += c1_30; cr[31] += c1_31
        cr = c[r0 + 2][j0:j0 + 32]; cr[0] += c2_0; cr[1] += c2_1; cr[2] += c2_2; cr[3] += c2_3; cr[4] += c2_4
        cr[5] += c2_5; cr[6] += c2_6; cr[7] += c2_7; cr[8] += c2_8; cr[9] += c2_9; cr[10] += c2_10; cr[11] += c2_11
        cr[12] += c2_12; cr[13] += c2_13; cr[14] += c2_14; cr[15] += c2_15; cr[16] += c2_16; cr[17] += c2_17
        cr[18] += c2_18; cr[19] += c2_19; cr[20] += c2_20; cr[21] += c2_21; cr[22] += c2_22; cr[23] += c2_23
        cr[24] += c2_24; cr[25] += c2_25; cr[26] += c2_26; cr[27] += c2_27; cr[28] += c2_28; cr[29] += c2_29
        cr[30] += c2_30; cr[31] += c2_31
    else:
        br = bias[j0:j0 + 32]
        b0 = br[0]; b1 = br[1]; b2 = br[2]; b3 = br[3]; b4 = br[4]; b5 = br[5]; b6 = br[6]; b7 = br[7]; b8 = br[8]
        b9 = br[9]; b10 = br[10]; b11 = br[11]; b12 = br[12]; b13 = br[13]; b14 = br[14]; b15 = br[15]; b16 = br[16]
        b17 = br[17]; b18 = br[18]; b19 = br[19]; b20 = br[20]; b21 = br[21]; b22 = br[22]; b23 = br[23]
        b24 = br[24]; b25 = br[25]; b26 = br[26]; b27 = br[27]; b28 = br[28]; b29 = br[29]; b30 = br[30]
        b31 = br[31]
        cr = c[r0 + 0][j0:j0 + 32]; cr[0] = c0_0 + b0; cr[1] = c0_1 + b1; cr[2] = c0_2 + b2; cr[3] = c0_3 + b3
        cr[4] = c0_4 + b4; cr[5] = c0_5 + b5; cr[6] = c0_6 + b6; cr[7] = c0_7 + b7; cr[8] = c0_8 + b8
        cr[9] = c0_9 + b9; cr[10] = c0_10 + b10; cr[11] = c0_11 + b11; cr[12] = c0_12 + b12; cr[13] = c0_13 + b13
        cr[14] = c0_14 + b14; cr[15] = c0_15 + b15; cr[16] = c0_16 + b16; cr[17] = c0_17 + b17; cr[18] = c0_18 + b18
        cr[19] = c0_19 + b19; cr[20] = c0_20 + b20; cr[21] = c0_21 + b21; cr[22] = c0_22 + b22; cr[23] = c0_23 + b23
        cr[24] = c0_24 + b24; cr[25] = c0_25 + b25; cr[26] = c0_26 + b26; cr[27] = c0_27 + b27; cr[28] = c0_28 + b28
        cr[29] = c0_29 + b29; cr[30] = c0_30 + b30; cr[31] = c0_31 + b31
        cr = c[r0 + 1][j0:j0 + 32]; cr[0] = c1_0 + b0; cr[1] = c1_1 + b1; cr[2] = c1_2 + b2; cr[3] = c1_3 + b3
        cr[4] = c1_4 + b4; cr[5] = c1_5 + b5; cr[6] = c1_6 + b6; cr[7] = c1_7 + b7; cr[8] = c1_8 + b8
        cr[9] = c1_9 + b9; cr[10] = c1_10 + b10; cr[11] = c1_11 + b11; cr[12] = c1_12 + b12; cr[13] = c1_13 + b13
        cr[14] = c1_14 + b14; cr[15] = c1_15 + b15; cr[16] = c1_16 + b16; cr[17] = c1_17 + b17; cr[18] = c1_18 + b18
        cr[19] = c1_19 + b19; cr[20] = c1_20 + b20; cr[21] = c1_21 + b21; cr[22] = c1_22 + b22; cr[23] = c1_23 + b23
        cr[24] = c1_24 + b24; cr[25] = c1_25 + b25; cr[26] = c1_26 + b26; cr[27] = c1_27 + b27; cr[28] = c1_28 + b28
        cr[29] = c1_29 + b29; cr[30] = c1_30 + b30; cr[31] = c1_31 + b31
        cr = c[r0 + 2][j0:j0 + 32]; cr[0] = c2_0 + b0; cr[1] = c2_1 + b1; cr[2] = c2_2 + b2; cr[3] = c2_3 + b3
        cr[4] = c2_4 + b4; cr[5] = c2_5 + b5; cr[6] = c2_6 + b6; cr[7] = c2_7 + b7; cr[8] = c2_8 + b8
        cr[9] = c2_9 + b9; cr[10] = c2_10 + b10; cr[11] = c2_11 + b11; cr[12] = c2_12 + b12; cr[13] = c2_13 + b13
        cr[14] = c2_14 + b14; cr[15] = c2_15 + b15; cr[16] = c2_16 + b16; cr[17] = c2_17 + b17; cr[18] = c2_18 + b18
        cr[19] = c2_19 + b19; cr[20] = c2_20 + b20; cr[21] = c2_21 + b21; cr[22] = c2_22 + b22; cr[23] = c2_23 + b23
        cr[24] = c2_24 + b24; cr[25] = c2_25 + b25; cr[26] = c2_26 + b26; cr[27] = c2_27 + b27; cr[28] = c2_28 + b28
        cr[29] = c2_29 + b29; cr[30] = c2_30 + b30; cr[31] = c2_31 + b31


@_mk_jit()
def _mk3x24(xf, u, r0, v, b, j0, c, bias, accumulate):  # noqa: E702
    """T = sum_t xf[u[r0 + r] + v[t]] * b[t, j0:j0 + 24] for r < 3 (generated code).

    c[r0 + r, j0:j0 + 24] += T (accumulate) or = T + bias[j0:j0 + 24]."""
    x0 = xf[u[r0 + 0]:]; x1 = xf[u[r0 + 1]:]; x2 = xf[u[r0 + 2]:]
    c0_0 = F0; c0_1 = F0; c0_2 = F0; c0_3 = F0; c0_4 = F0; c0_5 = F0; c0_6 = F0; c0_7 = F0; c0_8 = F0; c0_9 = F0
    c0_10 = F0; c0_11 = F0; c0_12 = F0; c0_13 = F0; c0_14 = F0; c0_15 = F0; c0_16 = F0; c0_17 = F0; c0_18 = F0
    c0_19 = F0; c0_20 = F0; c0_21 = F0; c0_22 = F0; c0_23 = F0; c1_0 = F0; c1_1 = F0; c1_2 = F0; c1_3 = F0
    c1_4 = F0; c1_5 = F0; c1_6 = F0; c1_7 = F0; c1_8 = F0; c1_9 = F0; c1_10 = F0; c1_11 = F0; c1_12 = F0; c1_13 = F0
    c1_14 = F0; c1_15 = F0; c1_16 = F0; c1_17 = F0; c1_18 = F0; c1_19 = F0; c1_20 = F0; c1_21 = F0; c1_22 = F0
    c1_23 = F0; c2_0 = F0; c2_1 = F0; c2_2 = F0; c2_3 = F0; c2_4 = F0; c2_5 = F0; c2_6 = F0; c2_7 = F0; c2_8 = F0
    c2_9 = F0; c2_10 = F0; c2_11 = F0; c2_12 = F0; c2_13 = F0; c2_14 = F0; c2_15 = F0; c2_16 = F0; c2_17 = F0
    c2_18 = F0; c2_19 = F0; c2_20 = F0; c2_21 = F0; c2_22 = F0; c2_23 = F0
    for t in range(v.size):
        vt = v[t]; br = b[t][j0:j0 + 24]
        b0 = br[0]; b1 = br[1]; b2 = br[2]; b3 = br[3]; b4 = br[4]; b5 = br[5]; b6 = br[6]; b7 = br[7]; b8 = br[8]
        b9 = br[9]; b10 = br[10]; b11 = br[11]; b12 = br[12]; b13 = br[13]; b14 = br[14]; b15 = br[15]; b16 = br[16]
        b17 = br[17]; b18 = br[18]; b19 = br[19]; b20 = br[20]; b21 = br[21]; b22 = br[22]; b23 = br[23]
        a = x0[vt]; c0_0 += a * b0; c0_1 += a * b1; c0_2 += a * b2; c0_3 += a * b3; c0_4 += a * b4; c0_5 += a * b5
        c0_6 += a * b6; c0_7 += a * b7; c0_8 += a * b8; c0_9 += a * b9; c0_10 += a * b10; c0_11 += a * b11
        c0_12 += a * b12; c0_13 += a * b13; c0_14 += a * b14; c0_15 += a * b15; c0_16 += a * b16; c0_17 += a * b17
        c0_18 += a * b18; c0_19 += a * b19; c0_20 += a * b20; c0_21 += a * b21; c0_22 += a * b22; c0_23 += a * b23
        a = x1[vt]; c1_0 += a * b0; c1_1 += a * b1; c1_2 += a * b2; c1_3 += a * b3; c1_4 += a * b4; c1_5 += a * b5
        c1_6 += a * b6; c1_7 += a * b7; c1_8 += a * b8; c1_9 += a * b9; c1_10 += a * b10; c1_11 += a * b11
        c1_12 += a * b12; c1_13 += a * b13; c1_14 += a * b14; c1_15 += a * b15; c1_16 += a * b16; c1_17 += a * b17
        c1_18 += a * b18; c1_19 += a * b19; c1_20 += a * b20; c1_21 += a * b21; c1_22 += a * b22; c1_23 += a * b23
        a = x2[vt]; c2_0 += a * b0; c2_1 += a * b1; c2_2 += a * b2; c2_3 += a * b3; c2_4 += a * b4; c2_5 += a * b5
        c2_6 += a * b6; c2_7 += a * b7; c2_8 += a * b8; c2_9 += a * b9; c2_10 += a * b10; c2_11 += a * b11
        c2_12 += a * b12; c2_13 += a * b13; c2_14 += a * b14; c2_15 += a * b15; c2_16 += a * b16; c2_17 += a * b17
        c2_18 += a * b18; c2_19 += a * b19; c2_20 += a * b20; c2_21 += a * b21; c2_22 += a * b22; c2_23 += a * b23
    if accumulate:
        cr = c[r0 + 0][j0:j0 + 24]; cr[0] += c0_0; cr[1] += c0_1; cr[2] += c0_2; cr[3] += c0_3; cr[4] += c0_4
        cr[5] += c0_5; cr[6] += c0_6; cr[7] += c0_7; cr[8] += c0_8; cr[9] += c0_9; cr[10] += c0_10; cr[11] += c0_11
        cr[12] += c0_12; cr[13] += c0_13; cr[14] += c0_14; cr[15] += c0_15; cr[16] += c0_16; cr[17] += c0_17
        cr[18] += c0_18; cr[19] += c0_19; cr[20] += c0_20; cr[21] += c0_21; cr[22] += c0_22; cr[23] += c0_23
        cr = c[r0 + 1][j0:j0 + 24]; cr[0] += c1_0; cr[1] += c1_1; cr[2] += c1_2; cr[3] += c1_3; cr[4] += c1_4
        cr[5] += c1_5; cr[6] += c1_6; cr[7] += c1_7; cr[8] += c1_8; cr[9] += c1_9; cr[10] += c1_10; cr[11] += c1_11
        cr[12] += c1_12; cr[13] += c1_13; cr[14] += c1_14; cr[15] += c1_15; cr[16] += c1_16; cr[17] += c1_17
        cr[18] += c1_18; cr[19] += c1_19; cr[20] += c1_20; cr[21] += c1_21; cr[22] += c1_22; cr[23] += c1_23
        cr = c[r0 + 2][j0:j0 + 24]; cr[0] += c2_0; cr[1] += c2_1; cr[2] += c2_2; cr[3] += c2_3; cr[4] += c2_4
        cr[5] += c2_5; cr[6] += c2_6; cr[7] += c2_7; cr[8] += c2_8; cr[9] += c2_9; cr[10] += c2_10; cr[11] += c2_11
        cr[12] += c2_12; cr[13] += c2_13; cr[14] += c2_14; cr[15] += c2_15; cr[16] += c2_16; cr[17] += c2_17
        cr[18] += c2_18; cr[19] += c2_19; cr[20] += c2_20; cr[21] += c2_21; cr[22] += c2_22; cr[23] += c2_23
    else:
        br = bias[j0:j0 + 24]
        b0 = br[0]; b1 = br[1]; b2 = br[2]; b3 = br[3]; b4 = br[4]; b5 = br[5]; b6 = br[6]; b7 = br[7]; b8 = br[8]
        b9 = br[9]; b10 = br[10]; b11 = br[11]; b12 = br[12]; b13 = br[13]; b14 = br[14]; b15 = br[15]; b16 = br[16]
        b17 = br[17]; b18 = br[18]; b19 = br[19]; b20 = br[20]; b21 = br[21]; b22 = br[22]; b23 = br[23]
        cr = c[r0 + 0][j0:j0 + 24]; cr[0] = c0_0 + b0; cr[1] = c0_1 + b1; cr[2] = c0_2 + b2; cr[3] = c0_3 + b3
        cr[4] = c0_4 + b4; cr[5] = c0_5 + b5; cr[6] = c0_6 + b6; cr[7] = c0_7 + b7; cr[8] = c0_8 + b8
        cr[9] = c0_9 + b9; cr[10] = c0_10 + b10; cr[11] = c0_11 + b11; cr[12] = c0_12 + b12; cr[13] = c0_13 + b13
        cr[14] = c0_14 + b14; cr[15] = c0_15 + b15; cr[16] = c0_16 + b16; cr[17] = c0_17 + b17; cr[18] = c0_18 + b18
        cr[19] = c0_19 + b19; cr[20] = c0_20 + b20; cr[21] = c0_21 + b21; cr[22] = c0_22 + b22; cr[23] = c0_23 + b23
        cr = c[r0 + 1][j0:j0 + 24]; cr[0] = c1_0 + b0; cr[1] = c1_1 + b1; cr[2] = c1_2 + b2; cr[3] = c1_3 + b3
        cr[4] = c1_4 + b4; cr[5] = c1_5 + b5; cr[6] = c1_6 + b6; cr[7] = c1_7 + b7; cr[8] = c1_8 + b8
        cr[9] = c1_9 + b9; cr[10] = c1_10 + b10; cr[11] = c1_11 + b11; cr[12] = c1_12 + b12; cr[13] = c1_13 + b13
        cr[14] = c1_14 + b14; cr[15] = c1_15 + b15; cr[16] = c1_16 + b16; cr[17] = c1_17 + b17; cr[18] = c1_18 + b18
        cr[19] = c1_19 + b19; cr[20] = c1_20 + b20; cr[21] = c1_21 + b21; cr[22] = c1_22 + b22; cr[23] = c1_23 + b23
        cr = c[r0 + 2][j0:j0 + 24]; cr[0] = c2_0 + b0; cr[1] = c2_1 + b1; cr[2] = c2_2 + b2; cr[3] = c2_3 + b3
        cr[4] = c2_4 + b4; cr[5] = c2_5 + b5; cr[6] = c2_6 + b6; cr[7] = c2_7 + b7; cr[8] = c2_8 + b8
        cr[9] = c2_9 + b9; cr[10] = c2_10 + b10; cr[11] = c2_11 + b11; cr[12] = c2_12 + b12; cr[13] = c2_13 + b13
        cr[14] = c2_14 + b14; cr[15] = c2_15 + b15; cr[16] = c2_16 + b16; cr[17] = c2_17 + b17; cr[18] = c2_18 + b18
        cr[19] = c2_19 + b19; cr[20] = c2_20 + b20; cr[21] = c2_21 + b21; cr[22] = c2_22 + b22; cr[23] = c2_23 + b23


@_mk_jit()
def _mk4x16(xf, u, r0, v, b, j0, c, bias, accumulate):  # noqa: E702
    """T = sum_t xf[u[r0 + r] + v[t]] * b[t, j0:j0 + 16] for r < 4 (generated code).

    c[r0 + r, j0:j0 + 16] += T (accumulate) or = T + bias[j0:j0 + 16]."""
    x0 = xf[u[r0 + 0]:]; x1 = xf[u[r0 + 1]:]; x2 = xf[u[r0 + 2]:]; x3 = xf[u[r0 + 3]:]
    c0_0 = F0; c0_1 = F0; c0_2 = F0; c0_3 = F0; c0_4 = F0; c0_5 = F0; c0_6 = F0; c0_7 = F0; c0_8 = F0; c0_9 = F0
    c0_10 = F0; c0_11 = F0; c0_12 = F0; c0_13 = F0; c0_14 = F0; c0_15 = F0; c1_0 = F0; c1_1 = F0; c1_2 = F0
    c1_3 = F0; c1_4 = F0; c1_5 = F0; c1_6 = F0; c1_7 = F0; c1_8 = F0; c1_9 = F0; c1_10 = F0; c1_11 = F0; c1_12 = F0
    c1_13 = F0; c1_14 = F0; c1_15 = F0; c2_0 = F0; c2_1 = F0; c2_2 = F0; c2_3 = F0; c2_4 = F0; c2_5 = F0; c2_6 = F0
    c2_7 = F0; c2_8 = F0; c2_9 = F0; c2_10 = F0; c2_11 = F0; c2_12 = F0; c2_13 = F0; c2_14 = F0; c2_15 = F0
    c3_0 = F0; c3_1 = F0; c3_2 = F0; c3_3 = F0; c3_4 = F0; c3_5 = F0; c3_6 = F0; c3_7 = F0; c3_8 = F0; c3_9 = F0
    c3_10 = F0; c3_11 = F0; c3_12 = F0; c3_13 = F0; c3_14 = F0; c3_15 = F0
    for t in range(v.size):
        vt = v[t]; br = b[t][j0:j0 + 16]
        b0 = br[0]; b1 = br[1]; b2 = br[2]; b3 = br[3]; b4 = br[4]; b5 = br[5]; b6 = br[6]; b7 = br[7]; b8 = br[8]
        b9 = br[9]; b10 = br[10]; b11 = br[11]; b12 = br[12]; b13 = br[13]; b14 = br[14]; b15 = br[15]
        a = x0[vt]; c0_0 += a * b0; c0_1 += a * b1; c0_2 += a * b2; c0_3 += a * b3; c0_4 += a * b4; c0_5 += a * b5
        c0_6 += a * b6; c0_7 += a * b7; c0_8 += a * b8; c0_9 += a * b9; c0_10 += a * b10; c0_11 += a * b11
        c0_12 += a * b12; c0_13 += a * b13; c0_14 += a * b14; c0_15 += a * b15
        a = x1[vt]; c1_0 += a * b0; c1_1 += a * b1; c1_2 += a * b2; c1_3 += a * b3; c1_4 += a * b4; c1_5 += a * b5
        c1_6 += a * b6; c1_7 += a * b7; c1_8 += a * b8; c1_9 += a * b9; c1_10 += a * b10; c1_11 += a * b11
        c1_12 += a * b12; c1_13 += a * b13; c1_14 += a * b14; c1_15 += a * b15
        a = x2[vt]; c2_0 += a * b0; c2_1 += a * b1; c2_2 += a * b2; c2_3 += a * b3; c2_4 += a * b4; c2_5 += a * b5
        c2_6 += a * b6; c2_7 += a * b7; c2_8 += a * b8; c2_9 += a * b9; c2_10 += a * b10; c2_11 += a * b11
        c2_12 += a * b12; c2_13 += a * b13; c2_14 += a * b14; c2_15 += a * b15
        a = x3[vt]; c3_0 += a * b0; c3_1 += a * b1; c3_2 += a * b2; c3_3 += a * b3; c3_4 += a * b4; c3_5 += a * b5
        c3_6 += a * b6; c3_7 += a * b7; c3_8 += a * b8; c3_9 += a * b9; c3_10 += a * b10; c3_11 += a * b11
        c3_12 += a * b12; c3_13 += a * b13; c3_14 += a * b14; c3_15 += a * b15
    if accumulate:
        cr = c[r0 + 0][j0:j0 + 16]; cr[0] += c0_0; cr[1] += c0_1; cr[2] += c0_2; cr[3] += c0_3; cr[4] += c0_4
        cr[5] += c0_5; cr[6] += c0_6; cr[7] += c0_7; cr[8] += c0_8; cr[9] += c0_9; cr[10] += c0_10; cr[11] += c0_11
        cr[12] += c0_12; cr[13] += c0_13; cr[14] += c0_14; cr[15] += c0_15
        cr = c[r0 + 1][j0:j0 + 16]; cr[0] += c1_0; cr[1] += c1_1; cr[2] += c1_2; cr[3] += c1_3; cr[4] += c1_4
        cr[5] += c1_5; cr[6] += c1_6; cr[7] += c1_7; cr[8] += c1_8; cr[9] += c1_9; cr[10] += c1_10; cr[11] += c1_11
        cr[12] += c1_12; cr[13] += c1_13; cr[14] += c1_14; cr[15] += c1_15
        cr = c[r0 + 2][j0:j0 + 16]; cr[0] += c2_0; cr[1] += c2_1; cr[2] += c2_2; cr[3] += c2_3; cr[4] += c2_4
        cr[5] += c2_5; cr[6] += c2_6; cr[7] += c2_7; cr[8] += c2_8; cr[9] += c2_9; cr[10] += c2_10; cr[11] += c2_11
        cr[12] += c2_12; cr[13] += c2_13; cr[14] += c2_14; cr[15] += c2_15
        cr = c[r0 + 3][j0:j0 + 16]; cr[0] += c3_0; cr[1] += c3_1; cr[2] += c3_2; cr[3] += c3_3; cr[4] += c3_4
        cr[5] += c3_5; cr[6] += c3_6; cr[7] += c3_7; cr[8] += c3_8; cr[9] += c3_9; cr[10] += c3_10; cr[11] += c3_11
        cr[12] += c3_12; cr[13] += c3_13; cr[14] += c3_14; cr[15] += c3_15
    else:
        br = bias[j0:j0 + 16]
        b0 = br[0]; b1 = br[1]; b2 = br[2]; b3 = br[3]; b4 = br[4]; b5 = br[5]; b6 = br[6]; b7 = br[7]; b8 = br[8]
        b9 = br[9]; b10 = br[10]; b11 = br[11]; b12 = br[12]; b13 = br[13]; b14 = br[14]; b15 = br[15]
        cr = c[r0 + 0][j0:j0 + 16]; cr[0] = c0_0 + b0; cr[1] = c0_1 + b1; cr[2] = c0_2 + b2; cr[3] = c0_3 + b3
        cr[4] = c0_4 + b4; cr[5] = c0_5 + b5; cr[6] = c0_6 + b6; cr[7] = c0_7 + b7; cr[8] = c0_8 + b8
        cr[9] = c0_9 + b9; cr[10] = c0_10 + b10; cr[11] = c0_11 + b11; cr[12] = c0_12 + b12; cr[13] = c0_13 + b13
        cr[14] = c0_14 + b14; cr[15] = c0_15 + b15
        cr = c[r0 + 1][j0:j0 + 16]; cr[0] = c1_0 + b0; cr[1] = c1_1 + b1; cr[2] = c1_2 + b2; cr[3] = c1_3 + b3
        cr[4] = c1_4 + b4; cr[5] = c1_5 + b5; cr[6] = c1_6 + b6; cr[7] = c1_7 + b7; cr[8] = c1_8 + b8
        cr[9] = c1_9 + b9; cr[10] = c1_10 + b10; cr[11] = c1_11 + b11; cr[12] = c1_12 + b12; cr[13] = c1_13 + b13
        cr[14] = c1_14 + b14; cr[15] = c1_15 + b15
        cr = c[r0 + 2][j0:j0 + 16]; cr[0] = c2_0 + b0; cr[1] = c2_1 + b1; cr[2] = c2_2 + b2; cr[3] = c2_3 + b3
        cr[4] = c2_4 + b4; cr[5] = c2_5 + b5; cr[6] = c2_6 + b6; cr[7] = c2_7 + b7; cr[8] = c2_8 + b8
        cr[9] = c2_9 + b9; cr[10] = c2_10 + b10; cr[11] = c2_11 + b11; cr[12] = c2_12 + b12; cr[13] = c2_13 + b13
        cr[14] = c2_14 + b14; cr[15] = c2_15 + b15
        cr = c[r0 + 3][j0:j0 + 16]; cr[0] = c3_0 + b0; cr[1] = c3_1 + b1; cr[2] = c3_2 + b2; cr[3] = c3_3 + b3
        cr[4] = c3_4 + b4; cr[5] = c3_5 + b5; cr[6] = c3_6 + b6; cr[7] = c3_7 + b7; cr[8] = c3_8 + b8
        cr[9] = c3_9 + b9; cr[10] = c3_10 + b10; cr[11] = c3_11 + b11; cr[12] = c3_12 + b12; cr[13] = c3_13 + b13
        cr[14] = c3_14 + b14; cr[15] = c3_15 + b15


@_mk_jit()
def _mk8x8(xf, u, r0, v, b, j0, c, bias, accumulate):  # noqa: E702
    """T = sum_t xf[u[r0 + r] + v[t]] * b[t, j0:j0 + 8] for r < 8 (generated code).

    c[r0 + r, j0:j0 + 8] += T (accumulate) or = T + bias[j0:j0 + 8]."""
    x0 = xf[u[r0 + 0]:]; x1 = xf[u[r0 + 1]:]; x2 = xf[u[r0 + 2]:]; x3 = xf[u[r0 + 3]:]; x4 = xf[u[r0 + 4]:]
    x5 = xf[u[r0 + 5]:]; x6 = xf[u[r0 + 6]:]; x7 = xf[u[r0 + 7]:]
    c0_0 = F0; c0_1 = F0; c0_2 = F0; c0_3 = F0; c0_4 = F0; c0_5 = F0; c0_6 = F0; c0_7 = F0; c1_0 = F0; c1_1 = F0
    c1_2 = F0; c1_3 = F0; c1_4 = F0; c1_5 = F0; c1_6 = F0; c1_7 = F0; c2_0 = F0; c2_1 = F0; c2_2 = F0; c2_3 = F0
    c2_4 = F0; c2_5 = F0; c2_6 = F0; c2_7 = F0; c3_0 = F0; c3_1 = F0; c3_2 = F0; c3_3 = F0; c3_4 = F0; c3_5 = F0
    c3_6 = F0; c3_7 = F0; c4_0 = F0; c4_1 = F0; c4_2 = F0; c4_3 = F0; c4_4 = F0; c4_5 = F0; c4_6 = F0; c4_7 = F0
    c5_0 = F0; c5_1 = F0; c5_2 = F0; c5_3 = F0; c5_4 = F0; c5_5 = F0; c5_6 = F0; c5_7 = F0; c6_0 = F0; c6_1 = F0
    c6_2 = F0; c6_3 = F0; c6_4 = F0; c6_5 = F0; c6_6 = F0; c6_7 = F0; c7_0 = F0; c7_1 = F0; c7_2 = F0; c7_3 = F0
    c7_4 = F0; c7_5 = F0; c7_6 = F0; c7_7 = F0
    for t in range(v.size):
        vt = v[t]; br = b[t][j0:j0 + 8]
        b0 = br[0]; b1 = br[1]; b2 = br[2]; b3 = br[3]; b4 = br[4]; b5 = br[5]; b6 = br[6]; b7 = br[7]
        a = x0[vt]; c0_0 += a * b0; c0_1 += a * b1; c0_2 += a * b2; c0_3 += a * b3; c0_4 += a * b4; c0_5 += a * b5
        c0_6 += a * b6; c0_7 += a * b7
        a = x1[vt]; c1_0 += a * b0; c1_1 += a * b1; c1_2 += a * b2; c1_3 += a * b3; c1_4 += a * b4; c1_5 += a * b5
        c1_6 += a * b6; c1_7 += a * b7
        a = x2[vt]; c2_0 += a * b0; c2_1 += a * b1; c2_2 += a * b2; c2_3 += a * b3; c2_4 += a * b4; c2_5 += a * b5
        c2_6 += a * b6; c2_7 += a * b7
        a = x3[vt]; c3_0 += a * b0; c3_1 += a * b1; c3_2 += a * b2; c3_3 += a * b3; c3_4 += a * b4; c3_5 += a * b5
        c3_6 += a * b6; c3_7 += a * b7
        a = x4[vt]; c4_0 += a * b0; c4_1 += a * b1; c4_2 += a * b2; c4_3 += a * b3; c4_4 += a * b4; c4_5 += a * b5
        c4_6 += a * b6; c4_7 += a * b7
        a = x5[vt]; c5_0 += a * b0; c5_1 += a * b1; c5_2 += a * b2; c5_3 += a * b3; c5_4 += a * b4; c5_5 += a * b5
        c5_6 += a * b6; c5_7 += a * b7
        a = x6[vt]; c6_0 += a * b0; c6_1 += a * b1; c6_2 += a * b2; c6_3 += a * b3; c6_4 += a * b4; c6_5 += a * b5
        c6_6 += a * b6; c6_7 += a * b7
        a = x7[vt]; c7_0 += a * b0; c7_1 += a * b1; c7_2 += a * b2; c7_3 += a * b3; c7_4 += a * b4; c7_5 += a * b5
        c7_6 += a * b6; c7_7 += a * b7
    if accumulate:
        cr = c[r0 + 0][j0:j0 + 8]; cr[0] += c0_0; cr[1] += c0_1; cr[2] += c0_2; cr[3] += c0_3; cr[4] += c0_4
        cr[5] += c0_5; cr[6] += c0_6; cr[7] += c0_7
        cr = c[r0 + 1][j0:j0 + 8]; cr[0] += c1_0; cr[1] += c1_1; cr[2] += c1_2; cr[3] += c1_3; cr[4] += c1_4
        cr[5] += c1_5; cr[6] += c1_6; cr[7] += c1_7
        cr = c[r0 + 2][j0:j0 + 8]; cr[0] += c2_0; cr[1] += c2_1; cr[2] += c2_2; cr[3] += c2_3; cr[4] += c2_4
        cr[5] += c2_5; cr[6] += c2_6; cr[7] += c2_7
        cr = c[r0 + 3][j0:j0 + 8]; cr[0] += c3_0; cr[1] += c3_1; cr[2] += c3_2; cr[3] += c3_3; cr[4] += c3_4
        cr[5] += c3_5; cr[6] += c3_6; cr[7] += c3_7
        cr = c[r0 + 4][j0:j0 + 8]; cr[0] += c4_0; cr[1] += c4_1; cr[2] += c4_2; cr[3] += c4_3; cr[4] += c4_4
        cr[5] += c4_5; cr[6] += c4_6; cr[7] += c4_7
        cr = c[r0 + 5][j0:j0 + 8]; cr[0] += c5_0; cr[1] += c5_1; cr[2] += c5_2; cr[3] += c5_3; cr[4] += c5_4
        cr[5] += c5_5; cr[6] += c5_6; cr[7] += c5_7
        cr = c[r0 + 6][j0:j0 + 8]; cr[0] += c6_0; cr[1] += c6_1; cr[2] += c6_2; cr[3] += c6_3; cr[4] += c6_4
        cr[5] += c6_5; cr[6] += c6_6; cr[7] += c6_7
        cr = c[r0 + 7][j0:j0 + 8]; cr[0] += c7_0; cr[1] += c7_1; cr[2] += c7_2; cr[3] += c7_3; cr[4] += c7_4
        cr[5] += c7_5; cr[6] += c7_6; cr[7] += c7_7
    else:
        br = bias[j0:j0 + 8]
        b0 = br[0]; b1 = br[1]; b2 = br[2]; b3 = br[3]; b4 = br[4]; b5 = br[5]; b6 = br[6]; b7 = br[7]
        cr = c[r0 + 0][j0:j0 + 8]; cr[0] = c0_0 + b0; cr[1] = c0_1 + b1; cr[2] = c0_2 + b2; cr[3] = c0_3 + b3
        cr[4] = c0_4 + b4; cr[5] = c0_5 + b5; cr[6] = c0_6 + b6; cr[7] = c0_7 + b7
        cr = c[r0 + 1][j0:j0 + 8]; cr[0] = c1_0 + b0; cr[1] = c1_1 + b1; cr[2] = c1_2 + b2; cr[3] = c1_3 + b3
        cr[4] = c1_4 + b4; cr[5] = c1_5 + b5; cr[6] = c1_6 + b6; cr[7] = c1_7 + b7
        cr = c[r0 + 2][j0:j0 + 8]; cr[0] = c2_0 + b0; cr[1] = c2_1 + b1; cr[2] = c2_2 + b2; cr[3] = c2_3 + b3
        cr[4] = c2_4 + b4; cr[5] = c2_5 + b5; cr[6] = c2_6 + b6; cr[7] = c2_7 + b7
        cr = c[r0 + 3][j0:j0 + 8]; cr[0] = c3_0 + b0; cr[1] = c3_1 + b1; cr[2] = c3_2 + b2; cr[3] = c3_3 + b3
        cr[4] = c3_4 + b4; cr[5] = c3_5 + b5; cr[6] = c3_6 + b6; cr[7] = c3_7 + b7
        cr = c[r0 + 4][j0:j0 + 8]; cr[0] = c4_0 + b0; cr[1] = c4_1 + b1; cr[2] = c4_2 + b2; cr[3] = c4_3 + b3
        cr[4] = c4_4 + b4; cr[5] = c4_5 + b5; cr[6] = c4_6 + b6; cr[7] = c4_7 + b7
        cr = c[r0 + 5][j0:j0 + 8]; cr[0] = c5_0 + b0; cr[1] = c5_1 + b1; cr[2] = c5_2 + b2; cr[3] = c5_3 + b3
        cr[4] = c5_4 + b4; cr[5] = c5_5 + b5; cr[6] = c5_6 + b6; cr[7] = c5_7 + b7
        cr = c[r0 + 6][j0:j0 + 8]; cr[0] = c6_0 + b0; cr[1] = c6_1 + b1; cr[2] = c6_2 + b2; cr[3] = c6_3 + b3
        cr[4] = c6_4 + b4; cr[5] = c6_5 + b5; cr[6] = c6_6 + b6; cr[7] = c6_7 + b7
        cr = c[r0 + 7][j0:j0 + 8]; cr[0] = c7_0 + b0; cr[1] = c7_1 + b1; cr[2] = c7_2 + b2; cr[3] = c7_3 + b3
        cr[4] = c7_4 + b4; cr[5] = c7_5 + b5; cr[6] = c7_6 + b6; cr[7] = c7_7 + b7
# END GENERATED MICRO-KERNELS
# fmt: on


@jit()
def _panel_gemm(xf, u, rows, v, b, c, bias, accumulate, panels):
    """For each column panel (j0, width) of ``panels``: c[:rows, panel] += A @ b[:, panel] (accumulate) or
    = A @ b[:, panel] + bias[panel], where A[r, t] = xf[u[r] + v[t]].

    ``u`` and the rows of ``c`` must extend to ``rows`` rounded up to the panel's tile height (padding rows
    point at any valid offset and are discarded by the caller).
    """
    for i in range(panels.shape[0]):
        j0 = panels[i, 0]
        wd = panels[i, 1]
        if wd == 32:
            for r0 in range(0, rows, 3):
                _mk3x32(xf, u, r0, v, b, j0, c, bias, accumulate)
        elif wd == 24:
            for r0 in range(0, rows, 3):
                _mk3x24(xf, u, r0, v, b, j0, c, bias, accumulate)
        elif wd == 16:
            for r0 in range(0, rows, 4):
                _mk4x16(xf, u, r0, v, b, j0, c, bias, accumulate)
        else:
            for r0 in range(0, rows, 8):
                _mk8x8(xf, u, r0, v, b, j0, c, bias, accumulate)


@jit()
def _panel_gemm_taps(xf, u, rows, v, b, c, bias, accumulate, panels, tap_lo, tap_hi):
    """:func:`_panel_gemm` where each tile of rows reduces over the taps [tap_lo, tap_hi) of its rows only
    (the smallest tap_lo and the largest tap_hi of the rows in the tile; an empty range writes ``bias``).

    Used for the input gradient, where the taps outside a row's range would only read the zero border of dy.
    ``tap_lo`` and ``tap_hi`` extend to the padded length of ``u``.
    """
    for i in range(panels.shape[0]):
        j0 = panels[i, 0]
        wd = panels[i, 1]
        th = 3 if wd >= 24 else (4 if wd == 16 else 8)
        for r0 in range(0, rows, th):
            t0 = tap_lo[r0]
            t1 = tap_hi[r0]
            for r in range(r0 + 1, r0 + th):
                t0 = min(t0, tap_lo[r])
                t1 = max(t1, tap_hi[r])
            t1 = max(t0, t1)
            vs = v[t0:t1]
            bs = b[t0:t1]
            if wd == 32:
                _mk3x32(xf, u, r0, vs, bs, j0, c, bias, accumulate)
            elif wd == 24:
                _mk3x24(xf, u, r0, vs, bs, j0, c, bias, accumulate)
            elif wd == 16:
                _mk4x16(xf, u, r0, vs, bs, j0, c, bias, accumulate)
            else:
                _mk8x8(xf, u, r0, vs, bs, j0, c, bias, accumulate)


@_mk_jit()
def _colsum8(g, j0, out):
    """out[j0:j0 + 8] += the column sums of g[:, j0:j0 + 8] (eight register accumulators, SLP-vectorized)."""
    s0 = F0; s1 = F0; s2 = F0; s3 = F0; s4 = F0; s5 = F0; s6 = F0; s7 = F0  # noqa: E702
    for q in range(g.shape[0]):
        r = g[q][j0:j0 + 8]
        s0 += r[0]; s1 += r[1]; s2 += r[2]; s3 += r[3]; s4 += r[4]; s5 += r[5]; s6 += r[6]; s7 += r[7]  # noqa: E702
    o = out[j0:j0 + 8]
    o[0] += s0; o[1] += s1; o[2] += s2; o[3] += s3; o[4] += s4; o[5] += s5; o[6] += s6; o[7] += s7  # noqa: E702


@jit()
def _copy_cols(src, dst):
    """dst[i, :] = src[i, :dst.shape[1]] for the rows of dst."""
    if src.shape[1] == dst.shape[1]:
        _copy_flat(src.reshape(-1), dst.reshape(-1))
        return
    for i in range(dst.shape[0]):
        _copy_flat(src[i], dst[i])


@jit()
def _zero(a):
    for i in range(a.size):
        a[i] = F0


@jit()
def _add_into(dst, src):
    for i in range(dst.size):
        dst[i] += src[i]


@jit()
def _pad_into(x, xp, pt, pl):
    """Copy a (H, W, C) sample into the interior of the zero-bordered xp."""
    H, W = x.shape[0], x.shape[1]
    for i in range(H):
        _copy_flat(x[i].reshape(-1), xp[pt + i][pl:pl + W].reshape(-1))


@jit()
def _copy_flat(src, dst):
    for i in range(dst.size):
        dst[i] = src[i]


@jit(parallel=True)
def conv2d_forward(x, wk, bp, out, base_i, off_u, panels, pt, pb, pl, pr, direct, parts, OH, OW, cout, pooled,
                   pool_out, pool_arg, pkh, pkw, psh, psw):
    """Convolution of a NHWC batch x (N, H, W, C) into out (N, P, Cout), P = OH*OW.

    wk (K, Cp): weights as a (KH*KW*Cin, Cout padded to 8) matrix; bp (Cp,) the padded bias; base_i (>= P):
    flat offset of each output position's window in the (padded) sample, padding rows repeating the last;
    off_u (K,): flat offset of each tap (kh, kw, ci) within a window; panels: column panels of wk. ``direct``:
    the tiles cover exactly out[n] (Cp == Cout, P a multiple of the tile heights), so they are written in
    place; otherwise into a per-thread buffer copied out afterwards.

    ``pooled``: a MaxPool2D (pkh x pkw windows, stride psh x psw) follows, fused: each sample's convolution
    stays in the per-thread buffer and is max-pooled from there into pool_out (N, PH, PW, Cout) and pool_arg
    (as :func:`maxpool_forward`); out is not written (pass any array). The (OH, OW, Cout) output never goes
    through memory, which saves writing and reading it back (14 MB per batch of 256 for the first conv).
    """
    N, H, W, C = x.shape
    P = OH * OW
    cp = wk.shape[1]
    rows = base_i.size
    padded = pt + pb + pl + pr > 0
    no = pt < 0  # False, but not a literal: a literal would compile a second version of the helpers
    parts = min(parts, N)
    for p in prange(parts):
        ybuf = np.empty((1, 1) if direct and not pooled else (rows, cp), np.float32)
        ycopy = np.empty((P, cout) if pooled and cp != cout else (1, 1), np.float32)
        xpad = np.zeros((H + pt + pb, W + pl + pr, C) if padded else (1, 1, 1), np.float32)
        for n in range(p * N // parts, (p + 1) * N // parts):
            if padded:
                _pad_into(x[n], xpad, pt, pl)
                xf = xpad.reshape(-1)
            else:
                xf = x[n].reshape(-1)
            if pooled:
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
            elif direct:
                _panel_gemm(xf, base_i, P, off_u, wk, out[n], bp, no, panels)
            else:
                _panel_gemm(xf, base_i, P, off_u, wk, ybuf, bp, no, panels)
                _copy_cols(ybuf, out[n])


@jit()
def _scatter_dy(g, dyf, OW, sh, sw, top, left):
    """dyf[top + oh*sh, left + ow*sw, :] = g[oh*OW + ow] (dyf: zero-bordered (FH, FW, Cout))."""
    for q in range(g.shape[0]):
        oh = q // OW
        ow = q - oh * OW
        _copy_flat(g[q], dyf[top + oh * sh, left + ow * sw])


@jit(parallel=True)
def conv2d_backward(x, dy, wf, dw_parts, db_parts, dx, base_i, base_u, off_i, off_u, dbase_i, doff_u, dtap_lo,
                    dtap_hi, panels_w, panels_x, OW, sh, sw, KH, KW, pt, pb, pl, pr, FH, FW, direct_dx, need_dx,
                    parts, cout, pooled, pool_dy, pool_arg):
    """Weight, bias and (need_dx) input gradients of :func:`conv2d_forward`; dy is (N, P, Cout).

    dW = sum over samples of cols^T @ dy: an implicit GEMM whose rows are the K taps (off_i, padded to the tile
    height) and whose reduction runs over the P output positions (base_u). dw_parts (parts, Kpad, Cp) and
    db_parts (parts, Cp) get one partial sum per batch chunk; the totals end up in dw_parts[0], db_parts[0].

    dX is the "full" convolution of dy with the flipped kernel: dy is scattered (dilated by the stride) into a
    zero-bordered (FH, FW, Cout) buffer and convolved like a forward pass with wf (KH*KW*Cout, Cin padded to 8)
    = W flipped in both spatial axes with the channel axes swapped; dbase_i holds the offset of each input
    pixel's window (rows padded like base_i), doff_u those of the (kh, kw, co) taps. Long reductions
    (KH*KW*Cout) instead of a short GEMM over Cout followed by a col2im scatter. Each pixel row of dx reduces
    only over the kernel rows that reach a row of dy, [dtap_lo, dtap_hi) in tap order (the others would
    multiply the zero border: 1/6 of the work at 3x3 on 12x12).

    ``pooled``: the layer's output went through a fused MaxPool2D; dy is not used (pass any array), each
    sample's dy is rebuilt in a per-thread buffer from the pooled gradient pool_dy (N, M) and the winners
    pool_arg (N, M), as :func:`maxpool_backward` would write it.
    """
    N, H, W, C = x.shape
    P = base_u.size
    cp = dw_parts.shape[2]
    cin_p = wf.shape[1]
    krows = off_u.size
    padded = pt + pb + pl + pr > 0
    yes = pt >= 0  # True, but not a literal (see conv2d_forward)
    parts = min(parts, N)
    for p in prange(parts):
        dwp = dw_parts[p]
        dbp = db_parts[p]
        _zero(dwp.reshape(-1))
        _zero(dbp)
        dybuf = np.zeros((P, cp) if cp != cout else (1, 1), np.float32)
        xpad = np.zeros((H + pt + pb, W + pl + pr, C) if padded else (1, 1, 1), np.float32)
        dyf = np.zeros((FH, FW, cout) if need_dx else (1, 1, 1), np.float32)
        dxbuf = np.empty((dbase_i.size, cin_p) if need_dx and not direct_dx else (1, 1), np.float32)
        zc = np.zeros(cin_p, np.float32)
        pbuf = np.empty((P, cout) if pooled else (1, 1), np.float32)
        for n in range(p * N // parts, (p + 1) * N // parts):
            if padded:
                _pad_into(x[n], xpad, pt, pl)
                xf = xpad.reshape(-1)
            else:
                xf = x[n].reshape(-1)
            if pooled:
                _maxpool_bwd_sample(pool_dy[n], pool_arg[n], pbuf.reshape(-1))
                dyn = pbuf
            else:
                dyn = dy[n]
            if cp != cout:
                for q in range(P):
                    _copy_flat(dyn[q], dybuf[q][:cout])
                g = dybuf
            else:
                g = dyn
            for j0 in range(0, cp, 8):
                _colsum8(g, j0, dbp)
            _panel_gemm(xf, off_i, krows, base_u, g, dwp, dbp, yes, panels_w)
            if need_dx:
                _scatter_dy(dyn, dyf, OW, sh, sw, KH - 1, KW - 1)
                dxn = dx[n].reshape(H * W, C)
                if direct_dx:
                    _panel_gemm_taps(dyf.reshape(-1), dbase_i, H * W, doff_u, wf, dxn, zc, not yes, panels_x,
                                     dtap_lo, dtap_hi)
                else:
                    _panel_gemm_taps(dyf.reshape(-1), dbase_i, H * W, doff_u, wf, dxbuf, zc, not yes, panels_x,
                                     dtap_lo, dtap_hi)
                    _copy_cols(dxbuf, dxn)
    for p in range(1, parts):
        _add_into(dw_parts[0].reshape(-1), dw_parts[p].reshape(-1))
        _add_into(db_parts[0], db_parts[p])


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
    """2x2 windows: all four candidates in one loop over the channels (the general version makes five passes
    over each output pixel's channels, loading and storing ``o`` and ``a`` in each; this one is 4x faster)."""
    W, C = x.shape[1], x.shape[2]
    OH, OW = out.shape[0], out.shape[1]
    for oh in range(OH):
        r0 = x[oh * sh]
        r1 = x[oh * sh + 1]
        for ow in range(OW):
            iw = ow * sw
            x00 = r0[iw]
            x01 = r0[iw + 1]
            x10 = r1[iw]
            x11 = r1[iw + 1]
            b00 = (oh * sh * W + iw) * C
            b01 = b00 + C
            b10 = b00 + W * C
            b11 = b10 + C
            o = out[oh, ow]
            a = arg[oh, ow]
            for c in range(C):  # the same comparisons, in the same order, as _maxpool_fwd_sample
                m = x00[c]
                i = b00
                v = x01[c]
                better = v > m
                m = v if better else m
                i = b01 if better else i
                v = x10[c]
                better = v > m
                m = v if better else m
                i = b10 if better else i
                v = x11[c]
                better = v > m
                m = v if better else m
                i = b11 if better else i
                o[c] = m
                a[c] = i + c


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


def _panels(width: int) -> np.ndarray:
    """Column panels (start, width) covering ``width`` (a multiple of 8): 32-wide panels, then one of 24/16/8."""
    out, j = [], 0
    while width - j >= 32:
        out.append((j, 32))
        j += 32
    if width > j:
        out.append((j, width - j))
    return np.array(out, np.int64).reshape(-1, 2)


def _tile_rows(rows: int, panels: np.ndarray) -> int:
    """``rows`` rounded up so that every panel's row tiles fit."""
    return max(-(-rows // _MK_ROWS[int(w)]) * _MK_ROWS[int(w)] for w in panels[:, 1])


def _padded_offsets(values: np.ndarray, length: int, fill: int) -> np.ndarray:
    out = np.full(length, fill, np.int64)
    out[:values.size] = values
    return out


def torch_uniform_init(shape, fan_in: int, rng: np.random.Generator) -> np.ndarray:
    """PyTorch's default Conv2d/Linear initialization: kaiming_uniform_(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return np.ascontiguousarray(rng.uniform(-bound, bound, size=shape), dtype=np.float32)


@register
class Conv2D(Layer):
    """2-D convolution on NHWC images, weights (KH, KW, Cin, Cout).

    Args:
        filters: number of output channels.
        kernel_size: window size, an int or (height, width).
        stride: step between windows, an int or (height, width).
        padding: ``"valid"`` (default, as PyTorch's 0), ``"same"`` or an integer on every side.
        use_bias: add one bias per filter (True).
        init: ``he`` (default: He-normal weights, zero bias), ``xavier``, or ``torch`` (PyTorch's default:
            weights and bias uniform in +-1/sqrt(fan_in)).
    """

    numba_parallel: ClassVar[bool] = True
    penalized = ("W",)

    def __init__(self, filters: int, kernel_size=3, stride=1, padding="valid", use_bias: bool = True,
                 init: str | None = None):
        super().__init__()
        if int(filters) < 1:
            raise ModelError(f"Conv2D needs at least 1 filter, got {filters}")
        if init not in (None, "he", "xavier", "torch"):
            raise ModelError(f"unknown initialization '{init}' (use he, xavier or torch)")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "Conv2D kernel_size")
        self.stride = _pair(stride, "Conv2D stride")
        self.padding = _check_padding(padding)
        self.use_bias = bool(use_bias)
        self.init = init
        self._x: np.ndarray | None = None

    @property
    def param_names(self):  # type: ignore[override]
        return ("W", "b") if self.use_bias else ("W",)

    def build(self, input_shape, rng):
        if len(input_shape) != 3:
            raise ModelError(f"Conv2D expects (height, width, channels) inputs, got shape {tuple(input_shape)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        h, w, c = self.input_shape
        kh, kw = self.kernel_size
        sh, sw = self.stride
        oh, self._pt, self._pb = conv_geometry(h, kh, sh, self.padding)
        ow, self._pl, self._pr = conv_geometry(w, kw, sw, self.padding)
        fan_in, fan_out = kh * kw * c, kh * kw * self.filters
        if self.init == "torch":
            wgt = torch_uniform_init((kh, kw, c, self.filters), fan_in, rng)
            bias = torch_uniform_init((self.filters,), fan_in, rng)
        else:
            wgt = init_weights((kh, kw, c, self.filters), fan_in, fan_out, self.init or "he", rng)
            bias = np.zeros(self.filters, np.float32)
        self.params = [wgt] + ([bias] if self.use_bias else [])
        self.grads = [np.zeros_like(p) for p in self.params]
        self.output_shape = (oh, ow, self.filters)
        self._build_tables()
        return self.output_shape

    def _build_tables(self):
        """Offset tables of the implicit GEMMs (they depend on the input shape only)."""
        h, w, c = self.input_shape
        kh, kw = self.kernel_size
        sh, sw = self.stride
        oh, ow, cout = self.output_shape
        wp = w + self._pl + self._pr
        k = kh * kw * c
        p = oh * ow
        self._cp = -(-cout // 8) * 8
        self._cin_p = -(-c // 8) * 8
        self._panels_out = _panels(self._cp)
        self._panels_in = _panels(self._cin_p)
        ih, iw = np.meshgrid(np.arange(oh) * sh, np.arange(ow) * sw, indexing="ij")
        base = ((ih * wp + iw) * c).reshape(-1).astype(np.int64)
        th, tw, tc = np.meshgrid(np.arange(kh), np.arange(kw), np.arange(c), indexing="ij")
        off = ((th * wp + tw) * c + tc).reshape(-1).astype(np.int64)
        self._base_i = _padded_offsets(base, _tile_rows(p, self._panels_out), int(base[-1]))
        self._base_u = base.astype(np.uint64)
        self._off_i = _padded_offsets(off, _tile_rows(k, self._panels_out), 0)
        self._off_u = off.astype(np.uint64)
        # the input gradient as a full convolution of dy, scattered into a (FH, FW, Cout) zero-bordered buffer
        hp = h + self._pt + self._pb
        self._fh, self._fw = hp + kh - 1, wp + kw - 1
        dh, dw_ = np.meshgrid(np.arange(h) + self._pt, np.arange(w) + self._pl, indexing="ij")
        dbase = ((dh * self._fw + dw_) * cout).reshape(-1).astype(np.int64)
        self._dbase_i = _padded_offsets(dbase, _tile_rows(h * w, self._panels_in), int(dbase[-1]))
        th, tw, tc = np.meshgrid(np.arange(kh), np.arange(kw), np.arange(cout), indexing="ij")
        self._doff_u = ((th * self._fw + tw) * cout + tc).reshape(-1).astype(np.uint64)
        # kernel rows whose dyf row holds a row of dy (rows KH-1 + oh*sh): the taps [lo, hi) of each pixel row
        hrow = np.arange(h) + self._pt
        klo = np.maximum(0, kh - 1 - hrow)
        khi = np.minimum(kh - 1, kh - 1 + (oh - 1) * sh - hrow) + 1
        khi = np.maximum(khi, klo)
        lo = np.repeat(klo * kw * cout, w).astype(np.int64)
        hi = np.repeat(khi * kw * cout, w).astype(np.int64)
        self._dtap_lo = _padded_offsets(lo, self._dbase_i.size, int(lo[-1]))
        self._dtap_hi = _padded_offsets(hi, self._dbase_i.size, int(hi[-1]))
        self._direct_dx = self._cin_p == c and _tile_rows(h * w, self._panels_in) == h * w
        self._bp = np.zeros(self._cp, np.float32)
        self._wk = np.zeros((k, self._cp), np.float32)
        self._wf = np.zeros((kh * kw * cout, self._cin_p), np.float32)
        self._direct = self._cp == cout and _tile_rows(p, self._panels_out) == p
        self._parts: tuple[np.ndarray, np.ndarray] | None = None

    def _packed_weights(self) -> np.ndarray:
        k = self._wk.shape[0]
        wm = self.params[0].reshape(k, self.filters)
        if self._cp == self.filters:
            return wm
        self._wk[:, :self.filters] = wm
        return self._wk

    def forward(self, x, training):
        self._x = x
        n = x.shape[0]
        oh, ow, cout = self.output_shape
        out = np.empty((n, oh * ow, cout), np.float32)
        self._run_forward(x, out, False, _NO_POOL, _NO_ARG, (1, 1), (1, 1))
        return out.reshape((n,) + self.output_shape)

    def can_fuse(self, nxt) -> bool:
        """True when ``nxt`` is a MaxPool2D that :meth:`forward_fused` can compute along with this layer."""
        return type(nxt) is MaxPool2D and tuple(nxt.input_shape) == tuple(self.output_shape)

    def forward_fused(self, x, training, pool: "MaxPool2D"):
        """This convolution and the MaxPool2D ``pool`` after it in one pass (the model calls it for such pairs).

        Returns the pooled output; both layers keep what their backward passes need, so either
        :meth:`backward_fused` or the two layers' own ``backward`` can follow. Same results as
        ``pool.forward(self.forward(x))`` bit for bit, without the convolution's output ever being stored.
        """
        self._x = x
        n = x.shape[0]
        out = np.empty((n,) + pool.output_shape, np.float32)
        arg = np.empty((n,) + pool.output_shape, np.int32)
        self._run_forward(x, _NO_OUT, True, out, arg, pool.pool_size, pool.stride)
        pool._arg = arg
        return out

    def _run_forward(self, x, out, pooled, pool_out, pool_arg, pool_size, pool_stride):
        oh, ow, cout = self.output_shape
        if self.use_bias:
            self._bp[:cout] = self.params[1]
        with _slp_vectorize():
            conv2d_forward(x, self._packed_weights(), self._bp, out, self._base_i, self._off_u, self._panels_out,
                           self._pt, self._pb, self._pl, self._pr, self._direct, _threads(), oh, ow, cout, pooled,
                           pool_out, pool_arg, pool_size[0], pool_size[1], pool_stride[0], pool_stride[1])

    def backward(self, dy, need_dx=True):
        n = dy.shape[0]
        oh, ow, cout = self.output_shape
        return self._run_backward(np.ascontiguousarray(dy).reshape(n, oh * ow, cout), False, _NO_DY, _NO_ARG2,
                                  need_dx)

    def backward_fused(self, dy, pool: "MaxPool2D", need_dx=True):
        """Backward pass of :meth:`forward_fused`: ``dy`` is the gradient of the pooled output."""
        n = dy.shape[0]
        return self._run_backward(_NO_OUT, True, np.ascontiguousarray(dy).reshape(n, -1), pool._arg.reshape(n, -1),
                                  need_dx)

    def _run_backward(self, dy, pooled, pool_dy, pool_arg, need_dx):
        x = self._x
        oh, ow, cout = self.output_shape
        p = _threads()
        if self._parts is None or self._parts[0].shape[0] != p:
            self._parts = (np.empty((p, self._off_i.size, self._cp), np.float32), np.empty((p, self._cp), np.float32))
        dw_parts, db_parts = self._parts
        k = self._wk.shape[0]
        kh, kw = self.kernel_size
        if need_dx:  # W flipped in both spatial axes, channel axes swapped: (KH*KW*Cout, Cin)
            wflip = self.params[0][::-1, ::-1].transpose(0, 1, 3, 2).reshape(kh * kw * cout, -1)
            self._wf[:, :self.input_shape[2]] = wflip
            dx = np.empty_like(x)
        else:
            dx = _NO_DX  # same array type as a real dx, so no second specialization is compiled
        with _slp_vectorize():
            conv2d_backward(x, dy, self._wf, dw_parts, db_parts, dx, self._base_i, self._base_u, self._off_i,
                            self._off_u, self._dbase_i, self._doff_u, self._dtap_lo, self._dtap_hi, self._panels_out,
                            self._panels_in, ow, self.stride[0], self.stride[1], kh, kw, self._pt, self._pb,
                            self._pl, self._pr, self._fh, self._fw, self._direct_dx, need_dx, p, cout, pooled,
                            pool_dy, pool_arg)
        self.grads[0][...] = dw_parts[0, :k, :cout].reshape(self.grads[0].shape)
        if self.use_bias:
            self.grads[1][...] = db_parts[0, :cout]
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


# placeholders of the right array types for the arguments a kernel call does not use (no second specialization)
_NO_DX = np.zeros((1, 1, 1, 1), np.float32)
_NO_OUT = np.zeros((1, 1, 1), np.float32)
_NO_DY = np.zeros((1, 1), np.float32)
_NO_POOL = _NO_DX
_NO_ARG = np.zeros((1, 1, 1, 1), np.int32)
_NO_ARG2 = np.zeros((1, 1), np.int32)


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

