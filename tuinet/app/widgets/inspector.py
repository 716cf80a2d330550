"""The inspector tab: a table of layers with weight and gradient statistics; the selected layer's weight histogram
and its weights drawn as pictures (first dense layer units as input-shaped maps, conv filters as tiles)."""

from __future__ import annotations

import math
from itertools import groupby
from typing import Any, Callable

import numpy as np
from rich.color import Color
from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Static

from tuinet.app.state import RunState
from tuinet.app.widgets.cells import update_static
from tuinet.formatting import fmt_num
from tuinet.training.health import assess

SPARK = "▁▂▃▄▅▆▇█"
COLUMNS = [("layer", "layer"), ("type", "type"), ("output", "output"), ("params", "params"), ("mean", "w mean"),
           ("std", "w std"), ("grad", "grad norm"), ("flow", "over depth"), ("hist", "grad history"),
           ("ratio", "upd/w"), ("dead", "dead"), ("flag", "")]
#: cells of the gradient-over-depth bar (log scale across the layers, input at the top, output at the bottom)
FLOW_WIDTH = 10
#: ... on narrow terminals, with the history sparkline cut to the same width
FLOW_WIDTH_COMPACT = 6
#: shorter headings on narrow terminals, so the table keeps fitting 80 columns with the depth bars
COMPACT_LABELS = {"flow": "depth", "hist": "history"}
#: the bars span at least this many decades below the largest norm, so norms within a factor of two look alike
#: and a vanishing gradient (many decades) still stands out
FLOW_DECADES = 3
#: on narrow terminals type and output shape move to the detail panel, so the table fits 80 columns
COMPACT = {"type", "output", "flag"}
#: terminal columns around the layer table: its border (2), what its layout adds to the summed cells (2, measured)
#: and a vertical scrollbar (2, with more layers than rows)
TABLE_MARGIN = 6
NEG = (70, 140, 255)  # negative weights: blue
POS = (255, 140, 40)  # positive weights: orange
ZERO = (24, 24, 24)
#: 16-colour terminals (TERM=xterm, screen): the gradient above maps to near-black there, so three levels a side
#: are standard colours themselves (rich matches these exactly): black near zero (below 1/8 of the scale), then
#: blue / bright blue (from 5/8) and yellow / bright yellow
ANSI16_NEG = ((0, 0, 0), (0, 0, 170), (85, 85, 255))
ANSI16_POS = ((0, 0, 0), (170, 85, 0), (255, 255, 85))
_ANSI16_LEVEL = (0, 0, 1, 1, 1, 2, 2, 2, 2)  # |level| 0..8 -> index into the two tuples above
#: NO_COLOR: sign and size as glyphs, weakest to strongest (a blank is near zero)
NEG_GLYPHS = "-=≡▒"
POS_GLYPHS = "+*#█"
#: how weight pictures are drawn: a colour gradient, the 16 standard colours, or glyphs (no colour at all)
PICTURE_MODES = ("color", "ansi16", "glyph")


def sparkline(values: list[float], width: int = 16, log: bool = True) -> str:
    """The last ``width`` values as block characters (log scale by default: gradient norms span decades)."""
    vals = [v for v in values[-width:] if v is not None and math.isfinite(v)]
    if not vals:
        return ""
    if log:
        vals = [math.log10(max(v, 1e-30)) for v in vals]
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-12:
        return SPARK[3] * len(vals)
    return "".join(SPARK[min(7, int((v - lo) / (hi - lo) * 7.999))] for v in vals)


