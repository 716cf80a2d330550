"""Live line charts: a braille renderer over NumPy, drawn straight into Textual strips.

Why not plotext here: plotext (the base dependency, used by ``tuinet plot``) is pure Python; building one
58x15 chart took ~9 ms and turning its ANSI output into Textual lines another ~5 ms, on the UI thread, which
shares the two cores with training. This renderer rasterises the series with NumPy (segments become dots on a
2x4-dots-per-cell braille grid, OR-ed into one code per cell), lays out "nice" ticks itself and hands Textual
ready-made :class:`~textual.strip.Strip` lines, so a rebuild costs well under a millisecond and a repaint
nothing beyond copying cached strips. Charts rebuild only when their data, scale or size changed.

Colour is never the only thing that tells two series apart (``NO_COLOR``, 16-colour terminals): a line can be
dotted, and can carry a marker glyph (``•``, ``●``, ``▲`` ...) drawn over it at its points or at regular columns,
and :func:`line_key` writes the same style into a legend.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

#: 256-colour indices (work over SSH and in tmux): train, validation, third series
PALETTE = (45, 214, 120, 204)
#: axes, ticks and labels
AXIS_COLOR = 244
#: the vertical lines where a setting changed (ChartData.marks), and their owner code in a rendered row
MARK_COLOR = 226
MARK = -2

# braille dot bits by (row within the cell 0..3, column 0..1)
_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], np.uint8)
_BRAILLE = [chr(0x2800 + i) for i in range(256)]
_BRAILLE[0] = " "


@dataclass
class Line:
    """One series of a chart.

    Attributes:
        label: what the series is (legends).
        x, y: its points.
        color: a 256-colour index.
        points_only: braille dots at the points, not joined.
        dotted: the joining line drawn with every other dot (tells it apart from a solid one without colour).
        marker: a glyph drawn over the line (None: none), in the cells of its points, or every ``marker_every``
            columns when it has more points than fit at that spacing.
        marker_every: columns between markers on a dense line (0: a marker on every point that gets its own cell).
        marker_offset: the first marked column of a dense line (staggers the markers of overlaid lines).
    """

    label: str
    x: list[float]
    y: list[float]
    color: int = PALETTE[0]
    points_only: bool = False
    dotted: bool = False
    marker: str | None = None
    marker_every: int = 0
    marker_offset: int = 0


@dataclass
class ChartData:
    """Everything a chart draws; ``key`` identifies the data so an unchanged chart is not rebuilt."""

    lines: list[Line] = field(default_factory=list)
    key: object = None
    log_y: bool = False
    ylim: tuple[float, float] | None = None
    log_x: bool = False  # x drawn on a log10 scale (positive x only), ticks at powers of ten
    empty: str = "waiting for data…"  # what an empty chart says
    #: x positions where a setting changed (the lr, the optimizer, regularization): each drawn as a dim vertical
    #: line ``┊`` through the plot's empty cells and ``┴`` on the x axis; an ``(x, colour)`` pair draws it in that
    #: 256-colour index (a run's colour on the Compare screen) instead of MARK_COLOR
    marks: list[float | tuple[float, int]] = field(default_factory=list)


def nice_step(span: float, target: int) -> float:
    """The step of 1, 2 or 5 times a power of ten that cuts ``span`` into the nearest to ``target`` parts."""
    raw = span / max(target, 1)
    if not (raw > 0 and math.isfinite(raw)):
        return 1.0
    mag = 10.0 ** math.floor(math.log10(raw))
    return min((m * mag for m in (0.5, 1.0, 2.0, 5.0, 10.0)), key=lambda s: abs(span / s - target))


def nice_ticks(lo: float, hi: float, target: int) -> tuple[list[float], float]:
    """Multiples of a nice step inside [lo, hi] (about ``target`` of them) and the step."""
    step = nice_step(hi - lo, target)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + step * 1e-9 and len(ticks) < 100:
        ticks.append(k * step)
        k += 1
    return ticks, step


def fmt_tick(v: float, step: float) -> str:
    """A tick label with just enough digits for ``step`` (1.1e30 and 1.2e30 stay apart: never two ticks with one
    label)."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-4:
        digits = 0
        if step > 0:  # the mantissa's decimals down to the step's magnitude
            digits = math.floor(math.log10(a) + 1e-9) - math.floor(math.log10(step) + 1e-9)
        mantissa, exponent = f"{v:.{min(max(digits, 0), 6)}e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 2
    return f"{v:.{min(decimals, 6)}f}"


