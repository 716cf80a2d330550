"""The Compare screen: its state without Textual, then Pilot tests of every key (standalone and as the app's compare
tab), live updates, enter on finished and live runs, and that runs stay apart without colour.

Runs come from :mod:`tests.app.runs_fixture` (run folders written by hand, fixed times): no training needed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.app.fakes import FakeSession
from tests.app.runs_fixture import append_epoch, make_runs
from tuinet.app.app import TuinetApp
from tuinet.app.compare import CompareApp, attach_hint
from tuinet.app.compare_state import GLYPHS, MAX_CHARTED, CompareState, short_name
from tuinet.app.screens.compare import CompareView
from tuinet.app.screens.help import HelpScreen
from tuinet.app.screens.run_summary import RunSummaryScreen, per_class_text
from tuinet.app.testing import async_test, press, wait_for_screen, wait_until
from tuinet.app.widgets.charts import render_chart, render_text
from tuinet.app.widgets.overlay_chart import legend_text, overlay_data, overlay_lines
from tuinet.app.widgets.runs_table import RunsTable
from tuinet.errors import ConfigError
from tuinet.protocol import make_event
from tuinet.training.compare import load_runs

SIZE = (120, 40)


@pytest.fixture
def runs(tmp_path) -> Path:
    return make_runs(tmp_path / "runs")


def records(runs: Path):
    return load_runs(runs)


def view_of(app) -> CompareView:
    return app.screen.query_one(CompareView) if not isinstance(app, TuinetApp) else app.query_one(CompareView)


# --- the state, without Textual -------------------------------------------------------------------------------------


def test_the_fixture_reads_as_live_crashed_and_finished_runs(runs):
    recs = {r.name: r for r in records(runs)}
    assert recs["live-run"].status == "live"
    assert recs["crashed-run"].status == "crashed" and recs["crashed-run"].notes
    assert {recs[n].status for n in ("adam-lr0.001", "adam-lr0.01-dropout", "sgd-lr0.1")} == {"finished"}


def test_state_toggles_runs_and_gives_each_its_own_glyph(runs):
    st = CompareState(records(runs), charted=[])
    assert st.charted() == []
    for name in ("sgd-lr0.1", "adam-lr0.001"):
        assert st.toggle(name) is None
    assert [r.name for r in st.charted()] == ["sgd-lr0.1", "adam-lr0.001"]
    assert st.style("sgd-lr0.1").glyph != st.style("adam-lr0.001").glyph
    st.toggle("sgd-lr0.1")  # out: its slot is free again, the other run keeps its glyph
    assert st.style("adam-lr0.001").glyph == GLYPHS[1][0] and st.style("sgd-lr0.1") is None
    st.toggle("crashed-run")
    assert st.style("crashed-run").glyph == GLYPHS[0][0]
    assert st.toggle_all() is None and len(st.charted()) == 5
    st.toggle_all()
    assert st.charted() == []


def test_state_refuses_more_than_the_glyphs(tmp_path):
    runs = tmp_path / "runs"
    make_runs(runs)
    many = records(runs) + records(runs)  # the same folders read twice: enough rows
    for i, r in enumerate(many):
        r.name = f"{r.name}-{i}"
    st = CompareState(many, charted=[])
    for r in many[:MAX_CHARTED]:
        assert st.toggle(r.name) is None
    assert "at most" in st.toggle(many[MAX_CHARTED].name)
    assert len(st.charted()) == MAX_CHARTED


def test_state_cycles_axes_curves_smoothing_and_log(runs):
    st = CompareState(records(runs), charted=["adam-lr0.001"])
    assert [st.cycle_x() for _ in range(4)] == ["step", "samples", "time", "epoch"]
    assert [st.cycle_split() for _ in range(3)] == ["train", "both", "val"]
    x, raw = st.curve_points("adam-lr0.001", "train_loss")
    st.toggle_smooth()
    _, smoothed = st.curve_points("adam-lr0.001", "train_loss")
    assert len(smoothed) == len(raw) and smoothed != raw and smoothed[0] == pytest.approx(raw[0])
    assert sum(abs(b - a) for a, b in zip(smoothed, smoothed[1:])) < sum(abs(b - a) for a, b in zip(raw, raw[1:]))
    v = st.version
    st.toggle_log()
    assert st.log_y and st.version > v
    assert overlay_data(st, "loss").log_y and not overlay_data(st, "accuracy").log_y


def test_state_sorts_and_filters(runs):
    st = CompareState(records(runs))
    st.sort_by("best_val_loss")
    losses = [r.best_val_loss for r in st.visible()]
    assert losses == sorted(losses)
    st.sort_by("best_val_loss")  # again: reversed
    assert [r.best_val_loss for r in st.visible()] == sorted(losses, reverse=True)
    st.sort_by("test_accuracy")  # better is bigger: high to low first; runs without one last
    accs = [r.test_accuracy for r in st.visible()]
    assert accs[:3] == sorted(accs[:3], reverse=True) and accs[3:] == [None, None]
    st.set_filter("optimizer=adam, lr<0.005")
    assert {r.name for r in st.visible()} == {"adam-lr0.001", "crashed-run", "live-run"}
    with pytest.raises(ConfigError):
        st.set_filter("lr<<3")
    assert st.filter_text == "optimizer=adam, lr<0.005"  # a bad filter leaves the last good one
    st.set_filter("")
    assert len(st.visible()) == 5
    st = CompareState(records(runs))
    keys = [st.next_sort() for _ in range(12)]
    assert keys[0] == "name" and keys[-1] == "" and len(set(keys)) == 12


def test_the_diff_lists_only_what_differs_between_charted_runs(runs):
    st = CompareState(records(runs), charted=["adam-lr0.001", "adam-lr0.01-dropout"])
    assert dict(st.diff()) == {"lr": [0.001, 0.01], "dropout": [0.0, 0.3]}


def test_a_live_run_updates_on_poll(runs):
    st = CompareState(records(runs), charted=["live-run"])
    live = st.record("live-run")
    assert live.epochs_done == 5
    v = st.version
    assert not st.poll()
    append_epoch(runs / "live-run", 6, 0.12, 0.96)
    assert st.poll()
    assert live.epochs_done == 6 and live.best_val_loss == pytest.approx(0.12)
    assert "live-run" in st.changed_rows and st.version > v
    x, y = st.curve_points("live-run", "val_loss")
    assert x[-1] == 6 and y[-1] == pytest.approx(0.12)


def test_short_names_keep_both_ends():
    s = short_name("mlp-digits-20261202-102706", 16)
    assert len(s) == 16 and s.startswith("mlp-dig") and s.endswith("102706")
    assert short_name("abc", 5) == "abc"


def test_per_class_accuracy_lists_the_worst_class_first():
    m = [[9, 1], [5, 5]]
    text = per_class_text({"matrix": m, "class_names": ["cat", "dog"]}).plain
    assert text.index("dog") < text.index("cat") and "50.0%" in text and "90.0%" in text


# --- without colour -------------------------------------------------------------------------------------------------


def test_where_a_charted_run_changed_a_setting_is_a_line_in_its_colour(runs):
    with open(runs / "sgd-lr0.1" / "metrics.jsonl", "a") as f:  # set from the app's dialog at step 46 (epoch 2)
        f.write(json.dumps(make_event("regularization_changed", l1=0.0, l2=0.01, dropout=0.0, weight_decay=0.0,
                                      previous={}, step=46)) + "\n")
    st = CompareState(records(runs), charted=["adam-lr0.001", "sgd-lr0.1"])
    sgd = st.style("sgd-lr0.1").color
    assert overlay_data(st, "loss").marks == [(2.0, sgd)]  # the other run changed nothing
    strips = render_chart(overlay_data(st, "loss"), 60, 14)
    segs = [seg for strip in strips[:-2] for seg in strip if "┊" in seg.text]
    assert segs and all(seg.style.color.number == sgd for seg in segs)
    st.cycle_x()  # against steps, the same change at step 46
    assert overlay_data(st, "loss").marks == [(46.0, sgd)]


def test_two_runs_curves_use_different_glyphs_without_colour(runs, monkeypatch):
    """NO_COLOR: the charts still tell runs apart, by their glyphs, and the legend names each run with its glyph."""
    st = CompareState(records(runs), charted=["adam-lr0.001", "sgd-lr0.1"])
    lines = overlay_lines(st, "loss")
    assert [ln.marker for ln in lines] == [GLYPHS[0][0], GLYPHS[1][0]]
    plain = render_text(overlay_data(st, "loss"), 60, 14).plain
    assert plain.count(GLYPHS[0][0]) >= 3 and plain.count(GLYPHS[1][0]) >= 3
    legend = legend_text(st).plain
    assert f"{GLYPHS[0][0]} adam-lr0.001" in legend and f"{GLYPHS[1][0]} sgd-lr0.1" in legend
    st.cycle_split()
    st.cycle_split()  # both: train curves get the hollow glyphs, dotted
    both = overlay_lines(st, "loss")
    assert {ln.marker for ln in both} == {GLYPHS[0][0], GLYPHS[0][1], GLYPHS[1][0], GLYPHS[1][1]}
    assert [ln.dotted for ln in both] == [True, False, True, False]

    monkeypatch.setenv("NO_COLOR", "1")
    app = CompareApp(records(runs), "runs", charted=["adam-lr0.001", "sgd-lr0.1"], poll=False)

    async def run():
        async with app.run_test(size=SIZE) as pilot:
            view = view_of(app)
            await wait_until(pilot, lambda: view.state is not None and view.loss_chart.builds > 0)
            return "\n".join("".join(seg.text for seg in view.loss_chart.render_line(y))
                             for y in range(view.loss_chart.content_size.height))

    drawn = asyncio.run(run())
    assert app.no_color
    assert GLYPHS[0][0] in drawn and GLYPHS[1][0] in drawn


# --- Pilot: the standalone Compare app -----------------------------------------------------------------------------


@async_test
async def test_keys_change_the_charts_table_and_diff(runs):
    app = CompareApp(records(runs), "runs", charted=["adam-lr0.001", "sgd-lr0.1"], poll=False)
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        st = view.state
        await wait_until(pilot, lambda: view.table.row_count == 5, what="the table")
        assert isinstance(app.focused, RunsTable)
        await press(pilot, "x")
        assert st.x_axis == "step" and "vs step" in str(view.loss_chart.border_title)
        await press(pilot, "x", "x", "x")
        assert st.x_axis == "epoch"
        await press(pilot, "v")
        assert st.split == "train" and "(train)" in str(view.loss_chart.border_title)
        await press(pilot, "m")
        assert st.smooth and "smoothed" in str(view.loss_chart.border_title)
        await press(pilot, "l")
        assert st.log_y and view.loss_chart.data.log_y
        # space on the highlighted (first) row: live-run goes into the chart, then out again
        assert view.table.highlighted == "live-run"
        await press(pilot, "space")
        assert "live-run" in st.slots and len(st.charted()) == 3
        assert str(view.table.get_cell("live-run", "chart")) == st.style("live-run").glyph
        await press(pilot, "space")
        assert "live-run" not in st.slots and str(view.table.get_cell("live-run", "chart")) == "·"
        await press(pilot, "a")
        assert len(st.charted()) == 5
        await press(pilot, "a")
        assert st.charted() == []
        # S sorts by the next column, R reverses
        await press(pilot, "S")
        assert st.sort_key == "name"
        order = [str(k.value) for k in view.table.rows]
        assert order == sorted(order)
        await press(pilot, "R")
        assert [str(k.value) for k in view.table.rows] == sorted(order, reverse=True)
        assert "▼" in str(view.table.columns["name"].label)
        # D: the diff shows / hides
        assert view.has_class("-diff")
        await press(pilot, "D")
        assert not view.has_class("-diff")
        await press(pilot, "D")
        assert view.has_class("-diff")


@async_test
async def test_clicking_a_heading_sorts_by_it(runs):
    app = CompareApp(records(runs), "runs", poll=False)
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        await wait_until(pilot, lambda: view.table.row_count == 5, what="the table")
        view.table.post_message(RunsTable.HeaderSelected(view.table, view.table.columns["best_val_loss"].key, 6,
                                                         view.table.columns["best_val_loss"].label))
        await wait_until(pilot, lambda: view.state.sort_key == "best_val_loss", what="the sort")
        losses = [view.state.record(str(k.value)).best_val_loss for k in view.table.rows]
        assert losses == sorted(losses)


@async_test
async def test_the_filter_line_takes_the_filter_syntax(runs):
    app = CompareApp(records(runs), "runs", poll=False)
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        await wait_until(pilot, lambda: view.table.row_count == 5, what="the table")
        await press(pilot, "slash")
        assert view.filter_input.display and app.focused is view.filter_input
        await press(pilot, *"lr<<1", "enter")
        assert view.filter_error.display and "lr<<1" in str(view.filter_error.render())
        assert view.table.row_count == 5 and app.focused is view.filter_input
        view.filter_input.value = ""
        await press(pilot, *"optimizer=sgd", "enter")
        assert not view.filter_input.display and isinstance(app.focused, RunsTable)
        assert [str(k.value) for k in view.table.rows] == ["sgd-lr0.1"]
        assert "filter: optimizer=sgd" in view.info_text().plain
        await press(pilot, "slash")
        assert view.filter_input.value == "optimizer=sgd"
        await press(pilot, "escape")  # closes, unchanged
        assert not view.filter_input.display and view.table.row_count == 1
        await press(pilot, "slash")
        view.filter_input.value = ""
        await press(pilot, "enter")  # empty: every run again
        assert view.table.row_count == 5


@async_test
async def test_enter_on_a_finished_run_opens_its_summary_and_on_a_live_one_says_how_to_attach(runs):
    app = CompareApp(records(runs), "runs", poll=False)
    notes: list[str] = []
    app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        await wait_until(pilot, lambda: view.table.row_count == 5, what="the table")
        assert view.table.highlighted == "live-run"
        await press(pilot, "enter")
        await wait_until(pilot, lambda: notes, what="the attach hint")
        assert notes == [attach_hint("live-run")] and "tuinet attach live-run" in notes[0]
        assert not isinstance(app.screen, RunSummaryScreen)
        await press(pilot, "down", "down", "enter")  # sgd-lr0.1, finished
        await wait_for_screen(pilot, RunSummaryScreen, what="the summary")
        summary = app.screen
        assert summary.record.name == "sgd-lr0.1"
        await wait_until(pilot, lambda: str(summary.query_one("#sum-figures").render()), what="the figures")
        figures = str(summary.query_one("#sum-figures").render())
        assert "finished" in figures and "test acc" in figures and "95.09%" in figures
        confusion = str(summary.query_one("#sum-confusion").render())
        assert "epoch 12" in confusion
        assert "per-class accuracy" in str(summary.query_one("#sum-perclass").render())
        await press(pilot, "escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, RunSummaryScreen), what="back")
        assert view.table.highlighted == "sgd-lr0.1"


@async_test
async def test_live_rows_and_curves_update_every_second(runs):
    app = CompareApp(records(runs), "runs", charted=["live-run"])
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        await wait_until(pilot, lambda: view.table.row_count == 5, what="the table")
        assert str(view.table.get_cell("live-run", "epochs")) == "5/12"
        builds = view.loss_chart.builds
        append_epoch(runs / "live-run", 6, 0.11, 0.97)
        await wait_until(pilot, lambda: str(view.table.get_cell("live-run", "epochs")) == "6/12", timeout=5,
                         what="the live row")
        await wait_until(pilot, lambda: view.loss_chart.builds > builds, timeout=5, what="the chart")
        assert view.polls >= 1


@async_test
async def test_help_and_palette_list_the_compare_keys(runs):
    app = CompareApp(records(runs), "runs", poll=False)
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        await wait_until(pilot, lambda: view.table.row_count == 5, what="the table")
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Compare: next x axis", "Compare: filter runs…", "Compare: run in / out of the chart",
                "Quit"} <= titles
        footer = {b.action for _, b, _, _ in app.screen.active_bindings.values() if b.show}
        assert {"toggle_run", "open_run", "cycle_x", "toggle_smooth", "compare_log", "filter_runs"} <= footer
        await press(pilot, "question_mark")
        await wait_for_screen(pilot, HelpScreen, what="help")
        keys = dict(app.screen.key_lines)
        assert keys["x"].startswith("x axis") and "/" in keys and "q" in keys
        await press(pilot, "escape")
        await press(pilot, "q")
        await wait_until(pilot, lambda: app.return_value is not None, what="the app to exit")
    assert app.return_value == 0


@async_test
async def test_80x24_is_compact_with_the_diff_behind_its_key(runs):
    app = CompareApp(records(runs), "runs", poll=False)
    async with app.run_test(size=(80, 24)) as pilot:
        view = view_of(app)
        await wait_until(pilot, lambda: view.table.row_count == 5, what="the table")
        assert view.compact and not view.has_class("-diff")
        assert "dataset" not in view.table.columns and "best_val_loss" in view.table.columns
        assert view.diff.styles.display == "none"
        await press(pilot, "D")
        assert view.has_class("-diff") and view.diff.styles.display == "block"
        assert view.table.styles.display == "none"
        assert app.focused is view.diff  # the keys stay with the view
        await press(pilot, "x")
        assert view.state.x_axis == "step"
        await press(pilot, "D")
        assert not view.has_class("-diff") and isinstance(app.focused, RunsTable)


# --- Pilot: the training app's compare tab --------------------------------------------------------------------------


def _this_run_session(runs: Path) -> FakeSession:
    """A fake session of the fixture's live run, as if this app trained it."""
    started = make_event("started", name="live-run", run_dir=str(runs / "live-run"),
                         config={"model": "mlp", "dataset": "digits"},
                         dataset={"name": "digits", "task": "classification", "input_shape": [64],
                                  "class_names": [str(i) for i in range(10)]},
                         model="", layers=[{"name": "dense_1", "kind": "Dense", "output_shape": [10], "params": 650}],
                         steps_per_epoch=23, total_steps=276, epochs=12, batch_size=32, optimizer="adam",
                         hyperparams={"lr": 0.002}, lr=0.002, step=0, epoch=0)
    steps = [make_event("step", step=5 * i, epoch=5 * i / 23, loss=1.0 / i, accuracy=0.5, lr=0.002,
                        samples_per_second=1000.0) for i in range(1, 4)]
    return FakeSession([started, make_event("compiled", seconds=0.1), *steps], started=True)


