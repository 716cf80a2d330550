"""The decision-boundary map for 2-D datasets, drawn as TensorFlow Playground does: each region in its class
colour, paler where the model is less sure, with the data points on top. One character cell holds two grid rows
(``▀``: foreground = upper, background = lower), so a 60x20 widget shows a 60x40 grid."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.color import Color
from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from tuinet.app.widgets.cells import append_cell

#: class colours (Playground orange and blue first), ten so that MNIST's digits each have their own, on every tab
CLASS_RGB = [(245, 147, 34), (8, 119, 189), (80, 190, 90), (200, 80, 200), (230, 220, 60), (90, 210, 220),
             (230, 70, 70), (160, 160, 160), (165, 110, 75), (240, 140, 190)]
BACKGROUND = (18, 18, 18)
#: point glyphs by class, so classes stay distinguishable without colour (NO_COLOR)
POINT_GLYPHS = "●○◆◇▲△■□"
#: region shading by class without colour
REGION_GLYPHS = " ░▒▓"


def _mix(a, b, f: float) -> tuple[int, int, int]:
    return (int(a[0] + (b[0] - a[0]) * f), int(a[1] + (b[1] - a[1]) * f), int(a[2] + (b[2] - a[2]) * f))


def class_rgb(k: int) -> tuple[int, int, int]:
    """Class ``k``'s colour (the same on the Boundary tab, the neuron maps and layer by layer)."""
    return CLASS_RGB[k % len(CLASS_RGB)]


def point_cells(event: dict[str, Any], width: int, height: int) -> dict[tuple[int, int], int]:
    """The event's data points by the (row, column) cell they fall in at ``width`` x ``height`` cells: their class."""
    (x0, x1), (y0, y1) = event.get("xrange", [0, 1]), event.get("yrange", [0, 1])
    pts: dict[tuple[int, int], int] = {}
    for x, y, lab in event.get("points") or []:
        c = int((x - x0) / ((x1 - x0) or 1) * width)
        r = int((y1 - y) / ((y1 - y0) or 1) * 2 * height) // 2
        if 0 <= c < width and 0 <= r < height:
            pts[(r, c)] = int(lab)
    return pts


