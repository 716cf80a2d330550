"""The Sweep screen: the summary line, the overlaid curves of the top trials next to the best trial, the trials
table next to the parameters panel (Optuna's importances and the objective against each parameter).

:class:`SweepView` is the whole of it as one widget; :class:`SweepScreen` puts it under a title line and above the
footer for :mod:`tuinet.app.sweep`. Its keys come from :data:`tuinet.app.actions.SWEEP_ACTIONS` and apply while the
focus is inside it (the trials table has it).

The sweep is read once a second by a worker thread (:func:`tuinet.sweep.state.read_sweep` may read a whole study
journal: never in the UI thread), which posts each snapshot to the view; the curves of the charted trials are read
incrementally when a snapshot arrives, as the Compare screen reads live runs. Stop and promote go through
:mod:`tuinet.sweep.control`, also from a worker thread. Enter posts :class:`SweepView.OpenTrial`: the app attaches to
a running trial or opens a finished one's summary.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

from tuinet.app import actions
from tuinet.app.sweep_state import OBJECTIVE_CHARTS, SweepState, objective_name, read_space
from tuinet.app.widgets.best_trial import best_text
from tuinet.app.widgets.charts import LineChart
from tuinet.app.widgets.overlay_chart import chart_title, legend_text, overlay_data
from tuinet.app.widgets.param_scatter import ParamsPanel
from tuinet.app.widgets.trials_table import TrialsTable
from tuinet.errors import TuinetError

if TYPE_CHECKING:
    from tuinet.sweep.state import SweepSnapshot

#: how often the sweep is read (seconds)
POLL_SECONDS = 1.0


class SweepControl(Protocol):
    """What the screen asks of the sweep (:mod:`tuinet.sweep.control` is one; tests pass a recorder)."""

    def stop_trial(self, folder: Path, number: int) -> None:
        """Stop (prune) a running trial."""

    def promote_trial(self, folder: Path, number: int) -> None:
        """Let a running trial go on past its budget."""


def default_reader(folder: Path) -> SweepSnapshot:
    """The sweep engine's reader."""
    from tuinet.sweep.state import read_sweep

    return read_sweep(folder)


def default_control() -> SweepControl:
    """The sweep engine's control module."""
    from tuinet.sweep import control

    return control  # type: ignore[return-value]


def read_error(folder: Path, err: Exception) -> str:
    """What the screen says when the sweep cannot be read."""
    if isinstance(err, TuinetError):
        return str(err)
    if isinstance(err, OSError):
        return f"cannot read the sweep in {folder}: {err.strerror or err}"
    return f"cannot read the sweep in {folder}: {type(err).__name__}: {err}"