@async_test
async def test_the_compare_tab_holds_this_run_against_earlier_ones(runs):
    fake = _this_run_session(runs)
    app = TuinetApp(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the history replayed")
        await press(pilot, "5")
        view = app.query_one(CompareView)
        await wait_until(pilot, lambda: view.state is not None and view.table.row_count == 5, what="runs loaded")
        assert app.active_tab == "compare" and view.active
        st = view.state
        assert st.this_run == "live-run"
        # this run and the three most recent earlier runs of its dataset are in the chart at first
        assert [r.name for r in st.charted()] == ["live-run", "crashed-run", "sgd-lr0.1", "adam-lr0.01-dropout"]
        assert "this run" in str(view.table.get_cell("live-run", "name"))
        assert "(this run)" in legend_text(st).plain
        assert isinstance(app.focused, RunsTable)
        # the compare keys work here; space toggles the run instead of pausing
        await press(pilot, "x")
        assert st.x_axis == "step"
        await press(pilot, "down", "space")
        assert "crashed-run" not in st.slots and not [c for c in fake.sent if c["command"] == "pause"]
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert "Compare: next x axis" in titles and "Pause training" in titles
        # enter on this run goes back to its dashboard
        await press(pilot, "up", "enter")
        await wait_until(pilot, lambda: app.active_tab == "dashboard", what="the dashboard")
        assert not view.active
        await press(pilot, "c")
        await wait_until(pilot, lambda: app.active_tab == "compare", what="the compare tab again")
        await press(pilot, "question_mark")
        await wait_for_screen(pilot, HelpScreen, what="help")
        assert ("v", "curves: validation → train → both") in app.screen.key_lines


@async_test
async def test_the_compare_tab_at_80x24_keeps_its_keys_with_the_diff_shown(runs):
    fake = _this_run_session(runs)
    app = TuinetApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the history replayed")
        await press(pilot, "c")
        view = app.query_one(CompareView)
        await wait_until(pilot, lambda: view.state is not None and view.table.row_count == 5, what="runs loaded")
        await wait_until(pilot, lambda: view.compact and isinstance(app.focused, RunsTable), what="table focused")
        await press(pilot, "D")
        await wait_until(pilot, lambda: view.has_class("-diff") and app.focused is view.diff, what="the diff shown")
        await press(pilot, "m")
        await wait_until(pilot, lambda: view.state.smooth, what="smoothing on")
        await press(pilot, "1")
        await wait_until(pilot, lambda: app.active_tab == "dashboard" and not view.active, what="the dashboard")
        await press(pilot, "space")  # space is pause again on the dashboard
        await wait_until(pilot, lambda: "pause" in fake.kinds(), what="pause sent")


@async_test
async def test_enter_on_a_live_detached_run_leaves_to_attach_to_it(runs):
    """A live run with a control socket (a detached one): Enter ends the Compare app with that run to attach to
    (run_compare_app then opens the viewer and comes back); the charted runs are kept for the return."""
    import json
    import socket

    sock_path = runs / "live-run" / "control.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    status_path = runs / "live-run" / "status.json"
    status = json.loads(status_path.read_text())
    status_path.write_text(json.dumps({**status, "socket": str(sock_path)}))
    try:
        app = CompareApp(records(runs), "runs", poll=False)
        async with app.run_test(size=SIZE) as pilot:
            view = view_of(app)
            await wait_until(pilot, lambda: view.table.row_count == 5, what="the table")
            assert view.table.highlighted == "live-run"
            charted = [r.name for r in app.state.charted()]
            await press(pilot, "enter")
            await wait_until(pilot, lambda: app.return_value is not None, what="the app to leave for the viewer")
        assert app.attach_to is not None and app.attach_to.name == "live-run"
        assert app.charted_names == charted
    finally:
        listener.close()


@pytest.mark.slow
def test_b_branches_the_highlighted_run_into_a_new_detached_run(tmp_path):
    """b asks for the branch's options (suggesting the run, a name and more epochs), starts it with
    `tuinet train --detach --from`, and the new run joins the table and the chart with its parent recorded. The
    suggestion has no --lr: the branch goes on at the lr the run had reached (here set live to 0.0042), as
    `tuinet train --from` does; suggesting the configured lr (0.002) silently undid live changes and rollbacks."""
    import json
    import subprocess
    import sys

    from tuinet.app.screens.dialogs import BranchDialog
    from tuinet.training.config import TrainConfig
    from tuinet.training.trainer import Trainer

    import queue

    runs_dir = tmp_path / "branchruns"
    parent = Trainer(TrainConfig(dataset="digits", model="16", epochs=2, lr=0.002, runs_dir=str(runs_dir),
                                 name="base"))
    parent.commands = queue.Queue()
    parent.commands.put({"command": "set_lr", "lr": 0.0042})  # a live change, as `L` makes it
    parent.run()
    app = CompareApp(load_runs(runs_dir), str(runs_dir), poll=False)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            view = view_of(app)
            await wait_until(pilot, lambda: view.table.row_count == 1, what="the table")
            await press(pilot, "b")
            await wait_for_screen(pilot, BranchDialog, what="the branch dialog")
            suggestion = app.screen.query_one("#branch-input").value
            assert suggestion == "--from base --name base-branch --epochs 4"
            await press(pilot, "enter")
            await wait_until(pilot, lambda: app.state.record("base-branch") is not None, what="the branch",
                             timeout=180)
            assert "base-branch" in [r.name for r in app.state.charted()]

    try:
        asyncio.run(scenario())
        config = json.loads((runs_dir / "base-branch" / "config.json").read_text())
        assert config["parent"]["run"] == "base" and config["parent"]["epoch"] == 2
        assert config["lr"] == pytest.approx(0.0042), "the branch goes on at the lr the parent had reached"
    finally:
        subprocess.run([sys.executable, "-m", "tuinet.cli", "stop", "base-branch", "--runs-dir", str(runs_dir)],
                       capture_output=True, timeout=120)


def test_the_title_and_the_info_line_count_one_run_as_one_run(runs):
    one = records(runs)[:1]
    app = CompareApp(one, "runs", poll=False)
    assert app.title_line() == "1 run in runs"
    assert CompareApp(records(runs), "runs", poll=False).title_line() == f"{len(records(runs))} runs in runs"

    async def run():
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.2)
            assert str(view_of(app).info_text()).startswith("1 run ")

    asyncio.run(run())
