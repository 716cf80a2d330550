"""The offset tables and panel layout of one Conv2D's implicit GEMMs (they depend on the shapes only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuinet.engine.conv.codegen import _MK_ROWS, LANES, ROWS48


def _panels(width: int) -> np.ndarray:
    """Column panels (start, width) covering ``width`` (a multiple of 8): 32-wide panels, then one of 24/16/8."""
    out, j = [], 0
    while width - j >= 32:
        out.append((j, 32))
        j += 32
    if width > j:
        out.append((j, width - j))
    return np.array(out, np.int64).reshape(-1, 2)


#: the input gradient's scatter GEMM takes 48-wide panels (8 x 3 zmm tiles: 12 loads per 24 FMAs, where 6 x 2 zmm
#: need 9 per 12 and 12 x 1 zmm 14 per 12) with 512-bit vectors; with 256-bit ones a 48-wide tile has only 2 rows
SCATTER48 = LANES == 16


def _scatter_panels(kh: int, run: int, row: int, wide: bool = SCATTER48) -> np.ndarray:
    """Panels (j0, width, cj0) of the input-gradient GEMM with its col2im fused: each kernel row's ``run``
    (= KW*Cin, a multiple of 16) contiguous taps in panels of 48 (``wide``), 32, then 16 (j0: from kh*run; cj0:
    the panel's offset in the window, kh*``row`` + its offset in the kernel row)."""
    out = []
    for k in range(kh):
        j = 0
        for wd in ((48, 32, 16) if wide else (32, 16)):
            while run - j >= wd:
                out.append((k * run + j, wd, k * row + j))
                j += wd
    return np.array(out, np.int64).reshape(-1, 3)


def _tile_rows(rows: int, panels: np.ndarray) -> int:
    """``rows`` rounded up so that every panel's row tiles fit (a 48-wide scatter panel's last, partial tile is
    computed as a 32- and a 16-wide one, so it needs those tiles' heights past its whole tiles)."""
    out = 0
    for w in panels[:, 1]:
        if int(w) == 48:
            out = max(out, rows - rows % ROWS48 + max(_MK_ROWS[32], _MK_ROWS[16]))
        else:
            out = max(out, -(-rows // _MK_ROWS[int(w)]) * _MK_ROWS[int(w)])
    return out


def _padded_offsets(values: np.ndarray, length: int, fill: int) -> np.ndarray:
    out = np.full(length, fill, np.int64)
    out[:values.size] = values
    return out


@dataclass(frozen=True, eq=False)
class ConvPlan:
    """How a Conv2D of given shapes runs its three GEMMs (see :mod:`tuinet.engine.conv.kernels`).

    Forward: rows are the output positions (``base_i``: the flat offset of each one's window in the padded
    sample, padded to the tile height by repeating the last), the reduction runs over the window taps
    (``off_u``). Weight gradient: rows are the taps (``off_i``, padded with 0), the reduction runs over the
    output positions (``base_u``). Input gradient: a forward pass over dy scattered into a zero-bordered
    (fh, fw, Cout) buffer, rows ``dbase_i`` (input pixels), taps ``doff_u`` (kh, kw, co), each pixel row
    reducing only over the taps [dtap_lo, dtap_hi) of the kernel rows that reach a row of dy.
    """

    pt: int  #: padding above, below, left and right of the input
    pb: int
    pl: int
    pr: int
    cp: int  #: output channels rounded up to 8 (the width of the forward and weight-gradient GEMMs)
    cin_p: int  #: input channels rounded up to 8 (the width of the input-gradient GEMM)
    panels_out: np.ndarray  #: column panels (start, width) of the cp columns
    panels_in: np.ndarray  #: column panels of the cin_p columns
    base_i: np.ndarray
    base_u: np.ndarray
    off_i: np.ndarray
    off_u: np.ndarray
    fh: int  #: height and width of the zero-bordered dy buffer
    fw: int
    dbase_i: np.ndarray
    doff_u: np.ndarray
    dtap_lo: np.ndarray
    dtap_hi: np.ndarray
    direct: bool  #: the forward GEMM's columns are the output's channels (written in place, no copy)
    direct_dx: bool  #: the input-gradient GEMM's columns are dx's channels (written in place)
    dx_gemm: bool  #: the input gradient as dy @ W^T and a col2im scatter (strided or narrow convolutions)
    kp: int  #: KH*KW*Cin rounded up to 8 (the width of that GEMM)
    panels_k: np.ndarray  #: its column panels
    qbase_i: np.ndarray  #: its rows: the offset of each output position's dy row, padded like base_i
    co_u: np.ndarray  #: its reduction: the Cout channels of a dy row
    pair: bool  #: one input channel, stride 1, even OW, Cp 8 or 16: two output positions per GEMM row
    panels_pair: np.ndarray  #: the 2*Cp columns of the paired GEMMs
    pbase_i: np.ndarray  #: paired forward rows: the window of each pair's first position, padded like base_i
    pbase_u: np.ndarray  #: the same, as the paired weight gradient's reduction
    poff_i: np.ndarray  #: paired taps (kh, kw'') for kw'' in 0..KW, padded to the tile height with 0
    poff_u: np.ndarray  #: the same, as the paired forward's reduction
    scat: bool  #: dx_gemm with the col2im fused into the GEMM (KW*Cin a multiple of 16)
    tdw: bool  #: the weight gradient transposed (Cp 8 or 16, KW*Cin a multiple of 48; not with pair)
    panels_t: np.ndarray  #: its panels (j0, 48, cj0): j0 in the window, cj0 the column of dW^T
    co_i: np.ndarray  #: its rows, the Cp output channels
    pos_u: np.ndarray  #: its reduction: the offset of each output position's row of dy (P x Cp)
    panels_s: np.ndarray  #: its panels (j0, width, cj0), see :func:`_scatter_panels`

    @classmethod
    def build(cls, input_shape, output_shape, kernel_size, stride, padding) -> "ConvPlan":
        """The plan for (H, W, Cin) inputs, (OH, OW, Cout) outputs and ``padding`` (top, bottom, left, right)."""
        h, w, c = input_shape
        oh, ow, cout = output_shape
        kh, kw = kernel_size
        sh, sw = stride
        pt, pb, pl, pr = padding
        wp = w + pl + pr
        k = kh * kw * c
        p = oh * ow
        cp = -(-cout // 8) * 8
        cin_p = -(-c // 8) * 8
        panels_out = _panels(cp)
        panels_in = _panels(cin_p)
        ih, iw = np.meshgrid(np.arange(oh) * sh, np.arange(ow) * sw, indexing="ij")
        base = ((ih * wp + iw) * c).reshape(-1).astype(np.int64)
        th, tw, tc = np.meshgrid(np.arange(kh), np.arange(kw), np.arange(c), indexing="ij")
        off = ((th * wp + tw) * c + tc).reshape(-1).astype(np.int64)
        # the input gradient as a full convolution of dy, scattered into a (FH, FW, Cout) zero-bordered buffer
        hp = h + pt + pb
        fh, fw = hp + kh - 1, wp + kw - 1
        dh, dw_ = np.meshgrid(np.arange(h) + pt, np.arange(w) + pl, indexing="ij")
        dbase = ((dh * fw + dw_) * cout).reshape(-1).astype(np.int64)
        dbase_i = _padded_offsets(dbase, _tile_rows(h * w, panels_in), int(dbase[-1]))
        th, tw, tc = np.meshgrid(np.arange(kh), np.arange(kw), np.arange(cout), indexing="ij")
        # kernel rows whose dyf row holds a row of dy (rows KH-1 + oh*sh): the taps [lo, hi) of each pixel row
        hrow = np.arange(h) + pt
        klo = np.maximum(0, kh - 1 - hrow)
        khi = np.minimum(kh - 1, kh - 1 + (oh - 1) * sh - hrow) + 1
        khi = np.maximum(khi, klo)
        lo = np.repeat(klo * kw * cout, w).astype(np.int64)
        kp = -(-k // 8) * 8
        panels_k = _panels(kp)
        hi = np.repeat(khi * kw * cout, w).astype(np.int64)
        dx_gemm = (sh, sw) != (1, 1) or c % 8 != 0
        panels_s = _scatter_panels(kh, kw * c, wp * c, SCATTER48)
        q_rows = _tile_rows(p, np.vstack([panels_k, panels_s[:, :2]]))  # the dy @ W^T rows, for both kinds of panels
        pair = c == 1 and (sh, sw) == (1, 1) and ow % 2 == 0 and cp in (8, 16)
        tdw = cp in (8, 16) and (kw * c) % 48 == 0 and not pair
        panels_pair = _panels(2 * cp)
        if pair:
            pbase = base.reshape(oh, ow)[:, ::2].reshape(-1)
            pth, ptw = np.meshgrid(np.arange(kh), np.arange(kw + 1), indexing="ij")
            poff = (pth * wp + ptw).reshape(-1).astype(np.int64)
        else:
            pbase, poff = base[:1], off[:1]
        return cls(
            pt=pt, pb=pb, pl=pl, pr=pr, cp=cp, cin_p=cin_p, panels_out=panels_out, panels_in=panels_in,
            base_i=_padded_offsets(base, _tile_rows(p, panels_out), int(base[-1])),
            base_u=base.astype(np.uint64),
            off_i=_padded_offsets(off, _tile_rows(k, panels_out), 0),
            off_u=off.astype(np.uint64),
            fh=fh, fw=fw, dbase_i=dbase_i,
            doff_u=((th * fw + tw) * cout + tc).reshape(-1).astype(np.uint64),
            dtap_lo=_padded_offsets(lo, dbase_i.size, int(lo[-1])),
            dtap_hi=_padded_offsets(hi, dbase_i.size, int(hi[-1])),
            direct=cp == cout,
            direct_dx=cin_p == c,
            dx_gemm=dx_gemm,
            kp=kp, panels_k=panels_k,
            qbase_i=_padded_offsets(np.arange(p, dtype=np.int64) * cout, q_rows, (p - 1) * cout),
            co_u=np.arange(cout, dtype=np.uint64),
            pair=pair, panels_pair=panels_pair,
            pbase_i=_padded_offsets(pbase, _tile_rows(pbase.size, panels_pair), int(pbase[-1])),
            pbase_u=pbase.astype(np.uint64),
            poff_i=_padded_offsets(poff, _tile_rows(poff.size, panels_pair), 0),
            poff_u=poff.astype(np.uint64),
            scat=dx_gemm and (kw * c) % 16 == 0,
            tdw=tdw,
            panels_t=np.array([(k_ * wp * c + j, 48, k_ * kw * c + j) for k_ in range(kh) for j in range(0, kw * c, 48)]
                              if tdw else [(0, 48, 0)], np.int64),
            co_i=np.arange(cp, dtype=np.int64),
            pos_u=(np.arange(p) * cp).astype(np.uint64),
            panels_s=panels_s,
        )
