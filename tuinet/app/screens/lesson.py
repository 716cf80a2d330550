"""What a lesson's runs showed (``tuinet learn``), over the Compare screen once they are all done."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class LessonResultScreen(ModalScreen[None]):
    """The measured result text of a lesson; escape, enter or q closes it (the Compare screen stays)."""

    BINDINGS = [Binding("escape,enter,q", "close", "Close")]

    def __init__(self, title: str, text: str):
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog dialog-wide", id="lesson-result") as v:
            v.border_title = self.title_text
            v.border_subtitle = "escape to close"
            yield Static(self.text)

    def action_close(self) -> None:
        self.dismiss(None)