def flow_bar(value: float | None, lo: float, hi: float, width: int) -> str:
    """One layer's gradient norm as a bar on a log scale from ``lo`` (a sliver) to ``hi`` (full): the rows of the
    layer table, input to output, then draw the gradient's profile over depth."""
    if value is None or not math.isfinite(value) or value <= 0:
        return "·".ljust(width) if value == 0 else "?".ljust(width)
    f = 1.0 if hi <= lo else 0.08 + 0.92 * (math.log10(value) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    cells = f * width
    full = int(cells)
    part = " ▏▎▍▌▋▊▉"[int((cells - full) * 8)] if full < width else ""
    return ("█" * full + part.strip()).ljust(width)


def health_text(health: dict[str, Any] | None) -> Text:
    """The one-line verdict on the gradient over depth, with what usually helps when it is not healthy."""
    t = Text()
    t.append("gradient over depth (input → output): ", style="dim")
    if not health:
        t.append("waiting for the first layer statistics", style="dim")
        return t
    status, ratio = health.get("status", "ok"), health.get("ratio")
    first_last = f"first/last layer {fmt_num(ratio, 3)}" if ratio is not None else ""
    if status == "ok":
        t.append("healthy", style="green")
        t.append(f" · {first_last}" if first_last else "", style="dim")
        return t
    t.append(f"⚠ {status.replace('_', ' ')}", style="bold red")
    if status in ("vanishing", "exploding") and ratio is not None:  # the newest ratio, not the warning's
        t.append(f" · the first layer's gradient is {fmt_num(ratio, 3)} times the last layer's")
    else:
        t.append(f" · {health.get('message') or first_last}")
    if health.get("hint"):
        t.append(f" · {health['hint']}", style="dim")
    return t


def histogram_text(counts: list[int], edges: list[float], height: int = 6, col_width: int = 2) -> Text:
    """Vertical bars (eighth blocks) for a histogram, with the range underneath."""
    t = Text(no_wrap=True)
    if not counts:
        return t
    top = max(counts) or 1
    levels = [c / top * height * 8 for c in counts]
    for row in range(height, 0, -1):
        for lv in levels:
            filled = lv - (row - 1) * 8
            ch = "█" if filled >= 8 else (" ▁▂▃▄▅▆▇"[int(filled)] if filled > 0 else " ")
            t.append(ch * col_width, style="color(45)")
        t.append("\n")
    width = len(counts) * col_width
    lo, hi = fmt_num(float(edges[0]), 3), fmt_num(float(edges[-1]), 3)
    t.append(lo + " " * max(1, width - len(lo) - len(hi)) + hi, style="dim")
    return t


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return (int(a[0] + (b[0] - a[0]) * f), int(a[1] + (b[1] - a[1]) * f), int(a[2] + (b[2] - a[2]) * f))


def picture_mode(no_color: bool, color_system: str | None) -> str:
    """Which of :data:`PICTURE_MODES` suits a terminal: glyphs with ``NO_COLOR``, the standard colours on a
    16-colour terminal (rich's ``standard`` / ``windows`` colour systems), the gradient otherwise."""
    if no_color or color_system is None:
        return "glyph"
    return "ansi16" if color_system in ("standard", "windows") else "color"


def picture_legend(mode: str) -> str:
    """What the colours (or glyphs) of a weight picture mean, in ``mode``."""
    if mode == "glyph":
        return f"{' '.join(NEG_GLYPHS)} negative · {' '.join(POS_GLYPHS)} positive (weakest to strongest)"
    return "blue negative · yellow positive" if mode == "ansi16" else "blue negative · orange positive"


def glyph_lines(a: np.ndarray, scale: float) -> list[Text]:
    """A 2-D weight map without colour: each cell is the mean of two pixel rows, drawn with :data:`NEG_GLYPHS` or
    :data:`POS_GLYPHS` by its sign and size (the same footprint as the ``▀`` pictures)."""
    pairs = (a[0::2] + a[1::2]) / 2
    q = np.clip(np.round(pairs / scale * 4), -4, 4).astype(int)
    table = " " + POS_GLYPHS + NEG_GLYPHS[::-1]  # index with q: 1..4 positive, -1..-4 from the end
    return [Text("".join(table[v] for v in row.tolist()), no_wrap=True) for row in q]


def diverging_lines(img: Any, scale: float, mode: str = "color") -> list[Text]:
    """A 2-D weight map as lines of ``▀`` cells (scaled by ``scale``): blue negative, orange positive, dark zero;
    in ``ansi16`` mode the standard colours; in ``glyph`` mode (``NO_COLOR``) glyphs (:func:`glyph_lines`)."""
    a = np.asarray(img, dtype=np.float64)
    if a.ndim != 2:
        a = a.reshape(a.shape[0], -1)
    if a.shape[0] % 2:
        a = np.vstack([a, np.zeros((1, a.shape[1]))])
    s = scale if scale > 0 else 1.0
    if mode == "glyph":
        return glyph_lines(a, s)
    q = np.clip(np.round(a / s * 8), -8, 8).astype(int)  # 17 levels: few distinct styles, cheap to render
    cache: dict[tuple[int, int], Style] = {}

    def color(level: int) -> tuple[int, int, int]:
        if mode == "ansi16":
            return (ANSI16_NEG if level < 0 else ANSI16_POS)[_ANSI16_LEVEL[abs(level)]]
        return _mix(ZERO, NEG if level < 0 else POS, abs(level) / 8)

    lines = []
    for r in range(0, q.shape[0], 2):
        line = Text(no_wrap=True)
        # one span per run of equal cells (the zero border of a first layer's maps is one): a span per cell made
        # painting the pictures cost as much as building them
        for key, run in groupby(zip(q[r].tolist(), q[r + 1].tolist())):
            st = cache.get(key)
            if st is None:
                st = cache[key] = Style(color=Color.from_rgb(*color(key[0])), bgcolor=Color.from_rgb(*color(key[1])))
            line.append("▀" * sum(1 for _ in run), st)
        lines.append(line)
    return lines


def halve(img: np.ndarray) -> np.ndarray:
    """Average 2x2 pixel blocks (a 28x28 picture becomes 14x14: 14 columns x 7 rows of half blocks)."""
    a = np.asarray(img, dtype=np.float64)
    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    a = a[:h, :w]
    return (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]) / 4


