"""The Predictions tab's embedding panel: validation samples as one layer receives them, projected on two principal
components (the trainer's ``embedding`` event), each drawn as its class's character in its class's colour (the
Boundary tab's, :func:`tuinet.app.widgets.boundary.class_rgb`), so the
classes can be seen to pull apart from the input to the output as the network learns. ``[`` and ``]`` step through
the layers."""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
from rich.color import Color
from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from tuinet.app.widgets.boundary import class_rgb
from tuinet.formatting import count

SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def class_symbols(names: list[str], k: int) -> list[str]:
    """One character per class: the names themselves when each is one distinct character (MNIST's digits), else
    0-9 then letters by class index (``?`` past 62 classes)."""
    if len(names) == k and all(len(n) == 1 for n in names) and len(set(names)) == k:
        return list(names)
    return [SYMBOLS[i] if i < len(SYMBOLS) else "?" for i in range(k)]


def _cells(points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    cols = np.clip(np.rint((points[:, 0] + 1) / 2 * (width - 1)), 0, width - 1).astype(int)
    rows = np.clip(np.rint((1 - (points[:, 1] + 1) / 2) * (height - 1)), 0, height - 1).astype(int)
    return rows, cols


def scatter_text(points: np.ndarray, labels: np.ndarray, symbols: list[str], width: int, height: int,
                 color: bool = True, mark: list[float] | None = None) -> Text:
    """``points`` (N x 2, within [-1, 1]) on a ``width`` x ``height`` grid of cells, y up: each cell holding points
    shows the character of its most frequent class (ties: the lower class), in that class's colour. ``mark``: one
    more point (a drawing) shown as ``★`` over them (at the edge when it falls outside)."""
    width, height = max(2, width), max(2, height)
    rows, cols = _cells(points, width, height)
    star = None
    if mark is not None and len(mark) == 2 and np.isfinite(mark).all():
        r, c = _cells(np.asarray([mark], dtype=np.float64), width, height)
        star = (int(r[0]), int(c[0]))
    k = max(len(symbols), int(labels.max(initial=0)) + 1)
    counts = np.zeros((height, width, k), np.int64)
    np.add.at(counts, (rows, cols, labels), 1)
    top = counts.argmax(axis=2)
    filled = counts.sum(axis=2) > 0
    styles = [Style(color=Color.from_rgb(*class_rgb(i))) for i in range(k)]  # the classes' colours on every tab
    t = Text(no_wrap=True, overflow="crop")
    for r in range(height):
        for c in range(width):
            if (r, c) == star:
                t.append("★", style="bold reverse" if color else "bold")
                continue
            if not filled[r, c]:
                t.append(" ")
                continue
            cls = int(top[r, c])
            sym = symbols[cls] if cls < len(symbols) else "?"
            t.append(sym, style=styles[cls] if color else "")
        if r < height - 1:
            t.append("\n")
    return t


class EmbeddingView(Widget):
    """The embedding panel: the chosen layer's view of the validation samples, with what its figures mean."""

    DEFAULT_CSS = "EmbeddingView { height: 1fr; }"

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self.event: dict[str, Any] | None = None
        self.view = -1  # the layer shown (an index into the event's views; -1: the last, the output's)
        self.color = True

    def show(self, event: dict[str, Any] | None, color: bool = True) -> None:
        """Show the newest embedding event."""
        self.event, self.color = event, color
        self.border_title = self._title()
        self.refresh()

    def step_view(self, delta: int) -> None:
        """Show the previous (-1) or next (+1) layer's view."""
        views = (self.event or {}).get("views") or []
        if views:
            current = self.view % len(views)
            self.view = max(0, min(len(views) - 1, current + delta))
            self.border_title = self._title()
            self.refresh()

    def _current(self) -> tuple[int, dict[str, Any]] | None:
        views = (self.event or {}).get("views") or []
        if not views:
            return None
        i = self.view % len(views) if self.view < 0 else min(self.view, len(views) - 1)
        return i, views[i]

    def _title(self) -> str:
        cur = self._current()
        if cur is None:
            return "what each layer makes of the data"
        i, v = cur
        return f"layers {i + 1}/{len(self.event['views'])}: {v['name']} · [ ]"

    def render(self) -> Text:
        cur = self._current()
        if cur is None:
            return Text("The validation samples as each layer receives them, in two dimensions (PCA): the trainer "
                        "sends them while this tab is open and the run trains.", style="dim")
        _, v = cur
        e = self.event
        labels = np.asarray(e.get("labels") or [], dtype=np.int64)
        points = np.asarray(v.get("points") or [], dtype=np.float64).reshape(-1, 2)
        names = [str(n) for n in e.get("class_names") or []]
        k = max(len(names), int(labels.max(initial=0)) + 1)
        w, h = self.content_size.width, self.content_size.height
        when = f"the run's saved weights (step {e.get('step') or 0:,})" if e.get("source") == "checkpoint" \
            else f"step {e.get('step') or 0:,}"
        foot = textwrap.wrap(f"{when} · {count(len(labels), 'validation sample')}, 2 of "
                             f"{v.get('dims', 0):,} dimensions ({100 * float(v.get('explained') or 0):.0f}% of the "
                             f"variance) · nearest neighbour in all {v.get('dims', 0):,}: the same class for "
                             f"{100 * float(v.get('neighbours') or 0):.0f}%", max(10, w))
        if v.get("drawn") is not None:
            pred = e.get("drawn_pred")
            read = names[pred] if isinstance(pred, int) and 0 <= pred < len(names) else pred
            foot.insert(0, f"★ your drawing (Draw tab), read as {read}")
        t = scatter_text(points, labels, class_symbols(names, k), w, max(2, h - len(foot)), self.color,
                         v.get("drawn")) if len(points) == len(labels) and len(labels) else Text("")
        for line in foot:
            t.append("\n" + line, style="dim")
        return t
