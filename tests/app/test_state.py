"""The app's pure parts: bounded series, folding events into RunState, text renderers (no Textual app needed)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from rich.text import Text

from tuinet.app.widgets.boundary import boundary_text
from tuinet.app.widgets.charts import ChartData, Line, decimate, nice_ticks, render_chart, render_text
from tuinet.app.screens.dialogs import parse_lr
from tuinet.app.widgets.inspector import diverging_lines, histogram_text, sparkline, tile
from tuinet.app.widgets.predictions import caption, confusion_text
from tuinet.app.replay import ReplaySession
from tuinet.app.state import RunState, Series, smooth
from tuinet.formatting import fmt_duration, fmt_num


def ev(kind, **fields):
    return {"event": kind, "v": 1, "time": 1000.0 + fields.pop("t", 0.0), **fields}


def started(**over):
    e = ev("started", name="r", run_dir="/tmp/r", config={"model": "mlp", "dataset": "mnist"},
           dataset={"name": "mnist", "task": "classification", "input_shape": [28, 28, 1], "class_names": list("0123")},
           model="", layers=[{"name": "dense_1", "kind": "Dense", "output_shape": [4], "params": 20}],
           steps_per_epoch=10, total_steps=100, epochs=10, batch_size=64, optimizer="adam",
           hyperparams={"lr": 0.001, "betas": [0.9, 0.999]}, lr=0.001, step=0, epoch=0)
    e.update(over)
    return e


def test_series_stays_bounded_and_keeps_recent_points_exact():
    s = Series(cap=100)
    for i in range(100_000):
        s.append(i, float(i))
    xs, ys = s.points()
    assert len(xs) <= 100 and len(s.x) < 100
    assert s.last == 99_999.0 and xs[-1] > 99_000  # the newest value is kept, the chart reaches the end
    assert xs == sorted(xs)  # still in order
    assert xs[0] < 1000  # and still covers the start of the run
    gaps = np.diff(s.x)
    assert gaps.max() == pytest.approx(gaps.min()), "every stored point covers the same number of raw points"
    v = s.version
    s.append(5, float("nan"))
    s.append(5, None)
    assert s.version == v and s.last == 99_999.0, "non-finite values are skipped"


def test_runstate_folds_a_run():
    st = RunState()
    st.apply(started())
    assert st.status == "running" and st.optimizer == "adam" and st.lr == 0.001
    st.apply(ev("compiling"))
    assert st.status == "compiling"
    for i in range(1, 6):
        st.apply(ev("step", t=i, step=i * 2, epoch=i * 0.2, loss=1.0 / i, accuracy=0.1 * i, lr=0.001,
                    samples_per_second=500.0))
    assert st.status == "running" and st.step == 10 and len(st.train_loss) == 5
    assert st.train_loss.points()[1][-1] == pytest.approx(0.2)
    assert st.steps_per_second == pytest.approx(2.0)
    assert st.eta_seconds == pytest.approx(45.0)
    st.apply(ev("epoch", epoch=1, step=10, train_loss=0.5, train_accuracy=0.5, val_loss=0.4, val_accuracy=0.6))
    assert st.val_loss_s.points()[1] == [0.4] and st.best_val_accuracy == 0.6
    st.apply(ev("paused", step=12, reason="user"))
    assert st.paused and st.status == "paused" and st.step == 12 and st.eta_seconds is None
    st.apply(ev("lr_changed", lr=0.002, old_lr=0.001, source="user"))
    assert st.lr == 0.002
    st.apply(ev("optimizer_changed", name="rmsprop", hyperparams={"lr": 0.002, "alpha": 0.99}, describe="rmsprop"))
    assert st.optimizer == "rmsprop" and st.hyperparams["alpha"] == 0.99
    st.apply(ev("resumed", step=12))
    assert not st.paused and st.status == "running"
    st.apply(ev("layer_stats", layers=[{"name": "dense_1", "grad_norm": 1e4, "flag": "exploding"}]))
    assert list(st.grad_history["dense_1"]) == [1e4]
    st.apply(ev("diverged", step=13, loss=None, lr=0.002, new_lr=0.001, action="paused"))
    assert st.status == "diverged"
    st.apply(ev("finished", test_accuracy=0.9, test_loss=0.3, steps=100))
    assert st.done and st.status == "finished"
    texts = [text for _, _, text in st.log]
    for needle in ("started", "paused", "lr 0.001 -> 0.002", "optimizer", "exploding", "diverged", "finished"):
        assert any(needle in t for t in texts), needle
    assert st.log_count == len(st.log)


def test_formatting_helpers():
    assert fmt_num(None) == "-" and fmt_num(0.5) == "0.5" and fmt_num(0.0001) == "0.0001"
    assert fmt_num(1234567.0) == "1.23e+06" and fmt_num(3) == "3"
    assert fmt_duration(5) == "5s" and fmt_duration(125) == "2m05s" and fmt_duration(3725) == "1h02m"
    assert fmt_duration(None) == "-"
    assert smooth([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])
    assert parse_lr("3e-4") == 3e-4 and parse_lr("0") is None and parse_lr("x") is None and parse_lr("nan") is None


def test_decimate_and_chart():
    x = list(range(1000))
    xs, ys = decimate(x, [float(v) for v in x], 100)
    assert len(xs) == 100 and xs[-1] == 999 and ys[0] < 10
    assert ys[-2] > ys[0]  # bucket means stay in order
    text = render_text(ChartData([Line("a", x, [1.0 / (v + 1) for v in x])], log_y=True), 60, 12).plain
    rows = text.splitlines()
    assert len(rows) == 12 and all(len(r) == 60 for r in rows)
    assert "0.001" in text and "1┤" in text  # log ticks: powers of ten from 1 down to 1/1000
    assert "waiting" in render_text(ChartData([]), 40, 8).plain


def test_chart_draws_the_line_where_the_data_is():
    # a rising line: dots start low on the left and end high on the right, in the given colour
    data = ChartData([Line("up", [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], 45)])
    strips = render_chart(data, 40, 10)
    plot = [strip.text for strip in strips[:-2]]
    width = len(plot[0])
    first_dot = [min((c for c, ch in enumerate(r) if "\u2800" < ch <= "\u28ff"), default=width) for r in plot]
    assert first_dot[-1] < first_dot[0]  # bottom row's dots are left of the top row's
    assert all(first_dot[i] >= first_dot[i + 1] for i in range(len(plot) - 1) if first_dot[i] < width)
    dots = [seg for strip in strips[:-2] for seg in strip if any("\u2800" < ch <= "\u28ff" for ch in seg.text)]
    assert dots and all(seg.style.color.number == 45 for seg in dots)
    assert strips[-2].text.strip().startswith("└") and "4" in strips[-1].text
    assert all(strip.cell_length == 40 for strip in strips)


def test_nice_ticks():
    ticks, step = nice_ticks(0.03, 2.4, 4)
    assert step == 0.5 and ticks == [0.5, 1.0, 1.5, 2.0]
    ticks, step = nice_ticks(0.9, 0.98, 4)
    assert step == 0.02 and ticks[0] == pytest.approx(0.9) and ticks[-1] == pytest.approx(0.98)


def test_sparkline_histogram_pictures():
    assert sparkline([1, 10, 100, 1000]) == "▁▃▆█"  # log scale: equal steps per decade
    assert sparkline([]) == ""
    h = histogram_text([0, 5, 10], [-1.0, 0.0, 1.0, 2.0], height=4)
    assert len(h.plain.splitlines()) == 5 and "-1" in h.plain
    lines = diverging_lines(np.random.default_rng(0).normal(size=(28, 28)), 3.0)
    assert len(lines) == 14 and all(ln.cell_len == 28 for ln in lines)
    laid = tile([lines, lines, lines], ["a", "b", "c"], width=60)
    assert laid.plain.splitlines()[0].count("▀") == 56  # two per row at width 60, the third wraps


def test_boundary_and_predictions_text():
    cls = np.zeros((24, 48), dtype=int)
    cls[:, 24:] = 1
    event = {"classes": cls.tolist(), "confidence": np.full((24, 48), 0.9).tolist(), "xrange": [0, 1],
             "yrange": [0, 1], "points": [[0.1, 0.5, 0], [0.9, 0.5, 1]]}
    t = boundary_text(event, 40, 10, 2)
    assert len(t.plain.splitlines()) == 10 and t.plain.count("●") == 2
    mono = boundary_text(event, 40, 10, 2, color=False)
    assert "●" in mono.plain and "○" in mono.plain, "classes differ by glyph without colour"
    m = [[5, 1], [0, 4]]
    ct = confusion_text({"matrix": m, "class_names": ["a", "b"], "epoch": 1})
    assert "90.00%" in ct.plain
    assert caption({"label": 3, "pred": 3, "confidence": 0.97}, [str(i) for i in range(10)]).plain == "3 ✓ 97%"
    assert caption({"label": 4, "pred": 9, "confidence": 0.8}, [str(i) for i in range(10)]).plain == "9✗4 80%"


def test_replay_session_records_commands_and_state():
    r = ReplaySession([started(), ev("weights", layers=[]), ev("lr_changed", lr=0.01)])
    assert [e["event"] for e in r.history] == ["started", "lr_changed"] and "weights" in r.last
    assert r.state["lr"] == 0.01
    r = ReplaySession([started(), ev("batch_size_changed", batch_size=32, previous=32, pending=256, step=3),
                       ev("batch_size_changed", batch_size=256, previous=32, pending=None, step=10)])
    assert r.state["batch_size"] == 256
    got = []
    r.add_listener(got.append)
    r.emit(ev("step", step=1))
    assert got and r.history[-1]["event"] == "step"
    from tuinet.protocol import make_command

    r.send(make_command("pause"))
    assert r.sent[0]["command"] == "pause"


def test_every_session_the_app_is_given_has_the_session_interface():
    import types

    from tests.app.fakes import FakeSession
    from tuinet.protocol import Session
    from tuinet.remote.client import RemoteSession
    from tuinet.training.session import Session as InProcessSession

    replay = ReplaySession([started()])
    assert isinstance(replay, Session) and replay.started and not replay.running and replay.join(0)
    assert isinstance(FakeSession(), Session)
    assert isinstance(InProcessSession(types.SimpleNamespace(public_state=dict)), Session)
    # a RemoteSession needs a live trainer to connect to: its class has every member but ``last`` (set on connect)
    members = ("started", "running", "state", "history", "start", "add_listener", "remove_listener", "send", "join")
    assert all(hasattr(RemoteSession, m) for m in members)


def test_event_log_keeps_the_newest_lines_and_scrolls_back():
    asyncio.run(_event_log_scenario())


async def _event_log_scenario():
    from textual.app import App

    from tuinet.app.widgets.eventlog import EventLog

    class LogApp(App):
        def compose(self):
            yield EventLog(max_lines=50)

    app = LogApp()
    async with app.run_test(size=(40, 5)) as pilot:
        log = app.query_one(EventLog)
        for i in range(60):
            log.write(Text(f"line {i}"))
        await pilot.pause()
        rows = [log.render_line(y).text.rstrip() for y in range(5)]
        assert rows == [f"line {i}" for i in range(55, 60)]  # bottom-aligned, newest last
        log.focus()
        await pilot.press("up", "up")
        assert [t.plain for t in log.visible_lines()] == [f"line {i}" for i in range(53, 58)]
        assert "2 newer" in log.render_line(4).text
        log.write(Text("line 60"))  # scrolled back: the view stays on the same lines
        assert [t.plain for t in log.visible_lines()] == [f"line {i}" for i in range(53, 58)]
        await pilot.press("home")
        assert log.visible_lines()[0].plain == "line 11"  # the oldest kept (50 lines: 11..60)
        await pilot.press("end")
        assert log.visible_lines()[-1].plain == "line 60" and "newer" not in log.render_line(4).text


def test_compile_screen_counts_up_and_names_the_kernel(monkeypatch):
    import tuinet.app.state as state_mod

    clock = [100.0]
    monkeypatch.setattr(state_mod.time, "monotonic", lambda: clock[0])
    st = RunState()
    st.apply(started())
    st.apply(ev("compiling", message="compiling kernels"))
    assert st.compiling and st.compile_progress() == "0 s"
    clock[0] += 7.4
    st.apply(ev("compiling", message="compiling _conv_fwd", kernel="_conv_fwd", kernels_done=3, elapsed=7.3))
    assert st.compile_progress() == "7 s · _conv_fwd · 3 kernels done"
    assert sum("compiling kernels" in line[-1] for line in st.log) == 1  # one log line, not one per kernel
    clock[0] += 5.0
    assert st.compile_progress().startswith("12 s")  # counts up between events
    st.apply(ev("compiled", seconds=12.5))
    assert not st.compiling and st.compile_progress() == ""


def test_a_late_viewer_gets_the_elapsed_compile_time():
    st = RunState()
    st.apply(ev("compiling", message="compiling _mk3x32", kernel="_mk3x32", kernels_done=9, elapsed=20.0))
    assert st.compiling and st.compile_progress().startswith("20 s · _mk3x32")


def test_the_compile_line_counts_the_helper_process_kernels():
    st = RunState()
    st.apply(ev("compiling", message="compiling relu_forward", kernel="relu_forward", kernels_done=11, elapsed=9.0,
                helper_kernels=4))
    assert st.compile_progress().endswith("relu_forward · 11 kernels done (4 by the compile helper)")
    st.apply(ev("compiled", seconds=20.0, helper_kernels=6))
    assert "kernels ready in 20.0s (6 compiled by the compile helper)" in st.log[-1][-1]
