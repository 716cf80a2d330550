"""The Sweep screen's parameters panel: Optuna's importances as bars, then the objective against each parameter as a
small text scatter (one glyph per trial: ★ the best, ● complete, ◐ running, ○ pruned, so states read without
colour), with a log x axis where the values span decades (a log-uniform learning rate) and one column per choice
for categorical parameters."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

from rich.text import Text
from textual.widget import Widget

from tuinet.app.sweep_state import SweepState, fmt_param, fmt_value, objective_name
from tuinet.app.widgets.importance_bars import importance_text

if TYPE_CHECKING:
    from tuinet.sweep.state import TrialRow

#: trial state -> (glyph, style, priority where two trials fall in one cell); the best trial is drawn ★ over all
POINT_LOOK = {"complete": ("●", "green", 2), "running": ("◐", "cyan", 1), "pruned": ("○", "dim", 0)}
BEST = ("★", "bold yellow", 9)
#: a numeric x axis is drawn on a log scale when its values span this factor or more
LOG_SPAN = 100.0
#: a loss axis is drawn on a log scale when its values span this factor or more (a pruned trial far above the rest)
LOG_Y_SPAN = 4.0
#: rows of one scatter's plot
PLOT_ROWS = 4
GUTTER = 7  # columns of the y labels


def is_number(v: Any) -> bool:
    """True for a finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def log_scale(values: Sequence[Any]) -> bool:
    """Whether numeric ``values`` read better on a log axis: all positive, spanning :data:`LOG_SPAN` or more."""
    nums = [v for v in values if is_number(v)]
    return len(nums) == len(values) and bool(nums) and min(nums) > 0 and max(nums) / min(nums) >= LOG_SPAN


def _points(name: str, trials: Sequence[TrialRow], best: int | None) -> list[tuple[Any, float, tuple]]:
    out = []
    for t in trials:
        if name not in t.params or t.value is None or not math.isfinite(t.value):
            continue
        look = BEST if t.number == best else POINT_LOOK.get(t.state)
        if look is not None:
            out.append((t.params[name], t.value, look))
    return out