class SweepView(Vertical):
    """Summary, chart, best trial, trials table and parameters panel of one sweep folder.

    Args:
        folder: the sweep's folder.
        reader: reads a snapshot of the sweep (default: :func:`tuinet.sweep.state.read_sweep`).
        control: stops and promotes trials (default: :mod:`tuinet.sweep.control`).
        poll: read the sweep once a second (False: once, for still pictures).
    """

    BINDINGS = actions.bindings(actions.SWEEP_ACTIONS)

    class Read(Message):
        """A snapshot read by the worker thread (with the searched space, once known), or why it could not be
        read."""

        def __init__(self, snapshot: SweepSnapshot | None, error: str | None, space: dict | None = None):
            super().__init__()
            self.snapshot = snapshot
            self.error = error
            self.space = space

    class OpenTrial(Message):
        """Enter on a trial: the app attaches to it or opens its summary."""

        def __init__(self, number: int):
            super().__init__()
            self.number = number

    def __init__(self, folder: Path, *, reader: Callable[[Path], SweepSnapshot] | None = None,
                 control: SweepControl | None = None, poll: bool = True, id: str | None = None):
        super().__init__(id=id)
        self.state = SweepState(folder)
        self.reader = reader or default_reader
        self.control = control
        self.poll_enabled = poll
        self.compact = False
        self.show_params: bool | None = None  # None: shown when there is room
        self.reads = 0  # snapshots (or errors) received
        self._drawn: tuple | None = None
        self._rows_drawn: tuple | None = None
        self._stop = threading.Event()
        self._ready = False

    def compose(self) -> ComposeResult:
        yield Static(id="sw-summary")
        yield Static(id="sw-message")
        with Horizontal(id="sw-top"):
            yield LineChart(id="sw-chart")
            yield Static(id="sw-best")
        yield Static(id="sw-legend")
        with Horizontal(id="sw-bottom"):
            yield TrialsTable(id="sw-table")
            with VerticalScroll(id="sw-params-box"):
                yield ParamsPanel(id="sw-params")

    def on_mount(self) -> None:
        self.summary = self.query_one("#sw-summary", Static)
        self.message = self.query_one("#sw-message", Static)
        self.chart = self.query_one("#sw-chart", LineChart)
        self.best = self.query_one("#sw-best", Static)
        self.legend = self.query_one("#sw-legend", Static)
        self.table = self.query_one(TrialsTable)
        self.params_box = self.query_one("#sw-params-box", VerticalScroll)
        self.params = self.query_one(ParamsPanel)
        self.best.border_title = "best trial"
        self.params_box.border_title = "parameters"
        self._ready = True
        self.adapt(self.app.size.width, self.app.size.height)
        self.redraw(force=True)
        self._read_loop()

    def on_unmount(self) -> None:
        self._stop.set()

    # --- reading -----------------------------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="sweep-read", exit_on_error=False)
    def _read_loop(self) -> None:
        """Read the sweep now and then once a second (while polling) and post what was read."""
        worker = get_current_worker()
        folder = self.state.folder
        space: dict = {}
        while not worker.is_cancelled and not self._stop.is_set():
            try:
                snapshot, error = self.reader(folder), None
                if not space:
                    space = read_space(folder)  # written once, before the first trial
            except Exception as e:  # noqa: BLE001 - whatever stops the reading is said on the screen, not raised
                snapshot, error = None, read_error(folder, e)
            self.post_message(self.Read(snapshot, error, space))
            if not self.poll_enabled or self._stop.wait(POLL_SECONDS):
                return

    @on(Read)
    def _read(self, event: Read) -> None:
        event.stop()
        self.reads += 1
        st = self.state
        changed = bool(event.space) and not st.space
        if changed:
            st.space = event.space
            st.version += 1
            st.rows_version += 1
        if event.snapshot is not None:
            changed = st.update(event.snapshot) or changed
            try:
                changed = st.curves.poll() or changed
            except OSError:
                pass  # a run folder that vanished: its curve stays as it was
        else:
            changed = st.fail(event.error or "unknown error") or changed
        if changed:
            self.redraw()

    # --- layout and drawing ------------------------------------------------------------------------------------------

    def adapt(self, width: int, height: int) -> None:
        """Compact below 100 columns or 32 rows: no borders on the chart, fewer columns, the parameters panel behind
        its key (in the table's place)."""
        compact = width < 100 or height < 32
        changed = compact != self.compact
        self.compact = compact
        self.set_class(compact, "-compact")
        self._apply_params_class()
        if changed and self._ready:
            self.redraw(force=True)

    def _params_shown(self) -> bool:
        return (not self.compact) if self.show_params is None else self.show_params

    def _apply_params_class(self) -> None:
        self.set_class(self._params_shown(), "-params")

    def redraw(self, force: bool = False) -> None:
        """Redraw what changed since the last redraw."""
        if not self._ready:
            return
        st = self.state
        self.set_class(st.snapshot is None, "-empty")
        self.summary.update(self.summary_text())
        self.message.update(self.message_text())
        self.message.display = bool(self.message_text().plain)
        if st.snapshot is None:
            return
        table = self.table
        rows_key = (st.rows_version, st.sort_key, st.descending, self.compact)
        table.compact = self.compact
        if force or rows_key != self._rows_drawn or table.order != [t.number for t in st.rows()]:
            table.show(st)  # new trials or columns, another sort, or values that moved a trial in the sort
            self._rows_drawn = rows_key
            self.app.refresh_bindings()  # keys on a row apply once there are rows
        else:
            table.update_cells(st)
        drawn = (st.version, st.curves.version, self.compact)
        if force or drawn != self._drawn:
            self._drawn = drawn
            metric = OBJECTIVE_CHARTS.get(st.objective, "loss")
            data = overlay_data(st.curves, metric)
            if not st.curves.charted():
                data.empty = "no trial has a curve yet"
            self.chart.log_y = st.curves.log_y and metric == "loss"
            self.chart.set_data(data)
            self.chart.border_title = f"top {len(st.curves.charted()) or ''} trials · {chart_title(st.curves, metric)}"
            self.legend.update(self.legend_text())
            self.best.update(best_text(st, self.compact))
            self.best.border_title = f"best trial · {'lowest' if st.minimize else 'highest'} " \
                                     f"{objective_name(st.objective)}"
            self.params.show(st)

    def summary_text(self) -> Text:
        """The line above everything: trials by state, epochs run and saved, the objective."""
        st = self.state
        t = Text(no_wrap=True, overflow="ellipsis")
        snap = st.snapshot
        if snap is None:
            t.append(f"{st.folder}", style="dim")
            return t
        t.append(st.summary(self.compact))
        if not snap.live:
            t.append(" · not running", style="dim")
        return t

    def message_text(self) -> Text:
        """A read error, or why there is nothing to show yet (empty: nothing to say)."""
        st = self.state
        t = Text()
        if st.error:
            t.append("✗ ", style="bold red")
            t.append(st.error)
            if st.snapshot is not None:
                t.append(" (showing the last snapshot read)", style="dim")
            else:
                t.append(f"\nread again every {POLL_SECONDS:g} s" if self.poll_enabled else "", style="dim")
        elif st.snapshot is None:
            t.append(f"reading the sweep in {st.folder}…", style="dim")
        elif not st.trials:
            t.append("no trials yet: the sweep starts them as workers are free", style="dim")
        return t

    def legend_text(self) -> Text:
        """Each charted trial's glyph and number (the table's second column shows the same glyph)."""
        t = legend_text(self.state.curves, 6)
        if not self.state.curves.charted():
            t = Text("no trial in the chart yet: the best trials with a run folder go in", style="dim")
        return t

    # --- keys --------------------------------------------------------------------------------------------------------

    def highlighted_trial(self):
        """The highlighted trial (None with no rows)."""
        number = self.table.highlighted if self._ready else None
        return self.state.trial(number) if number is not None else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys on a trial grey out without one (stop and promote: without a running one)."""
        table = actions.by_call(actions.SWEEP_ACTIONS)
        entry = table.get((action, parameters))
        if entry is None:
            return True
        if entry.when is actions.When.TRIAL:
            return self.highlighted_trial() is not None
        if entry.when is actions.When.TRIAL_RUNNING:
            trial = self.highlighted_trial()
            return True if trial is not None and trial.state == "running" else None  # None: shown greyed out
        if action == "sweep_log":
            return self.state.objective == "val_loss"
        return True

    def _say(self, text: str, severity: str = "information") -> None:
        self.app.notify(text, severity=severity, timeout=5)

    def action_open_trial(self) -> None:
        """Attach to the highlighted trial, or open its summary (the app decides)."""
        trial = self.highlighted_trial()
        if trial is not None:
            self.post_message(self.OpenTrial(trial.number))

    def action_draw_trials(self) -> None:
        """Draw a digit and see how each charted trial reads it (its saved weights)."""
        from tuinet.app.screens.draw_runs import DrawnRun, DrawRunsScreen

        curves = self.state.curves
        runs = [DrawnRun(r.name, Path(r.path), curves.style(r.name), r.dataset) for r in curves.charted()
                if Path(r.path).is_dir()]
        if not runs:
            self._say("no charted trial has a run folder here to read weights from", "warning")
            return
        self.app.push_screen(DrawRunsScreen(runs))

    def action_stop_trial(self) -> None:
        """Stop (prune) the highlighted running trial, after a yes."""
        trial = self.highlighted_trial()
        if trial is None or trial.state != "running":
            return
        from tuinet.app.screens.dialogs import ConfirmDialog

        number = trial.number

        def done(yes: bool | None) -> None:
            if yes:
                self._control("stop_trial", number)
        self.app.push_screen(ConfirmDialog(f"Stop trial #{number}", f"Stop trial #{number} now? Its checkpoint is "
                                           "saved and it counts as pruned; the sweep starts the next trial.",
                                           yes="Stop it"), done)

    def action_promote_trial(self) -> None:
        """Let the highlighted running trial go on past its budget."""
        trial = self.highlighted_trial()
        if trial is not None and trial.state == "running":
            self._control("promote_trial", trial.number)

    @work(thread=True, group="sweep-control", exit_on_error=False)
    def _control(self, what: str, number: int) -> None:
        """Send stop / promote for trial ``number`` (a worker thread: it may wait on a file lock or a socket)."""
        control = self.control or default_control()
        try:
            getattr(control, what)(self.state.folder, number)
        except (TuinetError, OSError) as e:
            self.app.call_from_thread(self._say, f"trial #{number}: {e}", "error")
            return
        done = {"stop_trial": f"trial #{number} is stopping (pruned; its checkpoint is saved)",
                "promote_trial": f"trial #{number} promoted: it goes on past its epoch budget"}[what]
        self.app.call_from_thread(self._say, done)

    def action_sort_trials(self) -> None:
        """Sort by the next column."""
        self.state.next_sort()
        self.redraw()

    def action_reverse_trials(self) -> None:
        """Reverse the table's order."""
        self.state.reverse()
        self.redraw()

    def action_toggle_params(self) -> None:
        """Show / hide the parameters panel (at 80x24 it takes the table's place, and the focus with it)."""
        self.show_params = not self._params_shown()
        self._apply_params_class()
        self.focus_main()

    def action_sweep_log(self) -> None:
        """Loss chart log / linear."""
        self.state.curves.toggle_log()
        self.redraw()

    def focus_main(self) -> None:
        """Focus the trials table, or the parameters panel while it stands in the table's place."""
        instead = self.compact and self._params_shown()
        self.screen.set_focus(self.params_box if instead else self.table)

    # --- events ------------------------------------------------------------------------------------------------------

    @on(DataTable.HeaderSelected, "#sw-table")
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.state.sort_by(str(event.column_key.value))
        self.redraw()

    @on(DataTable.RowHighlighted, "#sw-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.app.refresh_bindings()  # stop / promote apply to a running trial only


class SweepScreen(Screen):
    """The Sweep view alone, under a title line and above the footer (the screen of ``tuinet sweep``)."""

    def __init__(self, folder: Path, *, reader: Callable[[Path], SweepSnapshot] | None = None,
                 control: SweepControl | None = None, poll: bool = True):
        super().__init__()
        self.folder = Path(folder)
        self.view_args = {"reader": reader, "control": control, "poll": poll}

    def compose(self) -> ComposeResult:
        where = "" if str(self.folder) == self.folder.name else str(self.folder)  # the folder, unless it is the name
        yield Static(Text.assemble((" tuinet sweep ", "bold reverse"), "  ", (self.folder.name, "bold"), "  ",
                                   (where, "dim")), id="topbar")
        yield SweepView(self.folder, id="sweep-view", **self.view_args)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(SweepView).focus_main()

    def on_resize(self, event) -> None:
        self.query_one(SweepView).adapt(event.size.width, event.size.height)
        self.query_one(Footer).show_command_palette = event.size.width >= 100