def _log_ticks(lo: float, hi: float, target: int) -> list[tuple[float, str]]:
    """Ticks for a log10 axis given in log units: powers of ten, or 1-2-5 steps on a short range."""
    out = []
    for e in range(math.floor(lo), math.ceil(hi) + 1):
        for m in ((1,) if hi - lo > 2.5 else (1, 2, 5)):
            t = e + math.log10(m)
            if lo - 1e-9 <= t <= hi + 1e-9:
                v = m * 10.0 ** e
                out.append((t, f"{v:g}"))
    if len(out) >= 2:
        if len(out) > target + 1:
            keep = math.ceil(len(out) / (target + 1))
            out = out[::keep]
        return out
    ticks, step = nice_ticks(10 ** lo, 10 ** hi, target)
    return [(math.log10(v), fmt_tick(v, step)) for v in ticks if v > 0]


def decimate(x, y, n: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` points: the means of equal buckets of consecutive points (the last point kept as is)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    m = len(y)
    if m <= n or n < 2:
        return x, y
    edges = np.unique(np.round(np.arange(n) * ((m - 1) / (n - 1))).astype(np.int64))
    starts, ends = edges[:-1], edges[1:]
    cx, cy = np.cumsum(np.r_[0.0, x]), np.cumsum(np.r_[0.0, y])
    cnt = ends - starts
    xs = np.r_[(cx[ends] - cx[starts]) / cnt, x[-1]]
    ys = np.r_[(cy[ends] - cy[starts]) / cnt, y[-1]]
    return xs, ys


def _segments_to_pixels(px: np.ndarray, py: np.ndarray, connect: bool) -> tuple[np.ndarray, np.ndarray]:
    """Every dot of the polyline through (px, py) (integer pixel coordinates), or the points alone."""
    if not connect or len(px) < 2:
        return px, py
    dx, dy = np.diff(px), np.diff(py)
    n = np.maximum(np.abs(dx), np.abs(dy)) + 1
    seg = np.repeat(np.arange(len(dx)), n)
    first = np.cumsum(n) - n
    t = (np.arange(int(n.sum())) - first[seg]) / np.maximum(n - 1, 1)[seg]
    xs = np.rint(px[:-1][seg] + t * dx[seg]).astype(np.int64)
    ys = np.rint(py[:-1][seg] + t * dy[seg]).astype(np.int64)
    return xs, ys


def _marker_cells(px: np.ndarray, py: np.ndarray, ln: Line, pw: int, ph: int) -> tuple[np.ndarray, np.ndarray]:
    """The (row, column) cells where ``ln``'s marker goes, from its points in pixel coordinates."""
    cols, rows = px >> 1, py >> 2
    every = ln.marker_every
    if every > 0 and len(np.unique(cols)) > max(1, pw // every):
        # a dense line: one marker every ``every`` columns, at the line's height there
        order = np.argsort(px, kind="stable")
        sx, sy = px[order].astype(np.float64), py[order].astype(np.float64)
        first, last = int(cols.min()), int(cols.max())
        start = first + (ln.marker_offset - first) % every
        cols = np.arange(start, last + 1, every, dtype=np.int64)
        rows = np.rint(np.interp(cols * 2 + 0.5, sx, sy)).astype(np.int64) >> 2
    keep = (rows >= 0) & (rows < ph) & (cols >= 0) & (cols < pw)
    return rows[keep], cols[keep]


def render_chart(data: ChartData, width: int, height: int, base: Style | None = None) -> list[Strip]:
    """``data`` drawn in ``width`` x ``height`` cells: a y axis with labelled ticks, an x axis with labelled
    ticks below, and each line as braille dots (later lines drawn over earlier ones), then the lines' markers."""
    base = base or Style()
    blank = Strip([Segment(" " * max(width, 0), base)], max(width, 0))
    if width < 12 or height < 4:
        return [blank] * max(height, 0)
    series = []
    log_y = data.log_y
    for ln in data.lines:
        x = np.asarray(ln.x, np.float64)
        y = np.asarray(ln.y, np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        if data.log_x:
            ok &= x > 0
            x = np.log10(np.where(ok, x, 1.0))
        if ok.any():
            series.append((ln, x[ok], y[ok]))
    if log_y and not all((y > 0).all() for _, _, y in series):
        log_y = False
    if not series:
        msg = data.empty
        pad = max(0, (height - 1) // 2)
        rows = [blank] * height
        rows[pad] = Strip([Segment(msg.center(width)[:width], base + Style(dim=True))], width)
        return rows
    axis_style = base + Style(color=Color.from_ansi(AXIS_COLOR))
    ph = height - 2  # plot rows; then the x axis and its labels
    # --- y range and ticks (in log10 units on a log axis)
    ys_all = np.concatenate([y for _, _, y in series])
    if data.ylim is not None and not log_y:
        lo, hi = data.ylim
    else:
        v = np.log10(ys_all) if log_y else ys_all
        lo, hi = float(v.min()), float(v.max())
        if hi - lo < 1e-12:
            lo, hi = lo - (0.5 if not log_y else 0.1), hi + (0.5 if not log_y else 0.1)
        else:
            pad = (hi - lo) * 0.04
            lo, hi = lo - pad, hi + pad
    target = max(2, ph // 3 + 1)
    if log_y:
        yticks = _log_ticks(lo, hi, target)
    else:
        tv, step = nice_ticks(lo, hi, target)
        yticks = [(t, fmt_tick(t, step)) for t in tv]
    lw = max([len(s) for _, s in yticks] + [1])
    pw = width - lw - 1
    if pw < 4:
        return [blank] * height
    PW, PH = 2 * pw, 4 * ph
    # --- x range and ticks
    xs_all = np.concatenate([x for _, x, _ in series])
    x0, x1 = float(xs_all.min()), float(xs_all.max())
    if x1 - x0 < 1e-12:
        x0, x1 = x0 - 0.5, x1 + 0.5
    sx = (PW - 1) / (x1 - x0)
    sy = (PH - 1) / (hi - lo)
    # --- rasterise
    codes = np.zeros(ph * pw, np.uint8)
    owner = np.full(ph * pw, -1, np.int16)
    marks: list[tuple[int, np.ndarray]] = []  # (line, cells) of each line's markers
    for i, (ln, x, y) in enumerate(series):
        x, y = decimate(x, y, 2 * PW)
        yv = np.log10(y) if log_y else y
        px = np.rint((x - x0) * sx).astype(np.int64)
        py = np.rint((hi - yv) * sy).astype(np.int64)
        xs, ys = _segments_to_pixels(px, py, not ln.points_only)
        if ln.dotted and not ln.points_only and len(xs) > 1:
            # every other dot along the line (segments share their end dots: those are counted once)
            new = np.r_[True, (np.diff(xs) != 0) | (np.diff(ys) != 0)]
            xs, ys = xs[new], ys[new]
            xs, ys = xs[::2], ys[::2]
        keep = (ys >= 0) & (ys < PH) & (xs >= 0) & (xs < PW)
        xs, ys = xs[keep], ys[keep]
        cell = (ys >> 2) * pw + (xs >> 1)
        np.bitwise_or.at(codes, cell, _BITS[ys & 3, xs & 1])
        owner[cell] = i
        if ln.marker:
            mr, mc = _marker_cells(px, py, ln, pw, ph)
            marks.append((i, mr * pw + mc))
    glyph: dict[int, int] = {}  # cell -> the line whose marker is drawn there (later lines win)
    for i, cells in marks:
        for c in cells.tolist():
            glyph[c] = i
    styles = [base + Style(color=Color.from_ansi(ln.color)) for ln, _, _ in series]
    # --- y tick rows
    tick_row: dict[int, str] = {}
    for t, label in yticks:
        r = int(round((hi - t) * sy)) >> 2
        if 0 <= r < ph and r not in tick_row:
            tick_row[r] = label
    rows: list[Strip] = []
    chars = [_BRAILLE[c] for c in codes.tolist()]
    own = owner.tolist()
    for c, i in glyph.items():
        chars[c] = series[i][0].marker
        own[c] = i
    styles_of = {-1: base}
    mark_owner: dict[int, int] = {}  # column -> the owner code of its mark (MARK, MARK - 1 ... by colour)
    for m in data.marks:
        x, color = (m, MARK_COLOR) if not isinstance(m, tuple) else m
        if data.log_x or not math.isfinite(x) or not x0 <= x <= x1:
            continue
        code = next((k for k, st in styles_of.items() if k <= MARK and st.color == Color.from_ansi(color)),
                    MARK - (len(styles_of) - 1))
        styles_of.setdefault(code, base + Style(color=Color.from_ansi(color), dim=True))
        mark_owner.setdefault(int(round((x - x0) * sx)) >> 1, code)
    mark_cols = sorted(mark_owner)
    for col in mark_cols:  # under the lines: only where no dot or marker is drawn
        for r in range(ph):
            if codes[r * pw + col] == 0 and own[r * pw + col] == -1:
                chars[r * pw + col], own[r * pw + col] = "┊", mark_owner[col]
    for r in range(ph):
        label = tick_row.get(r)
        segs = [Segment((label or "").rjust(lw) + ("┤" if label is not None else "│"), axis_style)]
        crow, orow = chars[r * pw:(r + 1) * pw], own[r * pw:(r + 1) * pw]
        run_owner, run = orow[0], [crow[0]]
        for c in range(1, pw):
            o = orow[c]
            if o != run_owner:
                segs.append(Segment("".join(run), styles[run_owner] if run_owner >= 0 else styles_of[run_owner]))
                run_owner, run = o, []
            run.append(crow[c])
        segs.append(Segment("".join(run), styles[run_owner] if run_owner >= 0 else styles_of[run_owner]))
        rows.append(Strip(segs, width))
    # --- x axis and labels
    target_x = max(2, pw // 10)
    if data.log_x:
        xticks = _log_ticks(x0, x1, target_x)
    else:
        xt, xstep = nice_ticks(x0, x1, target_x)
        xticks = [(t, fmt_tick(t, xstep)) for t in xt]
    axis = ["─"] * pw
    labels = [" "] * (pw + lw + 1)
    free_from = 0
    for t, s in xticks:
        c = int(round((t - x0) * sx)) >> 1
        if not 0 <= c < pw:
            continue
        axis[c] = "┬"
        start = max(lw + 1 + c - len(s) // 2, 0)
        if start >= free_from and start + len(s) <= len(labels):
            labels[start:start + len(s)] = list(s)
            free_from = start + len(s) + 1
    for col in mark_cols:
        axis[col] = "┼" if axis[col] == "┬" else "┴"
    rows.append(Strip([Segment(" " * lw + "└" + "".join(axis), axis_style)], width))
    rows.append(Strip([Segment("".join(labels), axis_style)], width))
    return rows


def line_key(ln: Line) -> Text:
    """How ``ln`` looks, for a legend: ``━━`` solid, ``┅┅`` dotted, with its marker in the middle (``┅•┅``)."""
    stroke = "·" if ln.points_only else ("┅" if ln.dotted else "━")
    return Text(stroke + (ln.marker or stroke) + stroke, style=f"color({ln.color})")


def render_text(data: ChartData, width: int, height: int) -> Text:
    """The chart as plain Rich text (tests, exports)."""
    t = Text()
    for i, strip in enumerate(render_chart(data, width, height)):
        if i:
            t.append("\n")
        for seg in strip:
            t.append(seg.text, seg.style)
    return t


class LineChart(Widget):
    """A chart that rebuilds only when its data key, scale or size changed; repaints copy cached strips.

    Set :attr:`data` (a :class:`ChartData`) with :meth:`set_data`.
    """

    DEFAULT_CSS = """
    LineChart { height: 1fr; min-height: 6; }
    """

    log_y: reactive[bool] = reactive(False)

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.data = ChartData()
        self._strips: list[Strip] = []
        self._built_for: tuple | None = None
        self.render_seconds = 0.0  # time of the last build
        self.builds = 0

    def set_data(self, data: ChartData) -> bool:
        """Replace the data; rebuild (and repaint) when it or the size changed. Returns True if rebuilt."""
        self.data = data
        return self.refresh_chart()

    def refresh_chart(self) -> bool:
        """Rebuild when the data key, log scale, size or style changed since the last build."""
        w, h = self.content_size.width, self.content_size.height
        base = self.rich_style
        want = (self.data.key, self.log_y, w, h, base)
        if want == self._built_for:
            return False
        t0 = time.perf_counter()
        self.data.log_y = self.log_y
        self._strips = render_chart(self.data, w, h, base)
        self.render_seconds = time.perf_counter() - t0
        self.builds += 1
        self._built_for = want
        self.refresh()
        return True

    def watch_log_y(self, _old: bool, _new: bool) -> None:
        if self.is_mounted:
            self.refresh_chart()

    def on_resize(self) -> None:
        self.refresh_chart()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._built_for = None  # colours or background changed (theme): rebuild at the next paint

    def render_line(self, y: int) -> Strip:
        if self._built_for is None:
            self.refresh_chart()
        strips = self._strips
        width = self.content_size.width
        if 0 <= y < len(strips):
            return strips[y]
        return Strip.blank(width, self.rich_style)