def fit_size(pic_width: int, width: int, gap: int = 2, want: int = 3) -> bool:
    """True when pictures of ``pic_width`` columns should be halved so that ``want`` fit side by side."""
    return (width + gap) // (pic_width + gap) < want and pic_width >= 16


def tile(blocks: list[list[Text]], captions: list[str | Text], width: int, gap: int = 2) -> Text:
    """Lay out picture blocks (lists of equal-width lines) left to right, wrapping at ``width`` columns."""
    out = Text(no_wrap=True)
    if not blocks:
        return out
    bw = max(max((ln.cell_len for ln in b), default=0) for b in blocks)
    caps_t = [c if isinstance(c, Text) else Text(c, style="dim") for c in captions]
    bw = max(bw, max(c.cell_len for c in caps_t) if caps_t else 0)
    per_row = max(1, (width + gap) // (bw + gap))
    for start in range(0, len(blocks), per_row):
        group = blocks[start:start + per_row]
        caps = caps_t[start:start + per_row]
        height = max(len(b) for b in group)
        for r in range(height):
            for j, b in enumerate(group):
                ln = b[r] if r < len(b) else Text("")
                out.append_text(ln)
                out.append(" " * (bw - ln.cell_len + (gap if j < len(group) - 1 else 0)))
            out.append("\n")
        for j, c in enumerate(caps):
            out.append_text(c)
            out.append(" " * (bw - c.cell_len + (gap if j < len(caps) - 1 else 0)))
        out.append("\n\n")
    return out


class WidthText(Widget):
    """Text laid out for the widget's own width (tiles of pictures): built when painted, rebuilt on resize."""

    DEFAULT_CSS = "WidthText { height: auto; }"

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self._build: Callable[[int], Text] | None = None
        self._cache: tuple[int, Text] | None = None

    def show(self, build: Callable[[int], Text] | Text | str) -> None:
        """Show ``build(width)`` (or fixed text)."""
        if not callable(build):
            fixed = build if isinstance(build, Text) else Text(build)
            build = lambda width: fixed  # noqa: E731
        old = self._cache
        self._build = build
        self._cache = None
        if old is not None and self.text_for(old[0]).plain.count("\n") == old[1].plain.count("\n"):
            self.refresh()  # as many lines at this width as before: repainted, no layout pass of the whole screen
        else:
            self.refresh(layout=True)

    def text_for(self, width: int) -> Text:
        """The text at ``width`` columns (cached for the last width)."""
        if self._build is None:
            return Text("")
        if self._cache is None or self._cache[0] != width:
            self._cache = (width, self._build(max(width, 10)))
        return self._cache[1]

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self.text_for(width).plain.split("\n"))

    def render(self) -> Text:
        return self.text_for(self.content_size.width)


