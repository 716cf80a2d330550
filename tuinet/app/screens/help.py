"""The ``?`` help screen: every key (its lines come from the app's actions table) and what each tab shows."""

from __future__ import annotations

from typing import Iterable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

TABS: list[tuple[str, str]] = [
    ("Dashboard", "loss and accuracy (train smoothed per step, validation per epoch), progress, ETA, samples/s, "
                  "optimizer and learning rate, the event log"),
    ("Inspector", "per-layer weights, gradient norm with its history, update/weight ratio, dead units, "
                  "vanishing/exploding warnings; select a layer for its weight histogram and pictures"),
    ("Predictions", "test samples with predicted and true labels and confidence, the most confidently wrong, "
                    "the validation confusion matrix (every epoch)"),
    ("Boundary", "2-D datasets: the decision regions over the data points (shade = confidence)"),
]


def help_text(keys: Iterable[tuple[str, str]]) -> Table:
    """The (keys, what they do) lines, then the tabs, as a Rich table."""
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    for k, what in keys:
        t.add_row(k, what)
    t.add_row("", "")
    for name, what in TABS:
        t.add_row(Text(name, style="bold"), what)
    return t


class HelpScreen(ModalScreen[None]):
    """The keys and the tabs; any of escape, ?, q or enter closes it.

    Args:
        keys: (keys, what they do) lines, top to bottom (:func:`tuinet.app.actions.help_lines`).
    """

    BINDINGS = [Binding("escape,question_mark,q,enter", "close", "Close")]

    def __init__(self, keys: Iterable[tuple[str, str]]):
        super().__init__()
        self.key_lines = list(keys)

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog dialog-wide", id="help") as v:
            v.border_title = "tuinet — keys"
            v.border_subtitle = "escape to close"
            yield Static(help_text(self.key_lines))

    def action_close(self) -> None:
        self.dismiss(None)
