"""Data augmentation: each training batch moved, turned, scaled, flipped, partly erased or blurred with noise,
a new random version of every sample at every step, so the network never sees the same picture twice.

What torchvision's ``RandomAffine``, ``RandomHorizontalFlip``, ``RandomErasing`` and Keras's ``RandomTranslation``,
``RandomRotation``, ``RandomZoom``, ``GaussianNoise`` do, written for NHWC float32 batches: one affine map per
sample (about the image's centre), sampled bilinearly, pixels from outside the image set to the background. The
background is each channel's darkest training value (MNIST's black), after normalization, so a shifted digit
gets the same black around it it had. The normalization is per channel and affine, so moving a normalized picture
is the same as moving the raw one and normalizing it.

Only training batches are augmented, never validation, test or the pictures the app shows of them: the training
loss and accuracy are those of the augmented batches (as in Keras and PyTorch), which is why strong augmentation
can put the training curve below the validation one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import prange

from tuinet.engine.kernels import jit

ERASE_AREA = (0.02, 0.33)  # torchvision's RandomErasing defaults: area fraction and aspect ratio ranges
ERASE_RATIO = (0.3, 3.3)
WARPS = ("shift", "rotate", "scale", "flip")  # the settings that move samples
PICTURES_ONLY = (*WARPS, "erase")  # the settings that need pictures (H, W, C)


class Augmenter:
    """Makes each training batch's random versions (see the module's docstring).

    Its random generator is part of the trainer's state (saved with every checkpoint), so a resumed run
    augments its next batches exactly as the uninterrupted one would have.

    Args:
        aug: what to do: an object with ``shift``, ``rotate``, ``scale``, ``flip``, ``erase`` and ``noise`` (a
            :class:`tuinet.data.augment.Augment`, or the helper process's copy of one), checked by whoever made it.
        input_shape: one sample's shape, ``(H, W, C)`` for pictures.
        fill: each channel's background value (normalized), ``(C,)``; for noise alone it is not used.
        seed: the run's seed.
    """

    def __init__(self, aug: Any, input_shape: tuple[int, ...], fill: np.ndarray | None, seed: int):
        self.aug = aug
        self.warps = any(getattr(aug, name) for name in WARPS)
        self.pictures_only = any(getattr(aug, name) for name in PICTURES_ONLY)
        self.input_shape = tuple(input_shape)
        channels = input_shape[-1] if len(input_shape) == 3 else 1
        self.fill = np.ascontiguousarray(np.zeros(channels) if fill is None else fill, dtype=np.float32).reshape(-1)
        self.rng = np.random.default_rng([seed, 5])

    def state(self) -> dict[str, Any]:
        """The random generator's state (JSON-able)."""
        return self.rng.bit_generator.state

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Continue from a saved :meth:`state`."""
        if state:
            self.rng.bit_generator.state = state

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """A new array: the batch ``x`` (N, *input_shape) augmented; ``x`` is left as it was."""
        a = self.aug
        out = x
        if self.pictures_only:
            n, h, w, _ = x.shape
            mats = sample_maps(self.rng, n, h, w, a) if self.warps else None
            boxes = sample_boxes(self.rng, n, h, w, a.erase) if a.erase else np.zeros((n, 4), np.int64)
            out = np.empty_like(x)
            if mats is None:
                out[...] = x
            else:
                warp_batch(x, out, mats, self.fill)
            if a.erase:
                erase_boxes(out, boxes, self.fill)
        if a.noise:
            noise = self.rng.standard_normal(x.shape, dtype=np.float32)
            noise *= np.float32(a.noise)
            if out is x:
                out = x + noise
            else:
                out += noise
        return out


def sample_maps(rng: np.random.Generator, n: int, h: int, w: int, a: Any) -> np.ndarray:
    """For each of ``n`` samples, a random map (see :func:`inverse_maps`): a turn by an angle from ``[-rotate,
    rotate]`` degrees, a zoom by a factor from ``[1 - scale, 1 + scale]``, a mirror with probability 0.5 when
    ``flip``, a move by a whole number of pixels from ``[-shift, shift]`` on each axis."""
    u = rng.random((n, 3))
    move = rng.integers(-a.shift, a.shift, size=(n, 2), endpoint=True).astype(np.float64) if a.shift \
        else np.zeros((n, 2))
    return _random_maps(u, move, math.radians(a.rotate), float(a.scale), a.flip, h, w)


def inverse_maps(angle, zoom, mirror, move, h: int, w: int) -> np.ndarray:
    """The maps :func:`warp_batch` reads pictures through: for each sample, ``(a, b, c, d, e, f)`` (float64 rows)
    taking an output pixel (column ``j``, row ``i``) to where it is read in the input, ``(a*j + b*i + c, d*j + e*i
    + f)``. They undo the forward map ``p -> centre + zoom * R(angle) * F * (p - centre) + move``, where ``F``
    mirrors left-right when ``mirror`` is -1 and ``R`` turns by ``angle`` radians (clockwise on the screen, rows
    running down), about the picture's centre ``((w - 1) / 2, (h - 1) / 2)``; ``move`` is ``(across, down)``.
    """
    angle, zoom, mirror = (np.ascontiguousarray(v, dtype=np.float64).reshape(-1) for v in (angle, zoom, mirror))
    move = np.ascontiguousarray(move, dtype=np.float64).reshape(-1, 2)
    return _inverse_maps(angle, zoom, mirror, move, h, w)


@jit()
def _random_maps(u, move, rotate, scale, flip, h, w):  # pragma: no cover - compiled
    """:func:`sample_maps` from its uniform draws ``u`` (n, 3) and moves (n, 2): angle, zoom and mirror."""
    n = u.shape[0]
    angle = np.empty(n)
    zoom = np.empty(n)
    mirror = np.ones(n)
    for k in range(n):
        angle[k] = (2.0 * u[k, 0] - 1.0) * rotate
        zoom[k] = 1.0 + (2.0 * u[k, 1] - 1.0) * scale
        if flip and u[k, 2] < 0.5:
            mirror[k] = -1.0
    return _inverse_maps(angle, zoom, mirror, move, h, w)


@jit()
def _inverse_maps(angle, zoom, mirror, move, h, w):  # pragma: no cover - compiled
    """:func:`inverse_maps` on float64 arrays: p_in = centre + F R(-angle) / zoom (p_out - centre - move)."""
    n = angle.shape[0]
    mats = np.empty((n, 6))
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    for k in range(n):
        cos = math.cos(angle[k]) / zoom[k]
        sin = math.sin(angle[k]) / zoom[k]
        m00, m01, m10, m11 = mirror[k] * cos, mirror[k] * sin, -sin, cos
        ox, oy = cx + move[k, 0], cy + move[k, 1]  # the output point that reads the input's centre
        mats[k, 0], mats[k, 1], mats[k, 3], mats[k, 4] = m00, m01, m10, m11
        mats[k, 2] = cx - m00 * ox - m01 * oy
        mats[k, 5] = cy - m10 * ox - m11 * oy
    return mats


def sample_boxes(rng: np.random.Generator, n: int, h: int, w: int, p: float) -> np.ndarray:
    """For each of ``n`` samples, with probability ``p``, a rectangle ``(top, left, height, width)`` covering 2-33%
    of the picture with a height:width ratio from 0.3 to 3.3 (log-uniform), as torchvision's ``RandomErasing``;
    ``(0, 0, 0, 0)`` for the samples left whole."""
    u = rng.random((n, 5))
    area = h * w * (ERASE_AREA[0] + u[:, 0] * (ERASE_AREA[1] - ERASE_AREA[0]))
    ratio = np.exp(math.log(ERASE_RATIO[0]) + u[:, 1] * (math.log(ERASE_RATIO[1]) - math.log(ERASE_RATIO[0])))
    bh = np.clip(np.rint(np.sqrt(area * ratio)), 1, h).astype(np.int64)
    bw = np.clip(np.rint(np.sqrt(area / ratio)), 1, w).astype(np.int64)
    top = np.floor(u[:, 2] * (h - bh + 1)).astype(np.int64)
    left = np.floor(u[:, 3] * (w - bw + 1)).astype(np.int64)
    keep = u[:, 4] >= p
    boxes = np.stack([top, left, bh, bw], axis=1)
    boxes[keep] = 0
    return boxes


@jit(parallel=True)
def warp_batch(src, dst, mats, fill):  # pragma: no cover - compiled
    """``dst[n]`` = ``src[n]`` read through the inverse affine map ``mats[n]`` (see :func:`sample_maps`), bilinear,
    ``fill[c]`` outside the picture. A map that only moves (and mirrors) by whole pixels copies them (no
    interpolation)."""
    n, h, w, ch = src.shape
    row = w * ch
    flat_src = src.reshape(n, h * row)
    flat_dst = dst.reshape(n, h * row)
    wp = w + 3  # a framed row (see below)
    for k in prange(n):
        a, b, c = mats[k, 0], mats[k, 1], mats[k, 2]
        d, e, f = mats[k, 3], mats[k, 4], mats[k, 5]
        s = flat_src[k]
        out = flat_dst[k]
        if a == 1.0 and b == 0.0 and d == 0.0 and e == 1.0 and c == math.floor(c) and f == math.floor(f):
            dx, dy = int(c), int(f)
            j0 = min(w, max(0, -dx))  # output columns whose source column j + dx is inside: j0 <= j < j1
            j1 = max(j0, min(w, w - dx))
            for i in range(h):
                o = i * row
                si = i + dy
                if si < 0 or si >= h:
                    j1_row = j0  # the whole row is background
                else:
                    j1_row = j1
                    out[o + j0 * ch:o + j1 * ch] = s[si * row + (j0 + dx) * ch:si * row + (j1 + dx) * ch]
                for j in range(j0):
                    for q in range(ch):
                        out[o + j * ch + q] = fill[q]
                for j in range(j1_row, w):
                    for q in range(ch):
                        out[o + j * ch + q] = fill[q]
            continue
        if a == -1.0 and b == 0.0 and d == 0.0 and e == 1.0 and c == math.floor(c) and f == math.floor(f):
            dx, dy = int(c), int(f)  # mirrored and moved by whole pixels: source column dx - j
            for i in range(h):
                si = i + dy
                for j in range(w):
                    sj = dx - j
                    inside = 0 <= si < h and 0 <= sj < w
                    for q in range(ch):
                        out[i * row + j * ch + q] = s[si * row + sj * ch + q] if inside else fill[q]
            continue
        # the picture inside a frame of background (one pixel left and top, two right and bottom): a read position
        # clamped to [-1, side] lands on the frame when it is outside the picture, and its right and lower
        # neighbours are still in the frame, so the bilinear loop needs no test per neighbour
        p = np.empty((h + 3) * wp * ch, np.float32)
        for i in range(h + 3):
            base = i * wp * ch
            if i == 0 or i > h:
                for j in range(wp * ch):
                    p[base + j] = fill[j % ch]
                continue
            for q in range(ch):
                p[base + q] = fill[q]
                p[base + (w + 1) * ch + q] = fill[q]
                p[base + (w + 2) * ch + q] = fill[q]
            p[base + ch:base + ch + row] = s[(i - 1) * row:i * row]
        # in float32, positions moved by one (the frame) into [0, side + 1]: truncation is then the floor
        a32, b32, c32 = np.float32(a), np.float32(b), np.float32(c + 1.0)
        d32, e32, f32 = np.float32(d), np.float32(e), np.float32(f + 1.0)
        hi_x, hi_y, zero = np.float32(w + 1), np.float32(h + 1), np.float32(0.0)
        for i in range(h):
            bx = b32 * np.float32(i) + c32
            by = e32 * np.float32(i) + f32
            for j in range(w):
                xs = min(max(a32 * np.float32(j) + bx, zero), hi_x)
                ys = min(max(d32 * np.float32(j) + by, zero), hi_y)
                xi = np.int32(xs)
                yi = np.int32(ys)
                fx = xs - np.float32(xi)
                fy = ys - np.float32(yi)
                o = (yi * wp + xi) * ch
                if ch == 1:  # gray pictures: the same arithmetic without the channel loop (about twice as fast)
                    top = p[o] + fx * (p[o + 1] - p[o])
                    bottom = p[o + wp] + fx * (p[o + wp + 1] - p[o + wp])
                    out[i * w + j] = top + fy * (bottom - top)
                    continue
                for q in range(ch):
                    v00 = p[o + q]
                    v01 = p[o + ch + q]
                    v10 = p[o + wp * ch + q]
                    v11 = p[o + (wp + 1) * ch + q]
                    top = v00 + fx * (v01 - v00)
                    bottom = v10 + fx * (v11 - v10)
                    out[i * row + j * ch + q] = top + fy * (bottom - top)


@jit()
def erase_boxes(x, boxes, fill):  # pragma: no cover - compiled
    """Set each sample's rectangle ``boxes[n] = (top, left, height, width)`` to ``fill`` (in place)."""
    for k in range(x.shape[0]):
        top, left, bh, bw = boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3]
        for i in range(top, top + bh):
            for j in range(left, left + bw):
                for q in range(x.shape[3]):
                    x[k, i, j, q] = fill[q]
