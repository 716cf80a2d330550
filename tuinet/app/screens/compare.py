"""The Compare screen: overlaid curves of the runs in the chart, the runs table, the settings that differ.

:class:`CompareView` is the whole of it as one widget, so it serves both the screen of ``tuinet compare``
(:class:`CompareScreen`, in :mod:`tuinet.app.compare`) and the training app's compare tab. Its keys come from
:data:`tuinet.app.actions.COMPARE_ACTIONS` and apply while the focus is inside it (the runs table has it).

Live runs stay current: once a second the view polls the curve readers of the charted and live runs (each reads
only what was appended since the last poll) and rewrites the rows that changed. Enter on a finished run opens its
summary; on a live one the view posts :class:`CompareView.OpenLive`: ``tuinet compare`` attaches to a detached run
(:func:`tuinet.app.compare.run_compare_app`), otherwise the app says how to attach.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from tuinet.formatting import count
from tuinet.app import actions
from tuinet.app.compare_state import SPLIT_NAMES, X_NAMES, CompareState
from tuinet.app.widgets.charts import LineChart
from tuinet.app.widgets.overlay_chart import chart_title, legend_text, overlay_data
from tuinet.app.widgets.runs_table import RunsTable
from tuinet.app.widgets.settings_diff import SettingsDiff
from tuinet.errors import ConfigError
from tuinet.training.compare import COLUMNS

#: how often live runs are read (seconds)
POLL_SECONDS = 1.0


class FilterInput(Input):
    """The filter line: enter applies it, escape closes it unchanged."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]

    class Cancelled(Message):
        """Escape: close the filter line without applying it."""

    def action_cancel(self) -> None:
        self.post_message(self.Cancelled())


class CompareView(Vertical):
    """Charts, legend, runs table, settings diff and the filter line of one :class:`CompareState`.

    Args:
        state: what to show (None: nothing yet; :meth:`set_state` gives it later, as the app's tab does).
        poll: read live runs once a second while :attr:`active`.
    """

    BINDINGS = actions.bindings(actions.COMPARE_ACTIONS)

    class OpenLive(Message):
        """Enter on a live run: the app attaches to it (or says how)."""

        def __init__(self, name: str):
            super().__init__()
            self.name = name

    def __init__(self, state: CompareState | None = None, *, poll: bool = True, id: str | None = None):
        super().__init__(id=id)
        self.state = state
        self.poll_enabled = poll
        self.active = True  # the app's tab sets this False while another tab is shown
        self.compact = False
        self.show_diff: bool | None = None  # None: shown when there is room
        self._drawn: tuple | None = None
        self._rows_drawn: tuple | None = None
        self._ready = False
        self.polls = 0

    def compose(self) -> ComposeResult:
        with Horizontal(id="cmp-charts"):
            yield LineChart(id="cmp-loss")
            yield LineChart(id="cmp-acc")
        yield Static(id="cmp-legend")
        yield Static(id="cmp-info")
        yield RunsTable(id="cmp-table")
        yield SettingsDiff(id="cmp-diff")
        yield FilterInput(placeholder="e.g. dataset=mnist, lr<0.01, model~cnn, status=finished (empty: all runs)",
                          id="cmp-filter")
        yield Static(id="cmp-filter-error")

    def on_mount(self) -> None:
        self.loss_chart = self.query_one("#cmp-loss", LineChart)
        self.acc_chart = self.query_one("#cmp-acc", LineChart)
        self.legend = self.query_one("#cmp-legend", Static)
        self.info = self.query_one("#cmp-info", Static)
        self.table = self.query_one(RunsTable)
        self.diff = self.query_one(SettingsDiff)
        self.filter_input = self.query_one(FilterInput)
        self.filter_error = self.query_one("#cmp-filter-error", Static)
        self.filter_input.display = False
        self.filter_error.display = False
        self.diff.border_title = "settings that differ"
        self._ready = True
        self.adapt(self.app.size.width, self.app.size.height)
        if self.poll_enabled:
            self.set_interval(POLL_SECONDS, self.poll, name="compare-poll")
        if self.state is not None:
            self.redraw(force=True)

    # --- layout and drawing ---------------------------------------------------------------------------------------

    def adapt(self, width: int, height: int) -> None:
        """Compact below 100 columns or 32 rows: no borders, fewer table columns, the diff behind its key."""
        compact = width < 100 or height < 32
        changed = compact != self.compact
        self.compact = compact
        self.set_class(compact, "-compact")
        self._apply_diff_class()
        if changed and self.state is not None and self._ready:
            self.table.compact = compact
            self.redraw(force=True)
            if self.screen.focused in (self.table, self.diff):
                self.focus_main()

    def _diff_shown(self) -> bool:
        return (not self.compact) if self.show_diff is None else self.show_diff

    def _apply_diff_class(self) -> None:
        self.set_class(self._diff_shown(), "-diff")

    def set_state(self, state: CompareState) -> None:
        """Show ``state`` (a freshly loaded runs folder)."""
        self.state = state
        self.redraw(force=True)

    def redraw(self, force: bool = False) -> None:
        """Redraw what changed in the state since the last redraw."""
        st = self.state
        if st is None or not self._ready:
            return
        table = self.table
        table.compact = self.compact
        rows_key = (st.rows_version, st.sort_key, st.descending, st.filter_text, self.compact)
        if force or rows_key != self._rows_drawn:
            table.show(st)
            self._rows_drawn = rows_key
            self.refresh_bindings()  # keys on a row apply once there are rows
        elif st.changed_rows:
            table.update_rows(st)
        drawn = (st.version, self.compact)
        if force or drawn != self._drawn:
            self._drawn = drawn
            self.loss_chart.log_y = st.log_y
            self.loss_chart.set_data(overlay_data(st, "loss"))
            self.acc_chart.set_data(overlay_data(st, "accuracy"))
            self.loss_chart.border_title = chart_title(st, "loss")
            self.acc_chart.border_title = chart_title(st, "accuracy")
            self.legend.update(legend_text(st, 20 if self.compact else 30))
            self.diff.show(st)
        self.info.update(self.info_text())

    def info_text(self) -> Text:
        """The line above the table: how many runs, what the charts show, sort and filter."""
        st = self.state
        shown = len(st.visible())
        t = Text(no_wrap=True, overflow="ellipsis", style="dim")
        t.append(f"{shown} of {count(len(st.records), 'run')}" if st.filter_text else count(len(st.records), "run"))
        t.append(f" · {len(st.charted())} in the chart · x: {X_NAMES[st.x_axis]}")
        if not self.compact:
            t.append(f" · curves: {SPLIT_NAMES[st.split]} · smoothing {'on' if st.smooth else 'off'}")
        if st.sort_key:
            t.append(f" · sort: {COLUMNS[st.sort_key][0]} {'▼' if st.descending else '▲'}")
        if st.filter_text:
            t.append(" · filter: ")
            t.append(st.filter_text, style="bold")
        return t

    def poll(self) -> None:
        """Read what live and charted runs appended; redraw what changed (skipped while the tab is hidden)."""
        if self.state is None or not self.active or not self._ready:
            return
        self.polls += 1
        if self.state.poll():
            self.redraw()

    # --- keys --------------------------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys on a row grey out without rows; nothing applies before the runs are loaded."""
        if action in {a.name for a in actions.COMPARE_ACTIONS}:
            if self.state is None:
                return False
            if action in ("toggle_run", "open_run"):
                return self.table.highlighted is not None
        return True

    def _say(self, text: str, severity: str = "information") -> None:
        self.app.notify(text, severity=severity, timeout=4)

    def action_toggle_run(self) -> None:
        """Put the highlighted run in the chart or take it out."""
        name = self.table.highlighted
        if name is None:
            return
        why = self.state.toggle(name)
        if why:
            self._say(why, "warning")
        self.redraw()

    def action_toggle_all(self) -> None:
        """Every shown run in / out of the chart."""
        note = self.state.toggle_all()
        if note:
            self._say(note)
        self.redraw()

    def action_open_run(self) -> None:
        """A finished run's summary; for a live one, ask the app to attach."""
        name = self.table.highlighted
        rec = self.state.record(name) if name else None
        if rec is None:
            return
        if rec.status in ("live", "paused"):
            self.post_message(self.OpenLive(name))
            return
        from tuinet.app.screens.run_summary import RunSummaryScreen

        self.app.push_screen(RunSummaryScreen(rec, self.state.reader(name)))

    def action_branch_run(self) -> None:
        """Branch the highlighted run: ask for the options, then start the branch as a detached run and add it."""
        name = self.table.highlighted
        rec = self.state.record(name) if name else None
        if rec is None:
            return
        from tuinet.app.screens.dialogs import BranchDialog

        done_, planned = rec.epochs_done or 0, rec.epochs_planned or 0
        epochs = planned if done_ < planned else max(2 * done_, done_ + 1)  # a finished run needs more epochs
        # no --lr: the branch goes on at the lr the run had reached (changed live, lowered by rollbacks), as
        # `tuinet train --from` does; the configured lr would undo those
        suggestion = f"--from {rec.name} --name {rec.name}-branch --epochs {epochs}"

        def done(options: str | None) -> None:
            if options:
                self._start_branch(rec, options)
        self.app.push_screen(BranchDialog(rec.name, suggestion), done)

    @work(thread=True, exclusive=True, group="branch", exit_on_error=False)
    def _start_branch(self, rec, options: str) -> None:
        """Run `tuinet train --detach` with ``options`` in the parent's runs folder (a worker thread: it loads data)."""
        import shlex
        import subprocess
        import sys

        from tuinet.training.compare import load_run

        runs_dir = Path(rec.path).parent
        try:
            args = shlex.split(options)
        except ValueError as e:
            self.app.call_from_thread(self._say, f"branch not started: {e}", "error")
            return
        r = subprocess.run([sys.executable, "-m", "tuinet.cli", "train", "--detach", "--runs-dir", str(runs_dir),
                            *args], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            lines = [line for line in r.stderr.splitlines() if line.strip()] or ["it exited with code "
                                                                                 f"{r.returncode}"]
            self.app.call_from_thread(self._say, f"branch not started: {lines[-1]}", "error")
            return
        first = r.stdout.split()
        new = first[1] if len(first) > 1 and first[0] == "run" else None
        if new is None or not (runs_dir / new).is_dir():
            self.app.call_from_thread(self._say, "branch started, but its run folder was not found", "warning")
            return
        record = load_run(runs_dir / new)

        def show() -> None:
            self.state.add(record)
            self.redraw()
            self._say(f"branch {new} started in the background (tuinet attach {new})")
        self.app.call_from_thread(show)

    def action_draw_runs(self) -> None:
        """Draw a digit and see how each charted run reads it (its saved weights)."""
        from tuinet.app.screens.draw_runs import DrawnRun, DrawRunsScreen

        runs = [DrawnRun(r.name, Path(r.path), self.state.style(r.name), r.dataset) for r in self.state.charted()]
        if not runs:
            self._say("put runs in the chart first (space on a run)", "warning")
            return
        self.app.push_screen(DrawRunsScreen(runs))

    def action_cycle_x(self) -> None:
        """Next x axis."""
        self.state.cycle_x()
        self.redraw()

    def action_cycle_split(self) -> None:
        """Validation → train → both."""
        self.state.cycle_split()
        self.redraw()

    def action_toggle_smooth(self) -> None:
        """Smoothing on / off."""
        self.state.toggle_smooth()
        self.redraw()

    def action_compare_log(self) -> None:
        """Loss chart log / linear."""
        self.state.toggle_log()
        self.redraw()

    def action_next_sort(self) -> None:
        """Sort by the next column."""
        self.state.next_sort()
        self.redraw()

    def action_reverse_sort(self) -> None:
        """Reverse the table's order."""
        self.state.reverse()
        self.redraw()

    def action_toggle_diff(self) -> None:
        """Show / hide the settings diff (at 80x24 it takes the table's place, and the focus with it)."""
        self.show_diff = not self._diff_shown()
        self._apply_diff_class()
        self.diff.show(self.state)
        self.focus_main()

    def focus_main(self) -> None:
        """Focus the runs table, or the diff while it stands in the table's place (the keys stay with the view)."""
        if not self.active:
            return  # a hidden tab: focus there would bring it back
        instead = self.compact and self._diff_shown()
        self.diff.can_focus = instead
        self.screen.set_focus(self.diff if instead else self.table)

    def action_filter_runs(self) -> None:
        """Open the filter line (it starts with the current filter)."""
        inp = self.filter_input
        inp.value = self.state.filter_text
        inp.display = True
        self.screen.set_focus(inp)  # at once, not after the keys already queued: they are typed into the filter
        inp.cursor_position = len(inp.value)

    # --- events ------------------------------------------------------------------------------------------------------

    @on(Input.Submitted, "#cmp-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            self.state.set_filter(event.value)
        except ConfigError as e:
            self.filter_error.update(Text(f"✗ {e}", style="bold red"))
            self.filter_error.display = True
            return
        self._close_filter()
        self.redraw()

    @on(FilterInput.Cancelled)
    def _filter_cancelled(self, event: FilterInput.Cancelled) -> None:
        event.stop()
        self._close_filter()

    def _close_filter(self) -> None:
        self.filter_input.display = False
        self.filter_error.display = False
        self.focus_main()

    @on(DataTable.HeaderSelected, "#cmp-table")
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        key = str(event.column_key.value)
        if key in COLUMNS:
            self.state.sort_by(key)
            self.redraw()

    @on(DataTable.RowHighlighted, "#cmp-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.app.refresh_bindings()  # toggle / open apply now


class CompareScreen(Screen):
    """The Compare view alone, under a title line (and an optional note) and above the footer (the screen of
    ``tuinet compare``, and of a browser page with no live run to show)."""

    def __init__(self, state: CompareState, title: str, poll: bool = True, note: str | None = None):
        super().__init__()
        self.state = state
        self.title_text = title
        self.poll = poll
        self.note = note

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble((" tuinet compare ", "bold reverse"), "  ", self.title_text), id="topbar")
        if self.note:
            yield Static(self.note, id="page-note", markup=False)
        yield CompareView(self.state, poll=self.poll, id="compare-view")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(CompareView).focus_main()

    def on_resize(self, event) -> None:
        view = self.query_one(CompareView)
        view.adapt(event.size.width, event.size.height)
        self.query_one(Footer).show_command_palette = event.size.width >= 100
