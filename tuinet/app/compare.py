"""``tuinet compare``: a small app that shows only the Compare screen over runs read from their folders.

It reads run folders and never writes them; live runs go on whatever happens here. :func:`run_compare_app` is what
the command line calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

from textual import on
from textual.app import App, SystemCommand
from textual.screen import Screen

from tuinet.formatting import count
from tuinet.app import actions
from tuinet.app.compare_state import CompareState
from tuinet.app.screens.compare import CompareScreen, CompareView
from tuinet.app.screens.help import HelpScreen
from tuinet.app.screens.lesson import LessonResultScreen
from tuinet.app.standalone import attach_detached, control_socket, palette_commands
from tuinet.training.compare import RunRecord

_APP_CSS = str(Path(__file__).with_name("app.tcss"))


def attach_hint(name: str) -> str:
    """What Enter on a live run says where the app cannot attach to it itself (the training app's compare tab, or
    a run trained in the foreground of another terminal, which has no control socket)."""
    return f"{name} is training: attach to it with  tuinet attach {name}"


class CompareApp(App[int]):
    """The Compare screen on its own.

    Args:
        records: the runs to show, in this order.
        runs_dir: where they were found (said in the title line).
        charted: the runs to draw at first (default: the first few).
        poll: read live runs once a second (tests of still pictures turn it off).
        lesson: for ``tuinet learn``: (title, caption, result) -- the title line, what to look for (shown at the
            start), and a function that returns what the runs measured once they are done (None before), shown then.
        note: a line shown above the runs (why this page is shown; None: no line).
    """

    CSS_PATH = _APP_CSS
    TITLE = "tuinet compare"
    ENABLE_COMMAND_PALETTE = True
    ACTIONS: tuple[actions.Action, ...] = actions.COMPARE_APP_ACTIONS
    HELP_ROWS: tuple[actions.HelpRow, ...] = actions.COMPARE_APP_HELP_ROWS
    BINDINGS = actions.bindings(actions.COMPARE_APP_ACTIONS)

    def __init__(self, records: Sequence[RunRecord], runs_dir: str | Path | None = None, *,
                 charted: Iterable[str] | None = None, poll: bool = True, note: str | None = None,
                 lesson: tuple[str, str, Callable[[], str | None]] | None = None):
        super().__init__()
        self.note = note
        self.lesson = lesson
        self.lesson_result: str | None = None  # the measured result, once the lesson's runs are done
        self.animation_level = "none"
        self.state = CompareState(records, charted=charted)
        self.runs_dir = runs_dir
        self.poll = poll
        self.attach_to: RunRecord | None = None  # a live detached run the user opened: attached once this app exits
        self.charted_names: list[str] = []  # the runs in the chart when the app exited (kept after an attach)

    def title_line(self) -> str:
        """Where the runs come from."""
        if self.lesson is not None:
            return self.lesson[0]
        where = f" in {self.runs_dir}" if self.runs_dir else ""
        return f"{count(len(self.state.records), 'run')}{where}"

    def on_mount(self) -> None:
        self.push_screen(CompareScreen(self.state, self.title_line(), poll=self.poll, note=self.note))
        if self.lesson is not None:
            self.notify(self.lesson[1], title="what to look for", timeout=60)
            self._lesson_timer = self.set_interval(1.0, self._check_lesson)

    def _check_lesson(self) -> None:
        """Once every run of the lesson is done: what they measured, until the user closes it."""
        text = self.lesson[2]()
        if text is not None:
            self._lesson_timer.stop()
            self.lesson_result = text
            self.push_screen(LessonResultScreen(f"{self.lesson[0]}: what happened", text))

    @property
    def view(self) -> CompareView:
        """The Compare view."""
        return self.screen_stack[1].query_one(CompareView) if len(self.screen_stack) > 1 else \
            self.screen.query_one(CompareView)

    @on(CompareView.OpenLive)
    def _open_live(self, event: CompareView.OpenLive) -> None:
        record = self.state.record(event.name)
        if record is not None and detached_socket(record) is not None:
            self.attach_to = record  # run_compare_app attaches, then comes back here
            self.charted_names = [r.name for r in self.state.charted()]
            self.exit(0)
            return
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
        yield from palette_commands(self, self.view, actions.COMPARE_ACTIONS, self.ACTIONS)
        yield from super().get_system_commands(screen)


def detached_socket(record: RunRecord) -> str | None:
    """The control socket of a live detached run (None for a finished run or one trained in the foreground)."""
    return control_socket(record.path) if record.live else None


def run_compare_app(records: Sequence[RunRecord], runs_dir: str | Path | None = None, *, note: str | None = None,
                    until: Callable[[], bool] | None = None,
                    lesson: tuple[str, str, Callable[[], str | None]] | None = None) -> int:
    """Show ``records`` on the Compare screen until the user quits; returns the exit code (0).

    Enter on a live detached run leaves the Compare screen for the app on that run (as `tuinet attach`: ``d``
    detaches, ``q`` asks whether to stop it); when that viewer closes, the Compare screen comes back with the runs
    read again, unless ``until()`` says to stop (a browser page that is gone). ``note`` is a line shown above the
    runs."""
    from tuinet.training.compare import load_run

    charted: list[str] | None = None
    while True:
        app = CompareApp(records, runs_dir, charted=charted, note=note, lesson=lesson)
        code = app.run()
        target = app.attach_to
        if target is None or (until is not None and until()):
            return code if isinstance(code, int) else 0
        sock = detached_socket(target)
        if sock is not None:
            attach_detached(sock, target.config)  # it may have ended in between: the Compare screen says how
        if until is not None and until():
            return 0
        records = [load_run(r.path) for r in records]
        charted = app.charted_names
