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
    ("Inspector", "per-layer weights, gradient norm with its history and as a profile over depth (with its "
                  "health verdict), update/weight ratio, dead units; select a layer for its weight histogram and "
                  "pictures"),
    ("Step view (n)", "one training step in four stages: forward pass of one sample, loss before and after, the "
                      "gradient at every layer, each layer's update"),
    ("Predictions", "test samples with predicted and true labels and confidence, the most confidently wrong, "
                    "the validation confusion matrix (every epoch)"),
    ("Boundary", "2-D datasets: the decision regions over the data points (shade = confidence)"),
    ("Compare", "this run against earlier runs of its runs folder: overlaid curves (each run its own glyph), the "
                "runs table (sort, filter, space puts a run in the chart), the settings that differ"),
]
#: the standalone Compare screen (`tuinet compare`) in a sentence
COMPARE_ABOUT = ("Compare: overlaid curves of the runs in the chart, each with its own glyph (filled on validation "
                 "curves, hollow on train curves); the runs table; the settings that differ between the charted runs. "
                 "Live runs update every second.")


def help_text(keys: Iterable[tuple[str, str]], tabs: bool = True, about: str = COMPARE_ABOUT) -> Table:
    """The (keys, what they do) lines, then the tabs (or, without tabs, ``about``: what the screen shows), as a Rich
    table."""
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    for k, what in keys:
        t.add_row(k, what)
    t.add_row("", "")
    if not tabs:
        t.add_row("", about)
        return t
    for name, what in TABS:
        t.add_row(Text(name, style="bold"), what)
    return t


class HelpScreen(ModalScreen[None]):
    """The keys and the tabs; any of escape, ?, q or enter closes it.

    Args:
        keys: (keys, what they do) lines, top to bottom (:func:`tuinet.app.actions.help_lines`).
        tabs: list the training app's tabs under the keys (False: say what the screen shows, ``about``).
        about: what a screen without tabs shows (default: the Compare screen).
        title: the box's title (default: the app's or the Compare screen's).
    """

    BINDINGS = [Binding("escape,question_mark,q,enter", "close", "Close")]

    def __init__(self, keys: Iterable[tuple[str, str]], tabs: bool = True, about: str = COMPARE_ABOUT,
                 title: str | None = None):
        super().__init__(classes="dialog-screen")  # centred, clear of the top bar and the footer
        self.key_lines = list(keys)
        self.tabs = tabs
        self.about = about
        self.title_text = title or ("tuinet — keys" if tabs else "tuinet compare — keys")

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog dialog-wide", id="help") as v:
            v.border_title = self.title_text
            v.border_subtitle = "escape to close"
            yield Static(help_text(self.key_lines, self.tabs, self.about))

    def action_close(self) -> None:
        self.dismiss(None)
