"""Text for the widgets at the least painting cost: pictures drawn cell by cell (maps, boundaries) as runs, one span
for each run of equal cells, and panels updated without Textual's layout pass when their size stays."""

from __future__ import annotations

from rich.cells import cell_len
from rich.style import Style
from rich.text import Span, Text
from textual.widgets import Static


def append_cell(text: Text, chars: str, style: Style | None) -> None:
    """``text.append(chars, style)``, extending the last span instead when it ends here with the same style object
    (callers cache one per colour pair). Textual paints a span at a time: a picture of a span per cell cost several
    times as much to paint as to build, and most cells of a map repeat their neighbour's colours."""
    end = len(text)
    text.append(chars)
    if style is None:
        return
    spans = text.spans
    if spans and spans[-1].end == end and spans[-1].style is style:
        spans[-1] = Span(spans[-1].start, end + len(chars), style)
    else:
        spans.append(Span(end, end + len(chars), style))


def _extent(text: Text, width: int, auto_width: bool, nowrap: bool) -> tuple[int, int] | None:
    """What of ``text`` decides the size of a widget ``width`` columns wide: its line count (and, ``auto_width``,
    its longest line); None when a line would wrap (the height then depends on where it wraps)."""
    lengths = [cell_len(line) for line in text.plain.split("\n")]
    longest = max(lengths)
    if not nowrap and longest > width:
        return None
    return len(lengths), (longest if auto_width else 0)


def update_static(widget: Static, text: Text, *, auto_width: bool = False, nowrap: bool = False) -> None:
    """``widget.update(text)`` with Textual's layout pass only when the widget's size may change.

    A layout pass arranges and repaints every widget of the screen (about 0.1 s with the inspector's table shown);
    panels updated 3-4 times a second that way took 30% of a core from training with the inspector or predictions
    tab open. Text equal to what is shown is not drawn again; text that takes as many lines as before (``auto_width``,
    a widget as wide as its text: and whose longest line is as long; ``nowrap``: lines are cut, never wrapped) is
    repainted without a layout pass.
    """
    prev = getattr(widget, "_tuinet_text", None)
    if prev is not None and prev == text:
        return
    width = widget.content_size.width
    new = _extent(text, width, auto_width, nowrap) if width > 0 else None
    layout = prev is None or new is None or new != _extent(prev, width, auto_width, nowrap)
    widget.update(text, layout=layout)
    widget._tuinet_text = text  # type: ignore[attr-defined]
