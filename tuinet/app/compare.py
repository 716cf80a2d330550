"""``tuinet compare``: a small app that shows only the Compare screen over runs read from their folders.

It reads run folders and never writes them; live runs go on whatever happens here. :func:`run_compare_app` is what
the command line calls.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterable, Sequence

from textual import on
from textual.app import App, SystemCommand
from textual.screen import Screen

from tuinet.app import actions
from tuinet.app.compare_state import CompareState
from tuinet.app.screens.compare import CompareScreen, CompareView
from tuinet.app.screens.help import HelpScreen
from tuinet.training.compare import RunRecord

_APP_CSS = str(Path(__file__).with_name("app.tcss"))


def attach_hint(name: str) -> str:
    """What Enter on a live run says (attaching from inside the Compare screen is not there yet)."""
    return f"{name} is training: attach to it with  tuinet attach {name}  (attaching from here will come later)"


class CompareApp(App[int]):
    """The Compare screen on its own.

    Args:
        records: the runs to show, in this order.
        runs_dir: where they were found (said in the title line).
        charted: the runs to draw at first (default: the first few).
        poll: read live runs once a second (tests of still pictures turn it off).
    """

    CSS_PATH = _APP_CSS
    TITLE = "tuinet compare"
    ENABLE_COMMAND_PALETTE = True
    ACTIONS: tuple[actions.Action, ...] = actions.COMPARE_APP_ACTIONS
    HELP_ROWS: tuple[actions.HelpRow, ...] = actions.COMPARE_APP_HELP_ROWS
    BINDINGS = actions.bindings(actions.COMPARE_APP_ACTIONS)

    def __init__(self, records: Sequence[RunRecord], runs_dir: str | Path | None = None, *,
                 charted: Iterable[str] | None = None, poll: bool = True):
        super().__init__()
        self.animation_level = "none"
        self.state = CompareState(records, charted=charted)
        self.runs_dir = runs_dir
        self.poll = poll

    def title_line(self) -> str:
        """Where the runs come from."""
        where = f" in {self.runs_dir}" if self.runs_dir else ""
        return f"{len(self.state.records)} runs{where}"

    def on_mount(self) -> None:
        self.push_screen(CompareScreen(self.state, self.title_line(), poll=self.poll))

    @property
    def view(self) -> CompareView:
        """The Compare view."""
        return self.screen_stack[1].query_one(CompareView) if len(self.screen_stack) > 1 else \
            self.screen.query_one(CompareView)

    @on(CompareView.OpenLive)
    def _open_live(self, event: CompareView.OpenLive) -> None:
        self.notify(attach_hint(event.name), title="live run", timeout=10)

    def action_help(self) -> None:
        """Show the keys."""
        table = actions.by_id((*actions.COMPARE_ACTIONS, *self.ACTIONS))
        self.push_screen(HelpScreen(actions.help_lines(self.HELP_ROWS, table), tabs=False))

    def action_quit(self) -> None:
        """Quit."""
        self.exit(0)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The Compare keys that apply now, this app's, then Textual's own."""
        view = self.view
        for entry in actions.COMPARE_ACTIONS:
            if view.check_action(entry.name, entry.params):
                yield SystemCommand(entry.title, entry.palette_help,
                                    functools.partial(getattr(view, f"action_{entry.name}"), *entry.params))
        for entry in self.ACTIONS:
            yield SystemCommand(entry.title, entry.palette_help, getattr(self, f"action_{entry.name}"))
        yield from super().get_system_commands(screen)


def run_compare_app(records: Sequence[RunRecord], runs_dir: str | Path | None = None) -> int:
    """Show ``records`` on the Compare screen until the user quits; returns the exit code (0)."""
    app = CompareApp(records, runs_dir)
    code = app.run()
    return code if isinstance(code, int) else 0