class Inspector(Vertical):
    """Layer table above; histogram and weight pictures of the highlighted layer below."""

    def compose(self) -> ComposeResult:
        yield Static(id="grad-health")
        yield DataTable(id="layer-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="layer-detail"):
            yield Static(id="layer-hist")
            with VerticalScroll(id="layer-pictures-scroll"):
                yield WidthText(id="layer-pictures")

    def on_mount(self) -> None:
        self._table = table = self.query_one(DataTable)
        self._hist = self.query_one("#layer-hist", Static)
        self._pics = self.query_one("#layer-pictures", WidthText)
        self.compact = False
        self._fit_width: int | None = None  # the terminal width :meth:`fit` was last given
        self._add_columns()
        table.border_title = "layers"
        self.query_one("#layer-hist").border_title = "weights"
        self.query_one("#layer-pictures-scroll").border_title = "weight pictures"
        self.selected: str | None = None
        self._state: RunState | None = None
        self._drawn_weights: tuple | None = None

    def _columns(self) -> list[tuple[str, str]]:
        return [(k, COMPACT_LABELS.get(k, label) if self.compact else label) for k, label in COLUMNS
                if not (self.compact and k in COMPACT)]

    def _add_columns(self) -> None:
        for key, label in self._columns():
            self._table.add_column(label, key=key)

    def fit(self, width: int) -> None:
        """Show the full table when its columns fit ``width`` terminal columns, the compact one otherwise.

        The full table's width follows its content (layer names, types and shapes, the gradient history filling
        up to 16 cells, flags), so this is checked again whenever the rows change: at 100-110 columns a fixed
        threshold left the last columns behind the table's horizontal scrollbar once the history had filled.
        """
        self._fit_width = width
        st = self._state
        self.set_compact(self._too_wide(self._rows(st) if st is not None else [], st))

    def _too_wide(self, rows: list[dict[str, Any]], st: RunState | None) -> bool:
        """True when the full table's columns with these rows (each as wide as its widest cell or heading, plus the
        cell padding on both sides) would not fit the width :meth:`fit` was given."""
        if self._fit_width is None:
            return self.compact
        widths = {k: len(label) for k, label in COLUMNS}
        for row in rows:
            for k, cell in self._cells(row, st, 1.0, 1.0, compact=False).items():
                widths[k] = max(widths[k], cell.cell_len if isinstance(cell, Text) else len(cell))
        if not any(r.get("flag") for r in rows):
            widths.pop("flag")  # an empty column at the end costs only its padding; without flags it is not counted
        return sum(w + 2 for w in widths.values()) > self._fit_width - TABLE_MARGIN

    def _relayout(self, compact: bool) -> bool:
        """Rebuild the columns for the full or the compact table; False when it already is that one."""
        if compact == self.compact:
            return False
        self.compact = compact
        self._table.clear(columns=True)
        self._add_columns()
        return True

    def set_compact(self, compact: bool) -> None:
        """Drop (or bring back) the type and output-shape columns."""
        if self._relayout(compact) and self._state is not None:
            self.update_table(self._state)

    def _rows(self, st: RunState) -> list[dict[str, Any]]:
        base = [dict(layer) for layer in st.layers if layer.get("params")]
        for row in base:
            row.update(st.layer_rows.get(row["name"], {}))
        return base

    def clear(self) -> None:
        """Forget the rows (a new run)."""
        self._table.clear()
        self.selected = None
        self._drawn_weights = None

    def update_table(self, st: RunState) -> None:
        """Insert or update one row per layer with parameters."""
        self._state = st
        table = self._table
        rows = self._rows(st)
        # the trainer's verdict; for a recording made before verdicts were sent, the same rule on its rows
        health = st.health or (assess(rows) if any(r.get("grad_norm") is not None for r in rows) else None)
        update_static(self.query_one("#grad-health", Static), health_text(health))
        norms = [r["grad_norm"] for r in rows if r.get("grad_norm") is not None and math.isfinite(r["grad_norm"])
                 and r["grad_norm"] > 0]
        lo, hi = (min(norms), max(norms)) if norms else (1.0, 1.0)
        lo = min(lo, hi * 10.0 ** -FLOW_DECADES)
        self._relayout(self._too_wide(rows, st))  # the rows may have outgrown (or shrunk below) the width
        for row in rows:
            name = row["name"]
            cells = self._cells(row, st, lo, hi, self.compact)
            cols = self._columns()
            if name not in table.rows:
                table.add_row(*[cells[k] for k, _ in cols], key=name)
            else:
                for k, _ in cols:
                    table.update_cell(name, k, cells[k])
        if self.selected is None and table.row_count:
            self.selected = str(table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value)

    @staticmethod
    def _cells(row: dict[str, Any], st: RunState, lo: float, hi: float, compact: bool) -> dict[str, Any]:
        """One layer's cells, by column key, for the full or the compact table."""
        name = row["name"]
        flag = row.get("flag") or ""
        dead = row.get("dead_fraction")
        fw = FLOW_WIDTH_COMPACT if compact else FLOW_WIDTH
        return {
            "layer": Text(f"⚠ {name}", style="bold red") if flag and compact else name, "type": row.get("kind", ""),
            "output": "x".join(str(d) for d in row.get("output_shape", [])),
            "params": f"{row.get('params', 0):,}", "mean": fmt_num(row.get("weight_mean"), 4),
            "std": fmt_num(row.get("weight_std"), 4), "grad": fmt_num(row.get("grad_norm"), 4),
            "flow": Text(flow_bar(row.get("grad_norm"), lo, hi, fw), style="color(45)"),
            "hist": Text(sparkline(list(st.grad_history.get(name, [])), width=fw if compact else 16),
                         style="color(45)"),
            "ratio": fmt_num(row.get("update_ratio"), 5),
            "dead": "-" if dead is None else Text(f"{dead:.0%}", style="yellow" if dead > 0.5 else ""),
            "flag": Text(f"⚠ {flag}", style="bold red") if flag else "",
        }

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.selected = str(event.row_key.value)
        if self._state is not None:
            self.update_detail(self._state, force=True)

    def update_detail(self, st: RunState, force: bool = False) -> None:
        """Draw the selected layer's histogram and weight pictures from the latest weights event."""
        self._state = st
        w = st.weights
        key = (id(w), self.selected)
        if not force and key == self._drawn_weights:
            return
        self._drawn_weights = key
        hist, pics = self._hist, self._pics
        entry = None
        if w:
            for layer in w.get("layers", []):
                if layer.get("name") == self.selected:
                    entry = layer
        row = st.layer_rows.get(self.selected or "", {})
        # The step goes in the pane's border title: on the text's first line it was cut off at the pane's width
        # (a long layer name and shape left "step 3" of "step 3000" at 120 columns).
        hist.border_title = "weights" if entry is None else f"weights · step {w.get('step')}"
        if entry is None:
            update_static(hist, Text("waiting for a weights snapshot…" if self.selected else "no layer selected",
                                     style="dim"), nowrap=True)
            pics.show("")
            return
        h = entry.get("histogram") or {}
        shape = next(("x".join(str(d) for d in layer.get("output_shape", [])) for layer in st.layers
                      if layer.get("name") == self.selected), "?")
        t = Text(f"{self.selected} ({entry.get('kind')} → {shape})\n", style="bold")
        col = 2 if hist.content_size.width >= 2 * len(h.get("counts", [])) else 1
        t.append_text(histogram_text(h.get("counts", []), h.get("edges", [0, 0]), col_width=col))
        t.append("\n")
        for label, k in (("mean", "weight_mean"), ("std", "weight_std"), ("min", "weight_min"), ("max", "weight_max"),
                         ("|w|", "weight_norm"), ("|grad|", "grad_norm"), ("upd/w", "update_ratio")):
            if row.get(k) is not None:
                t.append(f"\n{label:>7} ", style="dim")
                t.append(fmt_num(row[k], 5))
        if row.get("flag"):
            t.append(f"\n⚠ {row['flag']} gradients", style="bold red")
        update_static(hist, t, nowrap=True)
        pictures = entry.get("pictures")
        if not pictures:
            pics.show(Text("no pictures for this layer (only the first dense layer on image inputs and conv "
                             "filters are drawn)", style="dim"))
            return
        full = [np.asarray(p, dtype=np.float64) for p in pictures]
        kind = "unit" if entry.get("kind") == "Dense" else "filter"

        mode = picture_mode(self.app.no_color, self.app.console.color_system)

        def build(width: int) -> Text:
            arr = [halve(a) for a in full] if full and fit_size(full[0].shape[1], width) else full
            scale = float(max(np.abs(a).max() for a in arr)) or 1.0
            blocks = [diverging_lines(a, scale, mode) for a in arr]
            legend = Text(picture_legend(mode) + " · scale ±" + fmt_num(scale, 3) + "\n", style="dim")
            legend.append_text(tile(blocks, [f"{kind} {i}" for i in range(len(blocks))], width))
            return legend

        pics.show(build)
