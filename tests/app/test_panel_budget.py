"""The inspector's and predictions' panels while figures stream in: each drawn within a share of the time, and no
layout pass of the whole screen when a panel's size cannot have changed.

Drawn on every tick, those panels took 30% of a core from training (``python -m benchmarks.app_cost --ab --tab
inspector``); the figures are in the README. These tests check the mechanism, never a timing.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import App
from textual.widgets import Static

import tuinet.app.app as app_module
from tests.app.fakes import FakeSession, opening
from tuinet.app.app import TuinetApp
from tuinet.app.testing import async_test, press, wait_until
from tuinet.app.widgets.cells import update_static
from tuinet.app.widgets.inspector import WidthText, diverging_lines
from tuinet.protocol import make_event
from tuinet.training.config import TrainConfig

SIZE = (120, 40)


def _layer_stats(step: int, grad: float) -> dict:
    return make_event("layer_stats", step=step, epoch=0.1, layers=[
        {"name": "dense_1", "kind": "Dense", "grad_norm": grad, "weight_mean": 0.0, "weight_std": 0.1}])


@async_test
async def test_layer_figures_arriving_faster_than_the_budget_are_drawn_once_then_the_latest(monkeypatch):
    monkeypatch.setattr(app_module, "PANEL_MIN", 3600.0)  # no redraw of a drawn panel within the test
    fake = FakeSession(opening(dataset="mnist"))
    app = TuinetApp(fake, config=TrainConfig(dataset="mnist", epochs=100))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        await press(pilot, "2")
        # the tab shown and its opening redraw done before the figures arrive, with the panel's budget then spent:
        # whether that redraw had happened by the first _tick below depended on the load (a full suite: it had, and
        # nothing was drawn)
        await wait_until(pilot, lambda: app.active_tab == "inspector", what="the inspector tab")
        await pilot.pause()
        app._panel_due.clear()
        insp = app._insp
        drawn: list[float] = []
        update_table = insp.update_table

        def counting(st):
            drawn.append(st.layer_rows["dense_1"]["grad_norm"])
            update_table(st)
        insp.update_table = counting
        for i in range(1, 21):
            fake.emit(_layer_stats(15 + i, float(i)))
            app._tick()
        assert drawn == [1.0], "the first figures are drawn, the next 19 wait for the panel's budget"
        assert "layers" in app.state.dirty, "what waits stays to be drawn"
        app._panel_due.clear()  # the budget has passed
        app._tick()
        assert drawn == [1.0, 20.0], "then the latest figures are drawn, once"
        fake.emit(_layer_stats(40, 21.0))
        await press(pilot, "1")
        await press(pilot, "2")  # a tab opened shows its latest figures at once
        await wait_until(pilot, lambda: drawn[-1] == 21.0, what="the redraw on opening the tab")
        await press(pilot, "space")
        await wait_until(pilot, lambda: app.state.paused, what="the pause")
        fake.emit(_layer_stats(41, 22.0))  # (figures sent before the pause took effect)
        app._tick()
        assert drawn[-1] == 22.0, "paused, no training to slow down: drawn at once"


@async_test
async def test_a_panel_waits_in_proportion_to_what_drawing_it_cost():
    fake = FakeSession(opening(dataset="mnist"))
    app = TuinetApp(fake, config=TrainConfig(dataset="mnist", epochs=100))
    async with app.run_test(size=SIZE) as pilot:
        calls = []
        cpu = 0.04

        def draw():
            calls.append(1)
            c0 = time.thread_time()
            while time.thread_time() - c0 < cpu:  # the drawing's CPU time is its cost
                pass
        t0 = time.perf_counter()
        assert app._draw_panel("test", draw, t0)
        assert not app._draw_panel("test", draw, time.perf_counter()), "not again before its cost is known"
        await wait_until(pilot, lambda: app.panel_costs.get("test"), what="the cost once painted")
        due = app._panel_due["test"] - t0
        assert app.panel_costs["test"][0] >= cpu
        assert cpu / app_module.PANEL_SHARE <= due <= app_module.PANEL_MAX + 1.0
        assert not app._draw_panel("test", draw, app._panel_due["test"] - 0.01) and calls == [1]
        assert app._draw_panel("test", draw, app._panel_due["test"]) and calls == [1, 1]


class _Panels(App):
    def compose(self):
        yield Static(id="s")
        yield WidthText(id="w")


@async_test
async def test_text_of_the_same_extent_is_repainted_without_a_layout_pass():
    app = _Panels()
    async with app.run_test(size=(60, 20)) as pilot:
        s, w = app.query_one("#s", Static), app.query_one("#w", WidthText)
        update_static(s, Text("one\ntwo"))
        await pilot.pause()
        layouts: list[bool] = []
        update = s.update

        def spy(content="", *, layout=True):
            layouts.append(layout)
            update(content, layout=layout)
        s.update = spy
        update_static(s, Text("one\ntwo"))
        assert layouts == [], "the same text is not drawn again"
        update_static(s, Text("uno\ndos"))
        assert layouts == [False], "as many lines: no layout pass"
        update_static(s, Text("one\ntwo\nthree"))
        assert layouts == [False, True], "a line more: the widget grows"
        update_static(s, Text("x" * 80 + "\ntwo\nthree"))
        assert layouts[-1] is True, "a line that wraps: its height is Textual's to find"
        update_static(s, Text("ab\ncd"), auto_width=True)
        update_static(s, Text("ab\ncde"), auto_width=True)
        assert layouts[-1] is True, "a widget as wide as its text: a longer line widens it"
        assert str(s.render()) == "ab\ncde"

        w.show(lambda width: Text("a\nb"))
        await pilot.pause()
        refreshes: list[bool] = []
        refresh = w.refresh

        def spy_refresh(*regions, layout=False, **kw):
            refreshes.append(layout)
            return refresh(*regions, layout=layout, **kw)
        w.refresh = spy_refresh
        w.show(lambda width: Text("c\nd"))
        assert refreshes == [False]
        w.show(lambda width: Text("c\nd\ne"))
        assert refreshes == [False, True]
        await pilot.pause()
        assert w.size.height == 3


def test_weight_pictures_are_drawn_as_runs_of_equal_cells():
    import numpy as np

    img = np.zeros((6, 8))
    img[2:4, 3:5] = [[1.0, -1.0], [0.5, 0.5]]
    lines = diverging_lines(img, 1.0)
    assert [line.plain for line in lines] == ["▀" * 8] * 3
    assert len(lines[0].spans) == 1, "a row of zeros is one span"
    assert len(lines[1].spans) == 4, "zeros, two distinct cells, zeros"


def test_cells_of_one_style_in_a_row_make_one_span():
    from rich.style import Style

    from tuinet.app.widgets.boundary import boundary_text
    from tuinet.app.widgets.cells import append_cell

    a, b = Style(color="red"), Style(color="blue")
    t = Text()
    for ch, st in [("x", a), ("y", a), ("z", b), (" ", None), ("w", b), ("v", b)]:
        append_cell(t, ch, st)
    assert t.plain == "xyz wv"
    assert [(s.start, s.end, s.style) for s in t.spans] == [(0, 2, a), (2, 3, b), (4, 6, b)]
    # a map of one region: a span per row instead of one per cell
    region = boundary_text({"classes": [[1] * 8] * 8, "confidence": [[0.9] * 8] * 8}, 20, 4, num_classes=2)
    assert region.plain == "\n".join(["▀" * 20] * 4) and len(region.spans) == 4
