"""Overlaid curves of several runs for the Compare screen: each run its own colour and its own glyph, so runs stay
apart with ``NO_COLOR`` and in 16-colour terminals; filled glyphs on validation curves, hollow ones on train curves.

The curves are drawn by :mod:`tuinet.app.widgets.charts` (braille lines rasterised with NumPy); this module only
turns the Compare state into its lines and writes the legend.
"""

from __future__ import annotations

from rich.text import Text

from tuinet.app.compare_state import SPLIT_NAMES, X_NAMES, CompareState, short_name
from tuinet.app.widgets.charts import ChartData, Line

#: the two charts: metric -> (loss or accuracy series of each split)
METRICS = {"loss": ("train_loss", "val_loss"), "accuracy": ("train_accuracy", "val_accuracy")}
#: columns between two markers of one line; overlaid lines start at different columns so their glyphs do not land
#: on each other
MARKER_EVERY = 8


def overlay_lines(state: CompareState, metric: str) -> list[Line]:
    """The lines of one chart (``loss`` or ``accuracy``): for each charted run its validation curve (solid, filled
    glyph) and / or its train curve (dotted when both are shown, hollow glyph), as the state's split says."""
    train_series, val_series = METRICS[metric]
    runs = state.charted()
    splits = {"val": ("val",), "train": ("train",), "both": ("train", "val")}[state.split]
    lines = []
    n = max(len(runs), 1)
    for k, rec in enumerate(runs):
        st = state.style(rec.name)
        offset = (k * MARKER_EVERY) // n
        for split in splits:
            x, y = state.curve_points(rec.name, val_series if split == "val" else train_series)
            lines.append(Line(f"{rec.name} {split}", x, y, st.color, dotted=split == "train" and len(splits) == 2,
                              marker=st.glyph if split == "val" else st.hollow, marker_every=MARKER_EVERY,
                              marker_offset=offset + (MARKER_EVERY // 2 if split == "train" else 0)))
    return lines


def overlay_data(state: CompareState, metric: str) -> ChartData:
    """One chart's data; its key changes whenever the state would draw differently."""
    lines = overlay_lines(state, metric)
    if not state.charted():
        empty = "no run in the chart: space on a row puts it in"
    elif metric == "accuracy":
        empty = "no accuracy (regression runs)" if all(not ln.y for ln in lines) else "waiting for data…"
    else:
        empty = "waiting for data…"
    # where each charted run changed a setting while it trained, in the run's colour
    marks = [(x, state.style(rec.name).color) for rec in state.charted()
             for x in state.reader(rec.name).setting_changes(state.x_axis)]
    return ChartData(lines, key=(state.version, metric, state.x_axis, state.split, state.smooth), empty=empty,
                     log_y=state.log_y and metric == "loss", marks=marks)


def chart_title(state: CompareState, metric: str) -> str:
    """A chart's title: what it shows, against what, and how."""
    what = f"{metric} ({SPLIT_NAMES[state.split]})"
    extras = [f"vs {X_NAMES[state.x_axis]}"]
    if metric == "loss" and state.log_y:
        extras.append("log")
    if state.smooth:
        extras.append("smoothed")
    return f"{what} · {' · '.join(extras)}"


def legend_text(state: CompareState, name_width: int = 28) -> Text:
    """Each charted run's glyph(s) and name in its colour, then what filled and hollow glyphs mean."""
    t = Text(no_wrap=True, overflow="ellipsis")
    runs = state.charted()
    if not runs:
        t.append("no run in the chart: space on a row puts it in, a puts all in", style="dim")
        return t
    for rec in runs:
        st = state.style(rec.name)
        glyphs = {"val": st.glyph, "train": st.hollow, "both": st.glyph + st.hollow}[state.split]
        name = short_name(rec.name, name_width)
        if rec.name == state.this_run:
            name += " (this run)"
        t.append(glyphs, style=f"bold color({st.color})")
        t.append(f" {name}  ", style=f"color({st.color})")
    if state.split == "both":
        t.append("filled: validation · hollow, dotted: train", style="dim")
    return t
