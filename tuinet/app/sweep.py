"""``tuinet sweep`` and ``tuinet attach SWEEP``: a small app that shows the Sweep screen of one sweep folder.

The screen only reads the sweep (:func:`tuinet.sweep.state.read_sweep`) and asks it to stop or promote a trial
(:mod:`tuinet.sweep.control`); whoever runs the sweep goes on whatever happens here. :func:`run_sweep_app` is what
the command line calls; Enter on a running trial leaves the screen for the app on that trial (as `tuinet attach`)
and comes back to it when that viewer closes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from textual import on
from textual.app import App, SystemCommand
from textual.screen import Screen

from tuinet.app import actions
from tuinet.app.screens.help import HelpScreen
from tuinet.app.screens.sweep import SweepControl, SweepScreen, SweepView
from tuinet.app.standalone import attach_detached, control_socket, palette_commands

if TYPE_CHECKING:
    from tuinet.sweep.state import SweepSnapshot
    from tuinet.training.compare import RunRecord

_APP_CSS = str(Path(__file__).with_name("app.tcss"))

#: what the help screen says the Sweep screen shows
SWEEP_ABOUT = ("Sweep: the trials (state, parameters, best objective, epochs run against the budget, where each "
               "runs), the best trial so far, the validation curves of the top trials (each its own glyph, also in "
               "the table's second column), Optuna's parameter importances and the objective against each "
               "parameter (★ best, ● complete, ◐ running, ○ pruned). The sweep is read again every second.")


class SweepApp(App[int]):
    """The Sweep screen on its own.

    Args:
        folder: the sweep's folder.
        reader: reads a snapshot (default: :func:`tuinet.sweep.state.read_sweep`).
        control: stops and promotes trials (default: :mod:`tuinet.sweep.control`).
        poll: read the sweep once a second (tests of still pictures turn it off).
        stop_sweep: stops the sweep this command started (None: it was started elsewhere, and quitting leaves it
            running); given, ``q`` asks whether to stop it or leave it running.
    """

    CSS_PATH = _APP_CSS
    TITLE = "tuinet sweep"
    ENABLE_COMMAND_PALETTE = True
    ACTIONS: tuple[actions.Action, ...] = actions.SWEEP_APP_ACTIONS
    HELP_ROWS: tuple[actions.HelpRow, ...] = actions.SWEEP_APP_HELP_ROWS
    BINDINGS = actions.bindings(actions.SWEEP_APP_ACTIONS)

    def __init__(self, folder: str | Path, *, reader: Callable[[Path], SweepSnapshot] | None = None,
                 control: SweepControl | None = None, poll: bool = True,
                 stop_sweep: Callable[[], None] | None = None):
        super().__init__()
        self.animation_level = "none"
        self.folder = Path(folder)
        self.reader = reader
        self.control = control
        self.poll = poll
        self.stop_sweep = stop_sweep
        self.attach_to: RunRecord | None = None  # a running trial the user opened: attached once this app exits

    def on_mount(self) -> None:
        self.push_screen(SweepScreen(self.folder, reader=self.reader, control=self.control, poll=self.poll))

    @property
    def view(self) -> SweepView:
        """The Sweep view."""
        return self.screen_stack[1].query_one(SweepView) if len(self.screen_stack) > 1 else \
            self.screen.query_one(SweepView)

    @on(SweepView.OpenTrial)
    def _open_trial(self, event: SweepView.OpenTrial) -> None:
        from tuinet.training.compare import load_run

        trial = self.view.state.trial(event.number)
        if trial is None:
            return
        name = f"trial #{trial.number}"
        if trial.run_dir is None or not Path(trial.run_dir).is_dir():
            where = f" (it runs on {trial.where})" if trial.where and trial.where != "local" else ""
            self.notify(f"{name} has no run folder here yet{where}", title=name, timeout=6)
            return
        record = load_run(trial.run_dir)
        if record.live or trial.state == "running":  # a trial on another node: its mirrored folder is not live here
            if record.live and control_socket(record.path) is not None:
                self.attach_to = record  # run_sweep_app attaches, then comes back here
                self.exit(0)
                return
            where = f"on {trial.where}" if trial.where and trial.where != "local" else "without a control socket here"
            self.notify(f"{name} ({record.name}) is training {where}: its curves and row update on this screen, and "
                        "s stops it, p promotes it", title=name, timeout=8)
            return
        from tuinet.app.screens.run_summary import RunSummaryScreen
        from tuinet.training.curves import CurveReader

        reader = CurveReader(record.metrics_path)
        reader.poll()
        self.push_screen(RunSummaryScreen(record, reader))

    def action_help(self) -> None:
        """Show the keys."""
        table = actions.by_id((*actions.SWEEP_ACTIONS, *self.ACTIONS))
        self.push_screen(HelpScreen(actions.help_lines(self.HELP_ROWS, table), tabs=False, about=SWEEP_ABOUT,
                                    title="tuinet sweep — keys"))

    def action_quit(self) -> None:
        """Quit; for a sweep this command started, ask whether to stop it (running trials save a checkpoint) or leave
        it running in the background."""
        snapshot = self.view.state.snapshot
        if self.stop_sweep is None or (snapshot is not None and not snapshot.live):
            self.exit(0)  # started elsewhere, or over: nothing to stop
            return
        from tuinet.app.screens.dialogs import ConfirmDialog

        def done(stop: bool | None) -> None:
            if stop:
                self.stop_sweep()
            self.exit(0)
        self.push_screen(ConfirmDialog("Quit", "Stop the sweep too? Running trials save a checkpoint and the same "
                                       "command resumes it. Left running, it goes on in the background: `tuinet "
                                       f"attach {self.folder.name}` comes back to it.", yes="Stop the sweep",
                                       no="Leave it running"), done)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The Sweep keys that apply now, this app's, then Textual's own."""
        yield from palette_commands(self, self.view, actions.SWEEP_ACTIONS, self.ACTIONS)
        yield from super().get_system_commands(screen)


