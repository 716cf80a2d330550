"""The ``?`` help screen: every hotkey and what each tab shows."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

#: (keys, what they do), shown in this order; the app binds the same keys
HOTKEYS: list[tuple[str, str]] = [
    ("space", "pause / resume training"),
    ("+  -", "learning rate x2 / ÷2 (next step)"),
    ("L", "type an exact learning rate"),
    ("o", "choose the optimizer (weights kept, fresh state)"),
    ("s", "save a checkpoint now"),
    ("e", "evaluate on the test set now"),
    ("r", "restart with the current settings (asks first)"),
    ("l", "loss chart: log / linear scale"),
    ("1 2 3 4", "dashboard, inspector, predictions, boundary"),
    ("ctrl+p", "command palette (every action by name)"),
    ("?", "this help"),
    ("q", "quit: stops training and saves a checkpoint (asks first)"),
]

TABS: list[tuple[str, str]] = [
    ("Dashboard", "loss and accuracy (train smoothed per step, validation per epoch), progress, ETA, samples/s, "
                  "optimizer and learning rate, the event log"),
    ("Inspector", "per-layer weights, gradient norm with its history, update/weight ratio, dead units, "
                  "vanishing/exploding warnings; select a layer for its weight histogram and pictures"),
    ("Predictions", "test samples with predicted and true labels and confidence, the most confidently wrong, "
                    "the validation confusion matrix (every epoch)"),
    ("Boundary", "2-D datasets: the decision regions over the data points (shade = confidence)"),
]


def help_text() -> Table:
    """The keys and tabs as a Rich table."""
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    for k, what in HOTKEYS:
        t.add_row(k, what)
    t.add_row("", "")
    for name, what in TABS:
        t.add_row(Text(name, style="bold"), what)
    return t


class HelpScreen(ModalScreen[None]):
    """Hotkeys and tabs; any of escape, ?, q or enter closes it."""

    BINDINGS = [Binding("escape,question_mark,q,enter", "close", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog dialog-wide", id="help") as v:
            v.border_title = "tuinet — keys"
            v.border_subtitle = "escape to close"
            yield Static(help_text())

    def action_close(self) -> None:
        self.dismiss(None)
