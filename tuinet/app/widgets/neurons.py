"""Playground's neuron maps: each input's and hidden unit's output over the input plane as a small picture, one
column per layer, updated with every ``boundary`` event. Selecting one (a click, or the arrow keys once the panel has
the focus) shows it large in place of the decision boundary; escape goes back.

Colours follow Playground: orange below zero, blue above, dark near zero. Without colour (``NO_COLOR``) the sign is a
glyph family (``░▒▓█`` below zero, ``.:+#`` above), so the pictures still read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rich.color import Color
from rich.style import Style
from rich.text import Text
from textual.message import Message
from textual.widget import Widget

from tuinet.app import actions
from tuinet.app.widgets.boundary import POINT_GLYPHS, class_rgb, _mix, point_cells
from tuinet.app.widgets.cells import append_cell

NEGATIVE = (245, 147, 34)
POSITIVE = (8, 119, 189)
ZERO = (34, 34, 34)
NEG_GLYPHS = "░▒▓█"
POS_GLYPHS = ".:+#"
LEVELS = 4  # shades on each side of zero


def unit_levels(layer: dict[str, Any], unit: int) -> list[list[float]]:
    """One unit's map as values in [-1, 1] on its layer's colour scale: hidden units share their layer's largest
    output (so a nearly silent unit looks silent), inputs each use their own (x² and x differ in range by nature)."""
    pct = layer["maps"][unit]
    scales = layer.get("scales") or [1.0]
    own = scales[unit] if unit < len(scales) else 1.0
    shared = max(scales) if layer.get("label") != "inputs" else own
    f = (own / shared if shared > 0 else 0.0) / 100.0
    return [[v * f for v in row] for row in pct]


def _level(v: float) -> int:
    return max(-LEVELS, min(LEVELS, int(round(v * LEVELS))))


def _rgb(level: int) -> tuple[int, int, int]:
    return _mix(ZERO, NEGATIVE if level < 0 else POSITIVE, abs(level) / LEVELS)


def _glyph(level: int) -> str:
    if level == 0:
        return " "
    return (NEG_GLYPHS if level < 0 else POS_GLYPHS)[abs(level) - 1]


def map_text(values: list[list[float]], width: int, height: int, color: bool = True,
             points: dict[tuple[int, int], int] | None = None) -> Text:
    """Draw ``values`` (rows of numbers in [-1, 1], top row first) at ``width`` x ``height`` cells, two pixel rows per
    cell (``▀``), with ``points`` ((row, col) -> class) on top."""
    rows, cols = len(values), len(values[0]) if values else 0
    t = Text(no_wrap=True, overflow="crop")
    if not rows or not cols:
        return t
    styles: dict[tuple, Style] = {}
    for r in range(height):
        if r:
            t.append("\n")
        top_row = values[min(rows - 1, (2 * r) * rows // (2 * height))]
        bot_row = values[min(rows - 1, (2 * r + 1) * rows // (2 * height))]
        for c in range(width):
            ci = min(cols - 1, c * cols // width)
            top, bot = _level(top_row[ci]), _level(bot_row[ci])
            lab = points.get((r, c)) if points else None
            if not color:
                t.append(POINT_GLYPHS[lab % len(POINT_GLYPHS)] if lab is not None else _glyph(top))
                continue
            if lab is not None:
                key = ("p", lab, top, bot)
                if key not in styles:
                    styles[key] = Style(color=Color.from_rgb(*_mix(class_rgb(lab), (255, 255, 255), 0.3)),
                                        bgcolor=Color.from_rgb(*_mix(_rgb(top), _rgb(bot), 0.5)), bold=True)
                append_cell(t, "●", styles[key])
                continue
            key = (top, bot)
            if key not in styles:
                styles[key] = Style(color=Color.from_rgb(*_rgb(top)), bgcolor=Color.from_rgb(*_rgb(bot)))
            append_cell(t, "▀", styles[key])
    return t


def large_neuron_text(event: dict[str, Any], sel: tuple[int, int], width: int, height: int,
                      color: bool = True) -> Text | None:
    """The selected unit's map at ``width`` x ``height`` with the data points on top (None: no such unit)."""
    layers = (event.get("neurons") or {}).get("layers") or []
    layer_i, unit = sel
    if not (0 <= layer_i < len(layers) and 0 <= unit < len(layers[layer_i]["maps"])):
        return None
    values = unit_levels(layers[layer_i], unit)
    return map_text(values, width, height, color, point_cells(event, width, height))


