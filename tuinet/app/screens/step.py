"""The Step view: the last step taken with ``n``, in its four stages (forward pass, loss, backpropagation, update).

It shows the newest ``step_detail`` event the app received (a copy the trainer sent: the app never sees the
engine); ``n`` steps again (a count typed first, ``10n``, runs that many), ``space`` resumes training and closes the
view, ``escape`` closes it and stays paused. The keys come from :data:`tuinet.app.actions.STEP_ACTIONS`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from tuinet.app import actions
from tuinet.app.widgets.inspector import WidthText, picture_mode
from tuinet.app.widgets.stepview import TITLES, backward_text, forward_text, loss_text, update_text

if TYPE_CHECKING:
    from tuinet.app.state import RunState

#: how long a typed count waits for its ``n`` (seconds)
COUNT_TIMEOUT = 3.0
STAGES = ("forward", "loss", "backward", "update")


class CountPrefix:
    """The digits typed just before a key, vi-style: ``1``, ``0``, then ``n`` asks for ten steps.

    Digits keep their own meaning (the tab keys still switch tabs); the count only applies to a key that asks for
    it within :data:`COUNT_TIMEOUT` seconds, and any other key forgets it.
    """

    def __init__(self, clock=time.monotonic):
        self._digits = ""
        self._at = 0.0
        self._clock = clock

    def feed(self, character: str | None, key: str) -> None:
        """Note one key press (its character and its Textual key name)."""
        if character is not None and character.isdigit() and len(character) == 1:
            if self._clock() - self._at > COUNT_TIMEOUT:
                self._digits = ""
            self._digits = (self._digits + character).lstrip("0")[:6]
            self._at = self._clock()
        elif key != "n":
            self._digits = ""

    @property
    def pending(self) -> int | None:
        """The count typed so far (None when none, or when it timed out)."""
        if not self._digits or self._clock() - self._at > COUNT_TIMEOUT:
            return None
        return int(self._digits)

    def take(self) -> int:
        """The count typed (1 when none), forgetting it."""
        n = self.pending or 1
        self._digits = ""
        return n


def head_text(st: RunState, count: int | None, waiting: bool) -> Text:
    """The view's top line: which step is shown, and the keys."""
    e = st.step_detail
    if e is None:
        t = Text(" step view ", style="bold reverse")
        t.append("  waiting for the first step…" if waiting else "  press n to take one step")
    else:
        t = Text(f" step {e.get('step'):,} ", style="bold reverse")
        t.append(f" epoch {int(e.get('epoch', 0)) + 1} · batch {e.get('batch_size')}")
        if waiting:
            t.append(" · stepping…", style="bold yellow")
    t.append(f"   n{f' ×{count}' if count else ''} 10n step · space train · esc back", style="dim")
    return t


class StepScreen(Screen):
    """The four stages of the newest step, each in its panel with a one-line caption.

    The app calls :meth:`show` when a ``step_detail`` event (or anything else the view shows) arrived.
    """

    CSS_PATH = str(Path(__file__).parent.parent / "step.tcss")
    BINDINGS = actions.bindings(actions.STEP_ACTIONS)

    def compose(self) -> ComposeResult:
        yield Static(id="step-head")
        with Horizontal(id="step-body"):
            with VerticalScroll(id="stage-forward", classes="stage"):
                yield WidthText(id="text-forward")
            with Vertical(id="step-right"):
                for stage in STAGES[1:]:
                    with VerticalScroll(id=f"stage-{stage}", classes="stage"):
                        yield WidthText(id=f"text-{stage}")
        yield Footer(compact=True)

    _ready = False  # composed and mounted: :meth:`show` may draw

    def on_mount(self) -> None:
        self._ready = True
        for stage in STAGES:
            self.query_one(f"#stage-{stage}").border_title = TITLES[stage]
        self.show(self.app.state, None, "step_detail" in getattr(self.app, "pending", {}))

    def show(self, st: RunState, count: int | None, waiting: bool) -> bool:
        """Draw the newest step of ``st`` (``count``: a count being typed; ``waiting``: a step was asked for);
        False when the screen is not mounted yet (it draws itself then)."""
        if not self._ready:
            return False
        self.query_one("#step-head", Static).update(head_text(st, count, waiting))
        e = st.step_detail
        if e is None:
            for stage in STAGES:
                self.query_one(f"#text-{stage}", WidthText).show(Text("no step yet", style="dim"))
            return True
        mode = picture_mode(self.app.no_color, self.app.console.color_system)
        health = st.health
        builders = {"forward": lambda w: forward_text(e, w, mode), "loss": lambda w: loss_text(e, w),
                    "backward": lambda w: backward_text(e, w, health), "update": lambda w: update_text(e, w)}
        for stage, build in builders.items():
            self.query_one(f"#text-{stage}", WidthText).show(build)
        return True

    def action_close_step_view(self) -> None:
        """Back to the tabs; training stays paused."""
        self.app.pop_screen()

    def action_train(self) -> None:
        """Back to normal training: resume, and close the view."""
        self.app.action_resume()
        self.app.pop_screen()