def run_sweep_app(folder: str | Path, *, runs_dir: str | Path | None = None,
                  reader: Callable[[Path], SweepSnapshot] | None = None, control: SweepControl | None = None,
                  stop_sweep: Callable[[], None] | None = None) -> int:
    """Show the sweep in ``folder`` on the Sweep screen until the user quits; returns the exit code (0).

    Args:
        folder: the sweep's folder.
        runs_dir: where the trials' run folders are, when not where the snapshot says (a shared path); a trial's
            run folder is looked up there by its name.
        reader, control: as :class:`SweepApp` (defaults: the sweep engine's).
        stop_sweep: stops a sweep that this command started (``q`` asks whether to, or to leave it running); None
            when it was started elsewhere.

    Enter on a running trial with a control socket leaves the Sweep screen for the app on that trial (as `tuinet
    attach`: ``d`` detaches, ``q`` asks whether to stop it); when that viewer closes, the Sweep screen comes back.
    """
    base = reader
    if runs_dir is not None:
        base = _rebased_reader(reader, Path(runs_dir))
    while True:
        app = SweepApp(folder, reader=base, control=control, stop_sweep=stop_sweep)
        code = app.run()
        target = app.attach_to
        if target is None:
            return code if isinstance(code, int) else 0
        sock = control_socket(target.path)
        if sock is not None:
            attach_detached(sock, target.config)


def _rebased_reader(reader: Callable[[Path], SweepSnapshot] | None, runs_dir: Path) -> Callable[[Path], SweepSnapshot]:
    """A reader whose trials' run folders are looked up in ``runs_dir`` by name."""
    import dataclasses

    from tuinet.app.screens.sweep import default_reader

    read = reader or default_reader

    def rebased(folder: Path) -> SweepSnapshot:
        snap = read(folder)
        trials = tuple(t if t.run_dir is None else dataclasses.replace(t, run_dir=runs_dir / Path(t.run_dir).name)
                       for t in snap.trials)
        best = next((t for t in trials if snap.best is not None and t.number == snap.best.number), None)
        return dataclasses.replace(snap, trials=trials, best=best)
    return rebased