def unit_name(event: dict[str, Any] | None, sel: tuple[int, int]) -> str:
    """How the legend names a unit: ``input x²`` or ``layer 2 (Dense(8) Tanh), unit 3``."""
    layers = ((event or {}).get("neurons") or {}).get("layers") or []
    if not 0 <= sel[0] < len(layers):
        return "?"
    layer = layers[sel[0]]
    if layer.get("names"):
        return f"input {layer['names'][sel[1]]}" if sel[1] < len(layer["names"]) else "input"
    label = layer["label"]
    num, _, desc = label.partition(": ")
    return f"layer {num} ({desc}), unit {sel[1] + 1}"


@dataclass(frozen=True)
class Layout:
    """Where the pictures go: their size in cells and each shown unit's top-left cell."""

    pic_w: int
    pic_h: int
    columns: list[tuple[int, int]]  # per layer: (x of its column, its width)
    cells: dict[tuple[int, int], tuple[int, int]]  # (layer, unit) -> (x, y)


#: a layer may show fewer units than it has (the panel's subtitle says so) when that keeps pictures at least this
#: tall: tiny pictures of every unit of a wide layer say less than readable ones of a few
MIN_SHOWN = 8


def _share(need: list[int], total: int) -> list[int]:
    """Split ``total`` picture columns among layers that need ``need`` each: every layer gets what it needs if all
    fit, else layers that need little get it and the rest share what remains equally (at least one each)."""
    give = [0] * len(need)
    left, open_ = total, sorted(range(len(need)), key=lambda i: need[i])
    while open_:
        fair = max(1, left // len(open_))
        i = open_[0]
        if need[i] <= fair:
            give[i] = need[i]
            left -= need[i]
            open_.pop(0)
            continue
        for j in open_:
            give[j] = fair
        break
    return give


def layout(units: list[int], width: int, height: int) -> Layout:
    """Fit one column per layer into ``width`` x ``height`` cells (a header row, then the unit pictures in a grid,
    one column gap between pictures, two between layers): the largest square pictures that show every unit, or at
    least :data:`MIN_SHOWN` of each layer (the rest left out); the smallest size otherwise."""
    n_layers = len(units)
    for ph in (4, 3, 2, 1):
        pw = 2 * ph  # a cell is about twice as tall as wide and holds two pixel rows: square pixels, square maps
        gap_r = 1 if ph > 1 else 0
        per_col = max(1, (height - 1 + gap_r) // (ph + gap_r))
        need = [max(1, math.ceil(n / per_col)) for n in units]
        # k picture columns take k*(pw+1)-1 cells; layers are two apart
        total = max(n_layers, (width - 2 * (n_layers - 1) + n_layers) // (pw + 1))
        give = _share(need, total)
        shown = [min(n, g * per_col) for n, g in zip(units, give)]
        if all(s >= min(n, MIN_SHOWN) for s, n in zip(shown, units)) or ph == 1:
            break
    cells: dict[tuple[int, int], tuple[int, int]] = {}
    columns = []
    x = 0
    for li, (n, g) in enumerate(zip(units, give)):
        col_w = g * (pw + 1) - 1
        for u in range(min(n, g * per_col)):
            cx, cy = x + (u // per_col) * (pw + 1), 1 + (u % per_col) * (ph + gap_r)
            if cx + pw <= width and cy + ph <= height:
                cells[(li, u)] = (cx, cy)
        columns.append((x, col_w))
        x += col_w + 2
    return Layout(pw, ph, columns, cells)


class NeuronMaps(Widget, can_focus=True):
    """The neuron pictures of the latest ``boundary`` event; posts :class:`NeuronMaps.Selected` when the selection
    changes (the Boundary tab then draws that unit large)."""

    DEFAULT_CSS = "NeuronMaps { height: 1fr; }"
    BINDINGS = actions.bindings(actions.NEURON_ACTIONS)

    class Selected(Message):
        """The selected unit changed: ``(layer, unit)``, or None for the decision boundary."""

        def __init__(self, selected: tuple[int, int] | None):
            super().__init__()
            self.selected = selected

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self.border_title = "neurons"
        self.event: dict[str, Any] | None = None
        self.selected: tuple[int, int] | None = None
        self._layout: Layout | None = None
        self._text: Text | None = None
        self._built_for: tuple | None = None

    @property
    def layers(self) -> list[dict[str, Any]]:
        """The neuron layers of the current event."""
        return ((self.event or {}).get("neurons") or {}).get("layers") or []

    def set_event(self, event: dict[str, Any] | None) -> None:
        """Show the neuron maps of ``event`` (a boundary event)."""
        self.event = event
        self._rebuild()

    def select(self, sel: tuple[int, int] | None) -> None:
        """Select a unit (None: none), redraw and tell the tab."""
        if sel is not None and (self._layout is None or sel not in self._layout.cells):
            return
        if sel != self.selected:
            self.selected = sel
            self._built_for = None
            self._rebuild()
            self.post_message(self.Selected(sel))

    def _rebuild(self) -> None:
        w, h = self.content_size.width, self.content_size.height
        key = (id(self.event), self.selected, w, h)
        if key == self._built_for or w < 4 or h < 2:
            return
        self._built_for = key
        layers = self.layers
        if not layers:
            self._layout = None
            self._text = Text("waiting for the first maps…" if self.event is None
                              else "no neuron maps in this event" if "neurons" not in self.event
                              else "no hidden units to show", style="dim")
            self.refresh()
            return
        lay = self._layout = layout([len(layer["maps"]) for layer in layers], w, h)
        color = not self.app.no_color
        grid = [[(" ", None)] * w for _ in range(h)]

        def put(x: int, y: int, text: Text) -> None:
            for i, line in enumerate(text.split("\n")):
                if 0 <= y + i < h:
                    for j, span_char in enumerate(_cells(line)):
                        if 0 <= x + j < w:
                            grid[y + i][x + j] = span_char

        partial: list[str] = []
        for li, (x, col_w) in enumerate(lay.columns):
            layer = layers[li]
            shown = sum(1 for (lj, _) in lay.cells if lj == li)
            head = "in" if layer["label"] == "inputs" else layer["label"].split(":")[0]
            put(x, 0, Text(head[:max(col_w, 2)], style="bold"))
            if shown < layer["units"]:
                partial.append(f"layer {head}: {shown} of {layer['units']}")
        self.border_subtitle = ", ".join(partial)
        for (li, u), (x, y) in lay.cells.items():
            put(x, y, map_text(unit_levels(layers[li], u), lay.pic_w, lay.pic_h, color))
        if self.selected in lay.cells:  # frame the selected picture's corners
            x, y = lay.cells[self.selected]
            mark = Style(bold=True, reverse=True)
            for cx, cy, ch in ((x - 1, y, "▶"), (x + lay.pic_w, y + lay.pic_h - 1, "◀")):
                if 0 <= cx < w and 0 <= cy < h:
                    grid[cy][cx] = (ch, mark)
        t = Text(no_wrap=True, overflow="crop")
        for r, row in enumerate(grid):
            if r:
                t.append("\n")
            for ch, st in row:
                append_cell(t, ch, st)
        self._text = t
        self.refresh()

    def on_resize(self) -> None:
        self._built_for = None
        self._rebuild()

    def render(self) -> Text:
        return self._text or Text("")

    def on_click(self, event) -> None:
        lay = self._layout
        if lay is None:
            return
        for sel, (x, y) in lay.cells.items():
            if x <= event.x < x + lay.pic_w and y <= event.y < y + lay.pic_h:
                self.select(None if sel == self.selected else sel)
                return

    # --- keys (the NEURON_ACTIONS of actions.py) -------------------------------------------------------------------

    def _move(self, d_layer: int, d_unit: int) -> None:
        if self._layout is None or not self._layout.cells:
            return
        cells = sorted(self._layout.cells)
        if self.selected is None:
            self.select(next((c for c in cells if c[0] == 1), cells[0]))
            return
        li, u = self.selected
        if d_layer:
            ids = sorted({c[0] for c in cells})
            li = ids[max(0, min(len(ids) - 1, ids.index(li) + d_layer))]
            u = min(u, max(c[1] for c in cells if c[0] == li))
        else:
            in_layer = [c[1] for c in cells if c[0] == li]
            u = max(0, min(max(in_layer), u + d_unit))
        self.select((li, u))

    def action_neuron_next(self) -> None:
        self._move(0, 1)

    def action_neuron_prev(self) -> None:
        self._move(0, -1)

    def action_neuron_right(self) -> None:
        self._move(1, 0)

    def action_neuron_left(self) -> None:
        self._move(-1, 0)

    def action_neuron_clear(self) -> None:
        self.select(None)


def _cells(line: Text) -> list[tuple[str, Style | None]]:
    """(character, style) per cell of one line of text."""
    out: list[tuple[str, Style | None]] = [(ch, None) for ch in line.plain]
    base = line.style if isinstance(line.style, Style) else (Style.parse(line.style) if line.style else None)
    if base is not None:
        out = [(ch, base) for ch, _ in out]
    for span in line.spans:
        st = span.style if isinstance(span.style, Style) else Style.parse(span.style)
        for i in range(span.start, min(span.end, len(out))):
            out[i] = (out[i][0], st)
    return out
