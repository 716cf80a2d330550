"""Draw small images in the terminal with the upper half block: one character = two pixel rows."""

from __future__ import annotations

import os
from itertools import groupby

import numpy as np

UPPER = "▀"


def _to_unit(img: np.ndarray) -> np.ndarray:
    """Return (H, W, C) floats in [0, 1], scaled by the image's own range; H padded to even."""
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 1:
        side = int(round(np.sqrt(a.size)))
        a = a.reshape(side, -1) if side * side == a.size else a[None, :]
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"cannot draw an array of shape {np.shape(img)} as an image")
    a = a[..., :3]
    finite = np.isfinite(a)
    lo = a[finite].min() if finite.any() else 0.0
    hi = a[finite].max() if finite.any() else 1.0
    if 0.0 <= lo and hi <= 1.0:
        lo, hi = 0.0, 1.0
    elif 0.0 <= lo and hi <= 255.0 and np.issubdtype(np.asarray(img).dtype, np.integer):
        lo, hi = 0.0, 255.0
    a = np.where(finite, (a - lo) / (hi - lo if hi > lo else 1.0), 0.0)
    if a.shape[0] % 2:
        a = np.concatenate([a, np.zeros((1,) + a.shape[1:])], axis=0)
    return np.clip(a, 0.0, 1.0)


def _rgb(px: np.ndarray) -> tuple[int, int, int]:
    v = np.round(px * 255).astype(int)
    return (int(v[0]),) * 3 if v.size == 1 else (int(v[0]), int(v[1]), int(v[2]))


def _color_mode() -> str:
    if os.environ.get("NO_COLOR"):
        return "plain"
    if os.environ.get("COLORTERM", "").lower() in ("truecolor", "24bit"):
        return "truecolor"
    return "256"


def _ansi256(rgb: tuple[int, int, int]) -> int:
    r, g, b = rgb
    if r == g == b:  # the 24-step gray ramp, plus black and white from the cube
        if r < 8:
            return 16
        if r > 248:
            return 231
        return 232 + round((r - 8) / 247 * 24)
    q = lambda c: round(c / 255 * 5)  # noqa: E731
    return 16 + 36 * q(r) + 6 * q(g) + q(b)


def render_image(img: np.ndarray, color: bool | None = None) -> str:
    """Return ``img`` (HxW, HxWx1 or HxWx3) as lines of ``▀`` (fg = top pixel, bg = bottom pixel).

    ``color=None`` picks 24-bit escapes when ``COLORTERM`` says so, 256-colour escapes otherwise, and a
    plain two-level drawing (``▀ ▄ █`` and spaces) when ``NO_COLOR`` is set; ``color=False`` forces plain.
    """
    a = _to_unit(img)
    mode = _color_mode() if color is None or color else "plain"
    if color and mode == "plain":
        mode = "256"
    lines = []
    for r in range(0, a.shape[0], 2):
        top, bottom = a[r], a[r + 1]
        if mode == "plain":
            t = top.mean(axis=-1) >= 0.5
            b = bottom.mean(axis=-1) >= 0.5
            lines.append("".join("█" if tt and bb else UPPER if tt else "▄" if bb else " " for tt, bb in zip(t, b)))
            continue
        out = []
        for tp, bp in zip(top, bottom):
            ft, bt = _rgb(tp), _rgb(bp)
            if mode == "truecolor":
                out.append(f"\x1b[38;2;{ft[0]};{ft[1]};{ft[2]}m\x1b[48;2;{bt[0]};{bt[1]};{bt[2]}m{UPPER}")
            else:
                out.append(f"\x1b[38;5;{_ansi256(ft)}m\x1b[48;5;{_ansi256(bt)}m{UPPER}")
        lines.append("".join(out) + "\x1b[0m")
    return "\n".join(lines)


def render_image_text(img: np.ndarray):
    """Return ``img`` as a ``rich.text.Text`` of ``▀`` cells (for Textual widgets)."""
    from rich.color import Color
    from rich.style import Style
    from rich.text import Text

    a = _to_unit(img)
    v = np.round(a * 255).astype(int)  # what _rgb gives each pixel, for the whole image at once
    px = [[tuple(p) * 3 if len(p) == 1 else tuple(p) for p in row] for row in v.tolist()]
    text = Text(no_wrap=True, overflow="crop")
    styles: dict[tuple, Style] = {}
    for r in range(0, a.shape[0], 2):
        if r:
            text.append("\n")
        # one span per run of equal cells (an MNIST digit's black background is mostly runs)
        for key, run in groupby(zip(px[r], px[r + 1])):
            style = styles.get(key)
            if style is None:
                style = styles[key] = Style(color=Color.from_rgb(*key[0]), bgcolor=Color.from_rgb(*key[1]))
            text.append(UPPER * sum(1 for _ in run), style)
    return text


def side_by_side(blocks: list[str], captions: list[str] | None = None, gap: int = 2) -> str:
    """Join several rendered images horizontally (ANSI-aware widths), with optional captions below."""
    import re

    strip = re.compile(r"\x1b\[[0-9;]*m")
    split = [b.split("\n") for b in blocks]
    widths = [max(len(strip.sub("", ln)) for ln in lines) for lines in split]
    if captions:
        widths = [max(w, len(c)) for w, c in zip(widths, captions)]
    height = max(len(lines) for lines in split)
    rows = []
    for i in range(height):
        parts = []
        for lines, w in zip(split, widths):
            ln = lines[i] if i < len(lines) else ""
            parts.append(ln + " " * (w - len(strip.sub("", ln))))
        rows.append((" " * gap).join(parts).rstrip())
    if captions:
        rows.append((" " * gap).join(c.ljust(w) for c, w in zip(captions, widths)).rstrip())
    return "\n".join(rows)
