"""The event log panel: the newest lines at the bottom, scrollable, and cheap to append to.

Why not Textual's ``RichLog``/``Log``: each write grows their virtual size, which makes Textual redo the whole
screen's layout (~8-11 ms of UI-thread time per write at 120x40, measured) while training runs on both cores.
This panel keeps a fixed size: writing a line only repaints the panel. It scrolls by its own offset (mouse wheel,
or the arrow, page and home/end keys when focused) and says how many newer lines are below when scrolled back.
"""

from __future__ import annotations

from collections import deque

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.strip import Strip
from textual.widget import Widget


class EventLog(Widget, can_focus=True):
    """A bounded log of rich text lines shown bottom-aligned; scrolling back keeps the view steady."""

    BINDINGS = [
        Binding("up", "scroll_lines(1)", "Older", show=False),
        Binding("down", "scroll_lines(-1)", "Newer", show=False),
        Binding("pageup", "scroll_page(1)", "Page older", show=False),
        Binding("pagedown", "scroll_page(-1)", "Page newer", show=False),
        Binding("home", "scroll_to(1)", "Oldest", show=False),
        Binding("end", "scroll_to(0)", "Newest", show=False),
    ]

    def __init__(self, max_lines: int = 400, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.log_lines: deque[Text] = deque(maxlen=max_lines)
        self.scrolled_back = 0  # how many lines the view is scrolled back from the newest
        self._written = 0  # lines ever written: the id of a line is its number
        self._cache: dict[tuple[int, int], Strip] = {}
        self._cache_style: Style | None = None

    # --- content ----------------------------------------------------------------------------------------------------

    def write(self, line: Text) -> None:
        """Append a line (the view stays on the same lines when scrolled back)."""
        self.log_lines.append(line)
        self._written += 1
        if self.scrolled_back:
            self.scrolled_back = min(self.scrolled_back + 1, self._max_offset())
        if len(self._cache) > 4 * max(self.size.height, 8):
            self._cache.clear()
        self.refresh()

    def clear(self) -> None:
        """Forget every line."""
        self.log_lines.clear()
        self.scrolled_back = 0
        self._cache.clear()
        self.refresh()

    # --- scrolling --------------------------------------------------------------------------------------------------

    def _max_offset(self) -> int:
        return max(0, len(self.log_lines) - max(self.size.height, 1))

    def _scroll(self, offset: int) -> None:
        offset = max(0, min(offset, self._max_offset()))
        if offset != self.scrolled_back:
            self.scrolled_back = offset
            self.refresh()

    def action_scroll_lines(self, n: int) -> None:
        self._scroll(self.scrolled_back + n)

    def action_scroll_page(self, direction: int) -> None:
        self._scroll(self.scrolled_back + direction * max(self.size.height - 1, 1))

    def action_scroll_to(self, oldest: int) -> None:
        self._scroll(self._max_offset() if oldest else 0)

    def on_mouse_scroll_up(self, event) -> None:
        event.stop()
        self._scroll(self.scrolled_back + 3)

    def on_mouse_scroll_down(self, event) -> None:
        event.stop()
        self._scroll(self.scrolled_back - 3)

    def visible_lines(self) -> list[Text]:
        """The lines in view, oldest first."""
        h = max(self.size.height, 1)
        end = len(self.log_lines) - self.scrolled_back
        return list(self.log_lines)[max(0, end - h):end]

    # --- drawing ----------------------------------------------------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cache_style = None  # looked up once per style change, not per line (a walk up the DOM)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self._cache_style
        if base is None:  # first paint, or the style changed (notify_style_update): rebuild the cached strips
            self._cache.clear()
            base = self._cache_style = self.rich_style
        h = self.size.height
        n = len(self.log_lines)
        end = n - self.scrolled_back
        start = max(0, end - h)
        if self.scrolled_back and y == h - 1:  # scrolled back: say so on the last row
            hint = Text(f" ↓ {self.scrolled_back} newer (End) ".rjust(width), style="reverse dim")
            return Strip(list(hint.render(self.app.console)), hint.cell_len).crop_extend(0, width, base)
        i = start + y
        if i >= end:
            return Strip.blank(width, base)
        key = (self._written - n + i, width)
        strip = self._cache.get(key)
        if strip is None:
            line = self.log_lines[i]
            segs = [Segment(s.text, s.style) for s in line.render(self.app.console) if s.text != "\n"]
            strip = Strip(segs).crop_extend(0, width, None).apply_style(base)
            self._cache[key] = strip
        return strip