def boundary_text(event: dict[str, Any], width: int, height: int, num_classes: int | None = None,
                  color: bool = True) -> Text:
    """Render a ``boundary`` event at ``width`` x ``height`` cells (regions by class, shade by confidence)."""
    cls = np.asarray(event.get("classes") or [[0]], dtype=np.int64)
    conf = np.asarray(event.get("confidence") or [[1.0]], dtype=np.float64)
    rows, cols = cls.shape
    width, height = max(4, width), max(2, height)
    k = num_classes or int(cls.max()) + 1
    regression = k <= 1
    if regression:  # shade by predicted value
        lo, hi = float(conf.min()), float(conf.max())
        level = (conf - lo) / (hi - lo) if hi > lo else np.zeros_like(conf)
    else:  # 1/k (a guess) -> pale, 1 -> saturated
        floor = 1.0 / max(k, 2)
        level = np.clip((conf - floor) / (1 - floor), 0, 1)
    ri = np.minimum((np.arange(2 * height) * rows) // (2 * height), rows - 1)
    ci = np.minimum((np.arange(width) * cols) // width, cols - 1)
    g_cls = cls[np.ix_(ri, ci)]
    g_lvl = np.round(level[np.ix_(ri, ci)] * 4).astype(int)  # 5 shades per class keeps the style cache small

    pts = point_cells(event, width, height)

    def region_rgb(c: int, lv: int) -> tuple[int, int, int]:
        if regression:
            return _mix((8, 119, 189), (245, 147, 34), lv / 4)
        return _mix(BACKGROUND, class_rgb(c), 0.12 + 0.5 * lv / 4)

    styles: dict[tuple, Style] = {}
    t = Text(no_wrap=True, overflow="crop")
    for r in range(height):
        if r:
            t.append("\n")
        for c in range(width):
            top = (int(g_cls[2 * r, c]), int(g_lvl[2 * r, c]))
            bot = (int(g_cls[2 * r + 1, c]), int(g_lvl[2 * r + 1, c]))
            lab = pts.get((r, c))
            if not color:
                if lab is not None:
                    t.append(POINT_GLYPHS[lab % len(POINT_GLYPHS)])
                else:
                    t.append(REGION_GLYPHS[min(3, top[0] % 4)] if not regression else REGION_GLYPHS[top[1] * 3 // 4])
                continue
            if lab is not None:
                key = ("p", lab, top, bot)
                st = styles.get(key)
                if st is None:
                    bg = _mix(region_rgb(*top), region_rgb(*bot), 0.5)
                    st = styles[key] = Style(color=Color.from_rgb(*_mix(class_rgb(lab), (255, 255, 255), 0.15)),
                                             bgcolor=Color.from_rgb(*bg), bold=True)
                append_cell(t, POINT_GLYPHS[0] if lab < len(CLASS_RGB) else POINT_GLYPHS[lab % len(POINT_GLYPHS)], st)
                continue
            key = (top, bot)
            st = styles.get(key)
            if st is None:
                st = styles[key] = Style(color=Color.from_rgb(*region_rgb(*top)),
                                         bgcolor=Color.from_rgb(*region_rgb(*bot)))
            append_cell(t, "▀", st)
    return t


def legend_text(class_names: list[str], event: dict[str, Any] | None) -> Text:
    """Class colours and the axis ranges."""
    t = Text(no_wrap=True)
    for i, name in enumerate(class_names):
        t.append("● ", style=Style(color=Color.from_rgb(*class_rgb(i)), bold=True))
        t.append(f"{name}   ")
    if event:
        (x0, x1), (y0, y1) = event.get("xrange", [0, 1]), event.get("yrange", [0, 1])
        t.append(f"x {x0:.2f}..{x1:.2f}  y {y0:.2f}..{y1:.2f}  step {event.get('step')}  epoch {event.get('epoch')}  "
                 "(pale = unsure)", style="dim")
    return t


class BoundaryMap(Widget):
    """Draws the latest ``boundary`` event at the widget's size (redrawn when the event or the size changes)."""

    DEFAULT_CSS = "BoundaryMap { height: 1fr; }"

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self.event: dict[str, Any] | None = None
        self.num_classes: int | None = None
        self._text: Text | None = None
        self._built_for: tuple | None = None

    def set_event(self, event: dict[str, Any] | None, num_classes: int | None = None) -> None:
        """Show ``event`` (a boundary event)."""
        self.event = event
        self.num_classes = num_classes
        self._rebuild()

    def _rebuild(self) -> None:
        w, h = self.content_size.width, self.content_size.height
        key = (id(self.event), w, h)
        if key == self._built_for or w < 4 or h < 2:
            return
        self._built_for = key
        if self.event is None:
            self._text = Text("waiting for the first map…", style="dim")
        else:
            # square pixels: a cell is about twice as tall as wide and holds two pixel rows
            (x0, x1), (y0, y1) = self.event.get("xrange", [0, 1]), self.event.get("yrange", [0, 1])
            aspect = ((x1 - x0) or 1) / ((y1 - y0) or 1)
            mw, mh = w, h
            if mw > aspect * 2 * mh:
                mw = max(4, int(round(aspect * 2 * mh)))
            else:
                mh = max(2, int(round(mw / (aspect * 2))))
            text = self.draw(mw, mh)
            pad = " " * ((w - mw) // 2)
            lines = text.split("\n")
            self._text = Text("\n" * ((h - mh) // 2), no_wrap=True)
            for i, line in enumerate(lines):
                self._text.append(pad)
                self._text.append_text(line)
                if i < len(lines) - 1:
                    self._text.append("\n")
        self.refresh()

    def draw(self, width: int, height: int) -> Text:
        """The picture at ``width`` x ``height`` cells: the decision boundary (a subclass may draw another map of
        the same plane)."""
        return boundary_text(self.event, width, height, self.num_classes, color=not self.app.no_color)

    def redraw(self) -> None:
        """Draw again now (what :meth:`draw` shows changed, not the event)."""
        self._built_for = None
        self._rebuild()

    def on_resize(self) -> None:
        self._rebuild()

    def render(self) -> Text:
        return self._text or Text("")
