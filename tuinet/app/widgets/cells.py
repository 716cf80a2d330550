"""Pictures drawn cell by cell (maps, boundaries) as runs: one span for each run of equal cells."""

from __future__ import annotations

from rich.style import Style
from rich.text import Span, Text


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
