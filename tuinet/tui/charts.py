"""Line charts drawn by plotext inside a Textual widget.

Why a thin widget of our own rather than ``textual-plotext``: that package pins ``plotext<6`` and is no longer
maintained, while tuinet depends on plotext 6, whose object API (``figure.signal``/``draw``/``build``) differs from
the 5.x module functions ``textual-plotext`` wraps. What we need is small: build the figure at the widget's size
only when its data or size changed, turn plotext's ANSI output into a Rich ``Text`` once, and hand that cached
text to Textual on every repaint. Doing it ourselves also lets the app budget redraws (plotext is pure Python and
takes ~10-20 ms per chart, which competes with the training thread for the GIL).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

# one figure is shared by all charts (plotext keeps global state); only the UI thread draws, the lock is a guard
_PLOT_LOCK = threading.Lock()
_THEME_READY = False

#: 256-colour indices (work over SSH and in tmux): train, validation, third series
PALETTE = (45, 214, 120, 204)


def _ensure_theme() -> None:
    global _THEME_READY
    if _THEME_READY:
        return
    from plotext._settings.themes import add_theme

    # no canvas background: the chart sits on the app's own background; grey axes and labels
    add_theme("tuinet", canvas=None, text=244, sequence=list(PALETTE), grid=238)
    _THEME_READY = True


@dataclass
class Line:
    """One series of a chart."""

    label: str
    x: list[float]
    y: list[float]
    color: int = PALETTE[0]
    marker: str = "braille"
    points_only: bool = False


@dataclass
class ChartData:
    """Everything a chart draws; ``key`` identifies the data so an unchanged chart is not rebuilt."""

    lines: list[Line] = field(default_factory=list)
    key: object = None
    log_y: bool = False
    ylim: tuple[float, float] | None = None
    title: str = ""


def render_chart(data: ChartData, width: int, height: int) -> Text:
    """Build ``data`` with plotext at ``width`` x ``height`` cells and return it as Rich text."""
    import plotext as plt

    if width < 12 or height < 4:
        return Text("")
    lines = [ln for ln in data.lines if ln.y]
    if not lines:
        msg = "waiting for data…"
        pad = max(0, (height - 1) // 2)
        return Text("\n" * pad + msg.center(width), style="dim")
    with _PLOT_LOCK:
        _ensure_theme()
        fig = plt.figure
        fig.clear()
        fig.theme("tuinet")
        fig.plot_size(width, height)
        log_y = data.log_y and all(v > 0 for ln in lines for v in ln.y)
        for ln in lines:
            # braille has 2 dots per cell: more points than 2 per column only cost time
            xs, ys = decimate(ln.x, ln.y, 2 * width)
            sig = fig.signal(xs, ys, marker=plt.marker(ln.marker, pixel=ln.color))
            if not ln.points_only and len(ys) > 1:
                sig.lines()
            fig.draw(sig)
        if log_y:
            fig.ruler("y").scale("log")
        if data.ylim is not None:
            fig.ruler("y").lim(*data.ylim)
        if data.title:
            fig.title(data.title)
        ansi = fig.build().string()
    return Text.from_ansi(ansi, no_wrap=True, overflow="crop")


class PlotextChart(Widget):
    """A chart that redraws only when its data key or its size changed.

    Set :attr:`data` (a :class:`ChartData`); call :meth:`refresh_chart` to redraw if needed.
    """

    DEFAULT_CSS = """
    PlotextChart { height: 1fr; min-height: 6; }
    """

    log_y: reactive[bool] = reactive(False)

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.data = ChartData()
        self._text: Text | None = None
        self._built_for: tuple | None = None
        self.render_seconds = 0.0  # time of the last build (the app budgets redraws with it)
        self.builds = 0

    def set_data(self, data: ChartData) -> bool:
        """Replace the data; rebuild (and repaint) when it or the size changed. Returns True if rebuilt."""
        self.data = data
        return self.refresh_chart()

    def refresh_chart(self) -> bool:
        """Rebuild when the data key, log scale or size changed since the last build."""
        w, h = self.content_size.width, self.content_size.height
        want = (self.data.key, self.log_y, w, h)
        if want == self._built_for:
            return False
        t0 = time.perf_counter()
        self.data.log_y = self.log_y
        self._text = render_chart(self.data, w, h)
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

    def render(self) -> Text:
        return self._text if self._text is not None else Text("")


def decimate(x: list[float], y: list[float], n: int) -> tuple[list[float], list[float]]:
    """At most ``n`` points: the means of equal buckets of consecutive points (the last point kept as is)."""
    m = len(y)
    if m <= n or n < 2:
        return list(x), list(y)
    xs, ys = [], []
    per = (m - 1) / (n - 1)
    start = 0
    for i in range(n - 1):
        end = max(start + 1, int(round((i + 1) * per)))
        end = min(end, m - 1)
        if end <= start:
            continue
        xs.append(sum(x[start:end]) / (end - start))
        ys.append(sum(y[start:end]) / (end - start))
        start = end
    xs.append(x[-1])
    ys.append(y[-1])
    return xs, ys


def nice_limits(values: list[float]) -> tuple[float, float] | None:
    """A y range covering ``values`` with a little margin (None when empty or not finite)."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-12:
        return lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad
