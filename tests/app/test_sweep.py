"""The Sweep screen: its state and panels without Textual, then Pilot tests of its keys (the control calls get the
highlighted trial's number), a table that follows the snapshots as they change, enter on finished and running
trials, the messages of an empty or unreadable sweep folder, quitting, and 80x24.

Trials come from :mod:`tests.app.sweep_fixture` (run folders written by hand, snapshots built from them): no study
and no training.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.app.sweep_fixture import TRIALS, Recorder, make_sweep, snapshot_of, trial_dir, with_state
from tuinet.app.screens.dialogs import ConfirmDialog
from tuinet.app.screens.help import HelpScreen
from tuinet.app.screens.run_summary import RunSummaryScreen
from tuinet.app.screens.sweep import SweepView
from tuinet.app.sweep import SweepApp
from tuinet.app.sweep_state import STATE_LOOK, SweepState, read_space, trial_name
from tuinet.app.testing import async_test, press, wait_for_screen, wait_until
from tuinet.app.widgets.best_trial import best_text
from tuinet.app.widgets.importance_bars import bar, importance_text
from tuinet.app.widgets.overlay_chart import overlay_lines
from tuinet.app.widgets.param_scatter import log_scale, params_text, scatter_text
from tuinet.app.widgets.trials_table import TrialsTable
from tuinet.errors import ConfigError

SIZE = (120, 40)


@pytest.fixture
def sweep(tmp_path) -> Path:
    return tmp_path / "lr-search"


def state_of(snapshot, space: bool = True) -> SweepState:
    st = SweepState(snapshot.folder)
    if space:
        st.space = read_space(snapshot.folder)
    st.update(snapshot)
    return st


class Source:
    """A reader whose snapshot a test changes while the app runs (read from the screen's worker thread)."""

    def __init__(self, snapshot=None, error: Exception | None = None):
        self.snapshot = snapshot
        self.error = error
        self.reads = 0
        self.threads: set[str] = set()

    def __call__(self, folder: Path):
        self.reads += 1
        self.threads.add(threading.current_thread().name)
        if self.error is not None:
            raise self.error
        return self.snapshot


def view_of(app: SweepApp) -> SweepView:
    return app.view


async def loaded(pilot, app: SweepApp, rows: int) -> SweepView:
    view = view_of(app)
    await wait_until(pilot, lambda: view.table.row_count == rows, what=f"{rows} rows")
    return view


# --- the state and the panels, without Textual ---------------------------------------------------------------------


def test_the_summary_counts_trials_by_state_and_the_epochs_pruning_saved(sweep):
    st = state_of(make_sweep(sweep))
    assert st.counts() == {"complete": 4, "pruned": 2, "failed": 1, "running": 1, "waiting": 1}
    assert st.summary() == ("9 of 16 trials: 4 complete, 2 pruned, 1 failed, 1 running, 1 waiting · 62 epochs run · "
                            "pruning saved 17 (22%)")
    assert st.summary(compact=True).startswith("9 of 16 trials 4✓ 2✂ 1✗ 1◐ 1… · 62 epochs")


def test_the_best_trials_go_in_the_chart_named_after_their_number(sweep):
    snap = make_sweep(sweep)
    st = state_of(snap)
    values = {t.number: t.value for t in snap.trials}
    ranked = [t.number for t in st.ranked()]
    assert ranked == sorted((n for n, v in values.items() if v is not None), key=values.__getitem__)
    assert [r.name for r in st.curves.charted()] == [trial_name(n) for n in ranked[:5]]
    assert snap.best.number == ranked[0] and snap.best.state == "complete"
    # a trial that becomes the best enters the chart; the one it pushes out leaves it
    out = ranked[4]
    st.update(with_state(snap, 1, value=0.01, state="complete", epochs=12))
    names = {r.name for r in st.curves.charted()}
    assert trial_name(1) in names and trial_name(out) not in names and len(names) == 5


def test_a_trial_without_a_run_folder_here_is_drawn_from_the_snapshots_curve(sweep):
    """A trial on another host (``--storage`` workers) has no run folder here: its per-epoch objective is drawn; once
    its folder arrives (copied back), the folder is read instead."""
    snap = make_sweep(sweep)
    away = with_state(snap, 8, state="running", value=0.05, epochs=3, run_dir=None, where="host-b",
                      curve=(0.5, 0.2, 0.05))
    st = state_of(away)
    assert trial_name(8) in st.curves.slots
    x, y = st.curves.curve_points(trial_name(8), "val_loss")
    assert x == [1.0, 2.0, 3.0] and y == [0.5, 0.2, 0.05]
    assert any(ln.label.startswith("#8") and ln.y == [0.5, 0.2, 0.05] for ln in overlay_lines(st.curves, "loss"))
    st.update(with_state(away, 8, curve=(0.5, 0.2, 0.05, 0.04), value=0.04, epochs=4))  # a new epoch arrives
    assert st.curves.curve_points(trial_name(8), "val_loss")[1][-1] == 0.04
    st.update(with_state(away, 8, run_dir=trial_dir(sweep / "runs", 0), curve=()))  # its folder came back
    x, y = st.curves.curve_points(trial_name(8), "val_loss")
    assert len(x) == 12 and y != [0.5, 0.2, 0.05, 0.04]  # read from the run folder now


def test_a_maximized_accuracy_ranks_and_sorts_high_first_and_charts_accuracy(sweep):
    snap = make_sweep(sweep)
    rows = [dataclasses.replace(t, value=None if t.value is None else 1 - t.value / 3) for t in snap.trials]
    acc = dataclasses.replace(snapshot_of(sweep, rows), objective="val_accuracy", direction="maximize",
                              best=max((t for t in rows if t.state == "complete"), key=lambda t: t.value))
    st = state_of(acc)
    assert not st.minimize and [t.value for t in st.ranked()] == sorted((t.value for t in rows if t.value),
                                                                        reverse=True)
    st.sort_by("value")
    assert st.descending and st.rows()[0].number == acc.best.number
    assert scatter_text("lr", st, 40).plain.splitlines()[1].strip().startswith(f"{st.ranked()[0].value:.2%}")
    assert "higher: better" in params_text(st, 40).plain and "log y" not in params_text(st, 40).plain
    assert best_text(st).plain.splitlines()[1].startswith(f"val acc {acc.best.value:.2%}")


def test_sorting_by_columns_puts_missing_values_last_and_the_best_first(sweep):
    st = state_of(make_sweep(sweep))
    assert [t.number for t in st.rows()] == list(TRIALS)
    st.sort_by("value")  # minimized: lowest first, trials without a value (failed, waiting) last
    values = [t.value for t in st.rows()]
    assert values[:7] == sorted(values[:7]) and values[7:] == [None, None]
    st.sort_by("value")
    assert [t.value for t in st.rows()][:7] == sorted(values[:7], reverse=True)
    st.sort_by("param:lr")
    lrs = [t.params["lr"] for t in st.rows()]
    assert lrs == sorted(lrs)
    st.sort_by("chart")  # not sortable: nothing changes
    assert st.sort_key == "param:lr"
    st = state_of(make_sweep(sweep))
    keys = [st.next_sort() for _ in range(len(st.sortable()) + 1)]
    assert keys[:3] == ["number", "state", "param:lr"] and keys[-1] == ""


def test_scatters_span_the_searched_space_with_glyphs_for_states(sweep, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    snap = make_sweep(sweep)
    st = state_of(snap)
    assert set(st.space) == {"lr", "dropout", "optimizer", "model"}
    lr = scatter_text("lr", st, 40).plain
    assert lr.splitlines()[0].startswith("lr (log x")  # log-uniform in the space
    assert lr.count("★") == 1 and lr.count("○") == 2 and lr.count("◐") == 1 and lr.count("●") == 3
    axis = lr.splitlines()[-1].split()
    assert axis == ["0.0001", "0.1"]  # the searched range, not only the trials' (0.00012 to 0.08)
    dropout = scatter_text("dropout", st, 40).plain
    assert "log x" not in dropout and dropout.splitlines()[-1].split() == ["0", "0.5"]
    model = scatter_text("model", st, 40).plain
    assert "choice" in model.splitlines()[0] and model.splitlines()[-1].split() == ["mlp", "128,64"]  # space order
    # without the space (a sweep.json not written yet): the trials' own range, log when it spans decades
    bare = state_of(snap, space=False)
    assert log_scale([1e-4, 3e-3, 0.08]) and not log_scale([0.05, 0.4]) and not log_scale(["adam", 1e-3])
    lr = scatter_text("lr", bare, 40).plain
    assert lr.splitlines()[0].startswith("lr (log x") and lr.splitlines()[-1].split() == ["0.00012", "0.08"]
    assert scatter_text("model", bare, 40).plain.splitlines()[-1].split() == ["128,64", "mlp"]
    whole = params_text(st, 40).plain
    titles = [line.split(" ")[0] for line in whole.split("by parameter")[1].splitlines()
              if line[:1].isalpha()]  # the scatters, most important parameter first
    assert titles == ["lr", "optimizer", "dropout", "model"]
    assert "★ best" in whole and "○ pruned" in whole


def test_importances_are_bars_with_their_share_written(sweep):
    assert bar(0.5, 4) == "██" and bar(1 / 16, 2) == "▏" and bar(0, 5) == ""
    text = importance_text({"dropout": 0.25, "lr": 0.75}, 30).plain.splitlines()
    assert text[0].startswith("lr") and text[0].endswith("75%") and text[1].endswith("25%")
    assert text[0].count("█") > text[1].count("█")
    assert "none yet" in importance_text({}, 30).plain


# --- Pilot ----------------------------------------------------------------------------------------------------------


@async_test
async def test_stop_and_promote_reach_control_with_the_highlighted_trial(sweep):
    snap = make_sweep(sweep)
    control = Recorder()
    app = SweepApp(sweep, reader=Source(snap), control=control, poll=False)
    notes: list[str] = []
    app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        view = await loaded(pilot, app, 9)
        assert isinstance(app.focused, TrialsTable) and view.table.highlighted == 0
        assert view.check_action("stop_trial", ()) is None  # a complete trial: greyed out
        await press(pilot, "s", "p")
        assert control.calls == [] and not isinstance(app.screen, ConfirmDialog)
        await press(pilot, *["down"] * 5)
        assert view.table.highlighted == 5 and view.check_action("stop_trial", ())
        await press(pilot, "s")
        await wait_for_screen(pilot, ConfirmDialog, what="the question")
        await press(pilot, "n")  # no: nothing is sent
        await wait_until(pilot, lambda: not isinstance(app.screen, ConfirmDialog), what="the answer")
        assert control.calls == []
        await press(pilot, "s")
        await wait_for_screen(pilot, ConfirmDialog, what="the question")
        await press(pilot, "y")
        await wait_until(pilot, lambda: control.calls, what="the stop")
        assert control.calls == [("stop", sweep, 5)]
        await press(pilot, "p")
        await wait_until(pilot, lambda: len(control.calls) == 2, what="the promotion")
        assert control.calls[1] == ("promote", sweep, 5)
        await wait_until(pilot, lambda: len(notes) == 2, what="the notes")
        assert "#5" in notes[0] and "pruned" in notes[0] and "promoted" in notes[1]


@async_test
async def test_a_control_error_is_said_not_raised(sweep):
    class Refusing(Recorder):
        def promote_trial(self, folder, number):
            raise ConfigError("sweep lr-search is not running")

    app = SweepApp(sweep, reader=Source(make_sweep(sweep)), control=Refusing(), poll=False)
    notes: list[tuple[str, str]] = []
    app.notify = lambda message, severity="information", **kw: notes.append((message, severity))  # type: ignore
    async with app.run_test(size=SIZE) as pilot:
        view = await loaded(pilot, app, 9)
        view.table.move_cursor(row=5)
        await press(pilot, "p")
        await wait_until(pilot, lambda: notes, what="the error")
        assert notes == [("trial #5: sweep lr-search is not running", "error")]


@async_test
async def test_the_table_follows_new_trials_and_states_as_snapshots_change(sweep):
    full = make_sweep(sweep)
    source = Source(snapshot_of(sweep, [t for t in full.trials if t.number < 3]))
    app = SweepApp(sweep, reader=source, control=Recorder())
    async with app.run_test(size=SIZE) as pilot:
        view = await loaded(pilot, app, 3)
        view.table.move_cursor(row=2)
        assert view.table.highlighted == 2
        source.snapshot = full
        await wait_until(pilot, lambda: view.table.row_count == 9, timeout=5, what="the new trials")
        assert view.table.highlighted == 2  # the same trial stays highlighted
        assert "9 of 16 trials" in view.summary_text().plain
        assert str(view.table.get_cell("5", "state")) == f"{STATE_LOOK['running'][0]} running"
        source.snapshot = with_state(full, 5, state="pruned", epochs=7)
        await wait_until(pilot, lambda: "pruned" in str(view.table.get_cell("5", "state")), timeout=5,
                         what="the pruned trial")
        assert str(view.table.get_cell("5", "epochs")) == "7/12" and "3 pruned" in view.summary_text().plain
        assert source.threads and "MainThread" not in source.threads  # read in a worker, never in the UI thread


@async_test
async def test_an_unreadable_folder_says_why_and_an_empty_sweep_says_it_has_no_trials(tmp_path):
    not_a_sweep = tmp_path / "nothing-here"
    not_a_sweep.mkdir()
    app = SweepApp(not_a_sweep, poll=False)  # the sweep engine's own reader
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        await wait_until(pilot, lambda: view.reads, what="a read")
        message = view.message_text().plain
        assert message.startswith("✗") and "not a sweep folder" in message and str(not_a_sweep) in message
        assert view.message.display and not view.query_one("#sw-bottom").display
        assert view.check_action("open_trial", ()) is False
    source = Source(error=PermissionError(13, "Permission denied"))
    app = SweepApp(tmp_path / "locked", reader=source, poll=False)
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        await wait_until(pilot, lambda: view.reads, what="a read")
        assert "cannot read the sweep" in view.message_text().plain and "Permission denied" in view.message_text().plain
    app = SweepApp(tmp_path / "new", reader=Source(snapshot_of(tmp_path / "new", [])), poll=False)
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        await wait_until(pilot, lambda: view.reads, what="a read")
        assert "no trials yet" in view.message_text().plain and view.table.row_count == 0
        assert "no trial has a curve yet" == view.chart.data.empty


@async_test
async def test_a_failed_read_keeps_the_last_snapshot_and_says_so(sweep):
    source = Source(make_sweep(sweep))
    app = SweepApp(sweep, reader=source)
    async with app.run_test(size=SIZE) as pilot:
        view = await loaded(pilot, app, 9)
        source.error = ConfigError("state.json is damaged")
        await wait_until(pilot, lambda: view.state.error, timeout=5, what="the error")
        assert "state.json is damaged" in view.message_text().plain and "last snapshot" in view.message_text().plain
        assert view.table.row_count == 9
        source.error = None
        await wait_until(pilot, lambda: view.state.error is None, timeout=5, what="the recovery")
        assert not view.message_text().plain


@async_test
async def test_enter_opens_a_finished_trial_and_attaches_to_a_running_one(sweep):
    snap = make_sweep(sweep)
    app = SweepApp(sweep, reader=Source(snap), control=Recorder(), poll=False)
    notes: list[str] = []
    app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        view = await loaded(pilot, app, 9)
        await press(pilot, "enter")  # trial 0: complete
        await wait_for_screen(pilot, RunSummaryScreen, what="the summary")
        assert app.screen.record.path == trial_dir(sweep / "runs", 0)
        await press(pilot, "escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, RunSummaryScreen), what="back")
        view.table.move_cursor(row=8)  # waiting: no run folder yet
        await press(pilot, "enter")
        await wait_until(pilot, lambda: notes, what="the note")
        assert "no run folder" in notes[-1]
        view.table.move_cursor(row=5)  # running, but its trainer names no control socket
        await press(pilot, "enter")
        await wait_until(pilot, lambda: len(notes) == 2, what="the second note")
        assert "#5" in notes[-1] and "without a control socket" in notes[-1] and app.attach_to is None
        run = trial_dir(sweep / "runs", 5)
        sock = run.parent / "trial5.sock"
        sock.touch()  # a socket path that exists: the trainer can be attached to
        status = json.loads((run / "status.json").read_text())
        (run / "status.json").write_text(json.dumps({**status, "socket": str(sock)}))
        await press(pilot, "enter")
        await wait_until(pilot, lambda: app.return_value is not None, what="the app to leave for the trial")
    assert app.attach_to is not None and app.attach_to.path == run


@async_test
async def test_quit_asks_whether_to_stop_a_sweep_started_here(sweep):
    stopped: list[bool] = []
    snap = make_sweep(sweep, [0, 5])
    for answer, want in (("n", []), ("y", [True])):
        app = SweepApp(sweep, reader=Source(snap), poll=False, stop_sweep=lambda: stopped.append(True))
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, app, 2)
            await press(pilot, "q")
            await wait_for_screen(pilot, ConfirmDialog, what="the question")
            await press(pilot, answer)
            await wait_until(pilot, lambda: app.return_value is not None, what="the exit")
        assert app.return_value == 0 and stopped == want
    over = snapshot_of(sweep, list(snap.trials), live=False)
    for app in (SweepApp(sweep, reader=Source(snap), poll=False),  # started elsewhere: q just quits
                SweepApp(sweep, reader=Source(over), poll=False, stop_sweep=lambda: stopped.append(True))):  # over
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, app, 2)
            await press(pilot, "q")
            await wait_until(pilot, lambda: app.return_value is not None, what="the exit")
        assert app.return_value == 0 and stopped == [True]  # it quit at once: no question, nothing stopped


@async_test
async def test_sort_keys_help_and_palette(sweep):
    app = SweepApp(sweep, reader=Source(make_sweep(sweep)), control=Recorder(), poll=False)
    async with app.run_test(size=SIZE) as pilot:
        view = await loaded(pilot, app, 9)
        assert list(view.state.space) == ["lr", "dropout", "optimizer", "model"]  # read from sweep.json
        await press(pilot, "S")
        assert view.state.sort_key == "number"
        await press(pilot, "R")
        assert [int(str(k.value)) for k in view.table.rows] == sorted(TRIALS, reverse=True)
        assert "▼" in str(view.table.columns["number"].label)
        col = view.table.columns["value"]
        view.table.post_message(TrialsTable.HeaderSelected(view.table, col.key, 7, col.label))
        await wait_until(pilot, lambda: view.state.sort_key == "value", what="the heading's sort")
        assert [int(str(k.value)) for k in view.table.rows][0] == view.state.snapshot.best.number
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Sweep: open trial", "Sweep: sort by the next column", "Quit"} <= titles
        assert "Sweep: promote trial" not in titles  # the highlighted trial is not running
        await press(pilot, "question_mark")
        await wait_for_screen(pilot, HelpScreen, what="help")
        keys = dict(app.screen.key_lines)
        assert {"enter", "s", "p", "S R", "i", "?", "q"} <= set(keys) and "promote" in keys["p"]


@async_test
async def test_80x24_is_compact_with_the_parameters_behind_their_key(sweep):
    app = SweepApp(sweep, reader=Source(make_sweep(sweep)), control=Recorder(), poll=False)
    async with app.run_test(size=(80, 24)) as pilot:
        view = await loaded(pilot, app, 9)
        assert view.compact and not view.has_class("-params")
        assert view.params_box.styles.display == "none" and "where" not in view.table.columns
        await press(pilot, "i")
        assert view.has_class("-params") and view.table.styles.display == "none"
        assert app.focused is view.params_box  # the keys stay with the view
        await press(pilot, "S")
        assert view.state.sort_key == "number"
        await press(pilot, "i")
        assert not view.has_class("-params") and isinstance(app.focused, TrialsTable)


@async_test
async def test_a_trial_on_another_node_is_steered_from_here_not_attached(sweep):
    """A Ray trial's run folder is mirrored here but its trainer is elsewhere: enter says so, s and p still apply."""
    snap = make_sweep(sweep)
    remote = with_state(snap, 4, state="running", where="node-127.0.0.1-2")  # its folder says failed: not live here
    control = Recorder()
    app = SweepApp(sweep, reader=Source(remote), control=control, poll=False)
    notes: list[str] = []
    app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        view = await loaded(pilot, app, 9)
        assert "where" in view.table.columns  # shown once a trial runs elsewhere
        assert str(view.table.get_cell("4", "where")).startswith("node-")
        view.table.move_cursor(row=4)
        await press(pilot, "enter")
        await wait_until(pilot, lambda: notes, what="the note")
        assert "on node-127.0.0.1-2" in notes[0] and not isinstance(app.screen, RunSummaryScreen)
        await press(pilot, "p")
        await wait_until(pilot, lambda: control.calls, what="the promotion")
        assert control.calls == [("promote", sweep, 4)]


def test_a_runs_dir_given_finds_the_trials_there(sweep, tmp_path):
    """run_sweep_app(runs_dir=...): trials' run folders looked up by name in a folder the user names."""
    from tuinet.app.sweep import _rebased_reader

    snap = make_sweep(sweep)
    shared = tmp_path / "shared"
    read = _rebased_reader(lambda folder: snap, shared)(sweep)
    assert [t.run_dir for t in read.trials if t.run_dir] == [shared / t.run_dir.name for t in snap.trials
                                                             if t.run_dir]
    assert read.best.run_dir == shared / snap.best.run_dir.name and read.best.number == snap.best.number


def test_without_colour_the_charted_trials_keep_their_glyphs(sweep, monkeypatch):
    """NO_COLOR: the chart tells trials apart by glyph, the legend names each glyph's trial, states are words."""
    import asyncio

    from tuinet.app.compare_state import GLYPHS

    monkeypatch.setenv("NO_COLOR", "1")
    app = SweepApp(sweep, reader=Source(make_sweep(sweep)), control=Recorder(), poll=False)

    async def run():
        async with app.run_test(size=SIZE) as pilot:
            view = await loaded(pilot, app, 9)
            def drawn() -> str:
                return "\n".join("".join(seg.text for seg in view.chart.render_line(y))
                                 for y in range(view.chart.content_size.height))

            # built for its laid-out size (a first build can come before the layout, with no height)
            await wait_until(pilot, lambda: view.chart.builds > 0 and drawn().strip(), what="the chart")
            chart = drawn()
            return chart, view.legend_text().plain, [str(view.table.get_cell(str(n), "state")) for n in TRIALS]

    chart, legend, states = asyncio.run(run())
    assert app.no_color
    top = [t.number for t in state_of(make_sweep(sweep)).top()]
    for k, number in enumerate(top):
        assert GLYPHS[k][0] in chart and f"{GLYPHS[k][0]} #{number}" in legend
    assert {s.split(" ", 1)[1] for s in states} == {"complete", "pruned", "failed", "running", "waiting"}


def test_the_sweep_keys_come_from_the_actions_table():
    from tuinet.app import actions

    def key(b):
        return (b.key, b.action, b.description, b.show, b.key_display)

    assert [key(b) for b in SweepView.BINDINGS] == [key(b) for a in actions.SWEEP_ACTIONS for b in a.bindings()]
    assert [key(b) for b in SweepApp.BINDINGS] == [key(b) for a in actions.SWEEP_APP_ACTIONS for b in a.bindings()]
    for owner, table in ((SweepView, actions.SWEEP_ACTIONS), (SweepApp, actions.SWEEP_APP_ACTIONS)):
        for a in table:
            assert callable(getattr(owner, f"action_{a.name}", None)) and a.title and a.description, a.id
    ids = [a.id for a in (*actions.SWEEP_ACTIONS, *actions.SWEEP_APP_ACTIONS)]
    assert sorted(i for row in actions.SWEEP_APP_HELP_ROWS for i in row.ids) == sorted(ids)
    keys = [k for a in actions.SWEEP_ACTIONS for k in a.keys.split(",")]
    assert len(keys) == len(set(keys))


@async_test
async def test_w_draws_for_the_charted_trials_that_have_a_run_folder(sweep):
    """The drawing screen lists the chart's trials, in its glyphs; each answers from its folder's latest.npz (the
    fixture's trials have none, so each says it could not read it, in one line; reading real checkpoints is
    tested with the Compare screen's w in tests/app/test_draw.py)."""
    from tuinet.app.screens.draw_runs import DrawRunsScreen
    from tuinet.app.widgets.drawpad import DrawCanvas

    snap = make_sweep(sweep)
    app = SweepApp(sweep, reader=Source(snap), poll=False)
    async with app.run_test(size=SIZE) as pilot:
        view = await loaded(pilot, app, 9)
        charted = [r.name for r in view.state.curves.charted()]
        assert charted
        await press(pilot, "w")
        await wait_until(pilot, lambda: isinstance(app.screen, DrawRunsScreen) and app.screen.is_mounted,
                         what="the drawing screen")
        screen = app.screen
        assert [r.name for r in screen.runs] == charted
        assert [r.style.glyph for r in screen.runs] == [view.state.curves.style(n).glyph for n in charted]
        screen.query_one(DrawCanvas).set_ink(np.eye(28, dtype=np.float32))
        await wait_until(pilot, lambda: all(screen.answers.get(n) for n in charted), what="every trial's line")
        for n in charted:
            assert "holds no checkpoint (latest.npz or best.npz)" in screen.answers[n]["error"]
            assert str(sweep) not in screen.answers[n]["error"]  # the folder named by its run, not a long path
        await press(pilot, "escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, DrawRunsScreen), what="back to the sweep")