def scatter_text(name: str, state: SweepState, width: int, rows: int = PLOT_ROWS) -> Text:
    """The objective (y) against parameter ``name`` (x) over the trials with a value, ``width`` columns wide:
    a title line, ``rows`` plot rows, the x axis and its labels.

    The x axis spans the searched range where the sweep's space is known (so the plot shows where the sampler
    looked), on a log scale for a log-uniform parameter and one column per value for a choice; without the space,
    the trials' own range, on a log scale when it spans decades."""
    snap = state.snapshot
    best = snap.best.number if snap is not None and snap.best is not None else None
    pts = _points(name, state.trials, best)
    xs = [p[0] for p in pts]
    spec = state.space.get(name) or {}
    kind = spec.get("kind")
    choices = [v for v in spec.get("values") or ()] if kind in ("choice", "grid") else []
    categorical = kind == "choice" or any(not is_number(x) for x in xs) or \
        (kind == "grid" and any(not is_number(v) for v in choices))
    log = not categorical and (kind == "log_uniform" if kind else log_scale(xs))
    ys = [p[1] for p in pts]
    log_y = bool(ys) and state.objective == "val_loss" and min(ys) > 0 and max(ys) / min(ys) >= LOG_Y_SPAN
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(name, style="bold")
    scales = ["log x"] * log + ["choice"] * categorical + ["log y"] * log_y
    if scales:
        t.append(f" ({', '.join(scales)})", style="dim")
    if not pts:
        t.append("\n  no trial with a value yet", style="dim")
        return t
    plot_w = max(8, width - GUTTER - 1)
    fy = math.log10 if log_y else float
    y_lo, y_hi = min(ys), max(ys)
    if categorical:
        cats = list(dict.fromkeys([*(fmt_param(v) for v in choices), *sorted({fmt_param(x) for x in xs})]))
        slot = plot_w / len(cats)
        col_of = {c: min(plot_w - 1, int(slot * (i + 0.5))) for i, c in enumerate(cats)}

        def column(x: Any) -> int:
            return col_of[fmt_param(x)]
    else:
        f = math.log10 if log else float
        bounds = [v for v in (spec.get("low"), spec.get("high"), *choices) if is_number(v) and (v > 0 or not log)]
        lo_v, hi_v = min(xs + bounds), max(xs + bounds)
        x_lo, x_hi = f(lo_v), f(hi_v)

        def column(x: Any) -> int:
            return (plot_w - 1) // 2 if x_hi == x_lo else int(round((f(x) - x_lo) / (x_hi - x_lo) * (plot_w - 1)))
    grid: list[list[tuple | None]] = [[None] * plot_w for _ in range(rows)]
    for x, y, look in pts:
        r = 0 if y_hi == y_lo else int(round((fy(y_hi) - fy(y)) / (fy(y_hi) - fy(y_lo)) * (rows - 1)))
        c = column(x)
        if grid[r][c] is None or grid[r][c][2] < look[2]:
            grid[r][c] = look
    obj = state.objective
    for r, line in enumerate(grid):
        label = fmt_value(y_hi, obj) if r == 0 else fmt_value(y_lo, obj) if r == rows - 1 else ""
        t.append("\n" + label[:GUTTER - 1].rjust(GUTTER - 1) + " ", style="dim")
        t.append("┤" if label else "│", style="dim")
        for cellv in line:
            if cellv is None:
                t.append(" ")
            else:
                t.append(cellv[0], style=cellv[1])
    t.append("\n" + " " * (GUTTER - 1) + " └" + "─" * plot_w, style="dim")
    t.append("\n" + " " * (GUTTER + 1))
    if categorical:
        labels = [" "] * plot_w
        for c, col in col_of.items():
            room = max(1, int(slot) - 1)
            text = c[:room]
            start = max(0, min(plot_w - len(text), col - len(text) // 2))
            labels[start:start + len(text)] = list(text)
        t.append("".join(labels), style="dim")
    else:
        lo, hi = fmt_param(lo_v), fmt_param(hi_v)
        t.append(lo + " " * max(1, plot_w - len(lo) - len(hi)) + hi, style="dim")
    return t


def params_text(state: SweepState, width: int) -> Text:
    """The whole panel: importances, then one scatter per parameter (most important first), then the glyphs."""
    snap = state.snapshot
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append("importance", style="bold underline")
    t.append("\n")
    t.append_text(importance_text(snap.importances if snap is not None else {}, width))
    imp = snap.importances if snap is not None else {}
    names = sorted(state.params(), key=lambda p: -imp.get(p, -1.0))
    t.append("\n\n")
    t.append(f"{objective_name(state.objective)} by parameter", style="bold underline")
    t.append(" (lower: better)" if state.minimize else " (higher: better)", style="dim")
    for name in names:
        t.append("\n")
        t.append_text(scatter_text(name, state, width))
    t.append("\n")
    for glyph, style, word in ((BEST[0], BEST[1], "best"), *((g, s, w) for w, (g, s, _) in POINT_LOOK.items())):
        t.append(glyph, style=style)
        t.append(f" {word}  ", style="dim")
    return t


class ParamsPanel(Widget):
    """Importances and scatters of a :class:`SweepState`, laid out to the panel's width (in a scrolling box)."""

    DEFAULT_CSS = """
    ParamsPanel {
        height: auto;
    }
    """

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self.state: SweepState | None = None

    def show(self, state: SweepState) -> None:
        """Draw ``state`` (again)."""
        self.state = state
        self.refresh(layout=True)

    def render(self) -> Text:
        if self.state is None or self.state.snapshot is None:
            return Text("")
        return params_text(self.state, max(20, self.content_size.width or self.size.width))
