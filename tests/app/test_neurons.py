"""The neuron maps of the Boundary tab: layout, selection (click, keys, escape) and snapshots at 80x24 and 120x40.

The event stream is deterministic (the spiral run of test_snapshots, its boundary event given neuron maps computed
here with NumPy in the format of tuinet.training.neurons), so the screens are the same on every machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.app.test_snapshots import replay_app, spiral_events
from tests.app.test_snapshots import truecolor, utc  # noqa: F401  (autouse: UTC clock, a truecolor terminal)
from tuinet.app.testing import async_test, press, wait_until
from tuinet.app.widgets.neurons import NeuronMaps, layout, unit_levels
from tuinet.app.widgets.plane import PlaneMap


def _layer(label, values, names=None):
    """A layer of the neuron event from raw unit outputs (units, size, size)."""
    scales = np.abs(values).reshape(len(values), -1).max(axis=1)
    pct = np.round(100 * values / np.where(scales > 0, scales, 1)[:, None, None]).astype(int)
    return {"label": label, "units": len(values), "names": names, "scales": [round(float(s), 4) for s in scales],
            "maps": pct.tolist()}


def neuron_event(size: int = 20, hidden=(6, 4)) -> dict:
    rng = np.random.default_rng(2)
    xs = np.linspace(-1.1, 1.1, size)
    gx, gy = np.meshgrid(xs, xs[::-1])
    inputs = np.stack([gx, gy, gx * gx, gy * gy, gx * gy])
    layers = [_layer("inputs", inputs, ["x", "y", "x²", "y²", "xy"])]
    prev = inputs
    for i, n in enumerate(hidden):
        w = rng.normal(size=(n, len(prev)))
        out = np.tanh(np.tensordot(w, prev, axes=1) + rng.normal(size=(n, 1, 1)) * 0.3)
        layers.append(_layer(f"{i + 1}: Dense({n}) Tanh", out))
        prev = out
    return {"size": size, "layers": layers, "truncated": False}


def plane_events() -> list[dict]:
    events = spiral_events()
    boundary = next(e for e in events if e["event"] == "boundary")
    boundary["neurons"] = neuron_event()
    return events


def test_layout_fits_without_overlap():
    for units, (w, h) in (([2, 8, 8], (38, 17)), ([7, 16, 16, 16], (56, 36)), ([2, 32, 32], (30, 10))):
        lay = layout(units, w, h)
        taken = set()
        for (li, u), (x, y) in lay.cells.items():
            assert 0 <= x and x + lay.pic_w <= w and 1 <= y and y + lay.pic_h <= h
            cells = {(x + i, y + j) for i in range(lay.pic_w) for j in range(lay.pic_h)}
            assert not cells & taken
            taken |= cells
        assert lay.pic_w == 2 * lay.pic_h
        # every layer shows at least one unit; a roomy panel shows them all
        assert {li for li, _ in lay.cells} == set(range(len(units)))
    roomy = layout([2, 8, 8], 60, 36)
    assert len(roomy.cells) == 18 and roomy.pic_h >= 3
    # the mlp preset (256, 128) at 80x24: readable pictures of some units rather than dots of all
    wide = layout([2, 256, 128], 38, 17)
    shown = [sum(1 for li, _ in wide.cells if li == i) for i in range(3)]
    assert wide.pic_h >= 2 and shown[0] == 2 and min(shown[1:]) >= 8


def test_hidden_units_share_their_layers_scale_inputs_their_own():
    layer = {"label": "1: Dense(2) Tanh", "scales": [1.0, 0.1], "maps": [[[100, -50]], [[100, 0]]]}
    assert unit_levels(layer, 0) == [[1.0, -0.5]]
    assert unit_levels(layer, 1) == [[pytest.approx(0.1), 0.0]]  # a nearly silent unit looks nearly silent
    inputs = {"label": "inputs", "scales": [3.0, 9.0], "maps": [[[100]], [[-100]]], "names": ["x", "x²"]}
    assert unit_levels(inputs, 1) == [[-1.0]]


def test_without_colour_the_sign_is_a_glyph_family():
    from tuinet.app.widgets.neurons import map_text

    row = [[-1.0, -0.5, 0.0, 0.5, 1.0]]
    assert map_text(row, 5, 1, color=False).plain == "█▒ :#"
    assert map_text(row, 5, 1, color=False, points={(0, 2): 1}).plain == "█▒○:#"
    colored = map_text(row, 5, 1)
    assert colored.plain == "▀▀▀▀▀" and len({str(s.style) for s in colored.spans}) == 5


@async_test
async def test_click_and_keys_select_a_unit_and_escape_goes_back():
    app = replay_app(plane_events())
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, "4")
        maps = app.query_one(NeuronMaps)
        large = app.query_one(PlaneMap)
        await wait_until(pilot, lambda: maps._layout is not None, what="the neuron maps drawn")
        boundary = large.render()
        styles = lambda text: [(span.start, span.end, str(span.style)) for span in text.spans]  # noqa: E731
        x, y = maps._layout.cells[(1, 2)]
        await pilot.click(NeuronMaps, offset=(x + 1, y))
        await wait_until(pilot, lambda: maps.selected == (1, 2), what="the click's selection")
        assert large.selected == (1, 2)
        legend = str(app.query_one("#boundary-legend").render())
        assert "layer 1 (Dense(6) Tanh), unit 3" in legend
        assert styles(large.render()) != styles(boundary)  # the unit's map (its colours), with the points on top
        await press(pilot, "down", "right")
        await wait_until(pilot, lambda: maps.selected == (2, 3), what="down, right")
        await press(pilot, "left", "left")
        await wait_until(pilot, lambda: maps.selected == (0, 3), what="left, left")
        assert "input y²" in str(app.query_one("#boundary-legend").render())
        await press(pilot, "escape")
        await wait_until(pilot, lambda: maps.selected is None, what="escape")
        assert large.selected is None
        assert styles(large.render()) == styles(boundary)
        assert "step 1000" in str(app.query_one("#boundary-legend").render())


def test_neuron_maps(snap_compare):
    assert snap_compare(replay_app(plane_events()), terminal_size=(120, 40), press=["4"])


def test_neuron_maps_80x24(snap_compare):
    assert snap_compare(replay_app(plane_events()), terminal_size=(80, 24), press=["4"])


def test_neuron_selected_80x24(snap_compare):
    """A unit drawn large: tab focuses the neuron panel, down selects the first hidden unit."""
    assert snap_compare(replay_app(plane_events()), terminal_size=(80, 24), press=["4", "tab", "down"])



def _answer():
    """A trainer's answer to a snapshot command: a boundary event."""
    from tuinet.protocol import make_event

    boundary = next(e for e in plane_events() if e["event"] == "boundary")
    return make_event("boundary", **{k: v for k, v in boundary.items() if k not in ("event", "v", "time")})


async def _on_the_boundary_tab(pilot, app, fake) -> None:
    """Past a scripted opening, on the boundary tab, its first snapshot asked for."""
    await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
    await press(pilot, "4")
    await wait_until(pilot, lambda: fake.kinds().count("snapshot") == 1, what="the first ask")


@async_test
async def test_the_boundary_tab_asks_for_fresh_maps_once_each_answer_came():
    from tests.app.test_app import fake_app

    app, fake = fake_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await _on_the_boundary_tab(pilot, app, fake)
        for n in (2, 3):  # each answer (a boundary event) lets the tab ask again, at most twice a second
            fake.emit(_answer())
            await wait_until(pilot, lambda n=n: fake.kinds().count("snapshot") == n, what=f"ask {n}")
            assert app._plane_asked_for is app.state.boundary  # and now it waits for the next answer
        await press(pilot, "1")
        fake.emit(_answer())
        await wait_until(pilot, lambda: app.state.boundary is not app._plane_asked_for, what="the answer folded in")
        app._tick()
        assert fake.kinds().count("snapshot") == 3, "another tab shown: no more asks"


@async_test
async def test_fresh_maps_wait_until_the_app_has_time_to_draw_them(monkeypatch):
    import tuinet.app.app as app_module
    from tests.app.test_app import fake_app

    monkeypatch.setattr(app_module, "PANEL_MIN", 3600.0)  # a drawn boundary waits for the whole test
    app, fake = fake_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await _on_the_boundary_tab(pilot, app, fake)
        fake.emit(_answer())
        await wait_until(pilot, lambda: app._plane.event is app.state.boundary, what="the answer drawn")
        app._plane_asked = 0.0  # past the trainer's own pace
        app._tick()
        assert fake.kinds().count("snapshot") == 1, "no new maps while the drawn ones wait for the app's budget"
        # then the next maps are asked for once the budget allows; if the panel has something left to draw (a late
        # resize or event on a loaded machine marked it), that drawing comes first and takes the budget again
        asks = []
        for _ in range(3):
            app._panel_due.clear()
            redraw = "boundary" in app.state.dirty
            app._tick()
            asks.append((redraw, fake.kinds().count("snapshot")))
            if asks[-1][1] == 2:
                break
        assert asks[-1][1] == 2, f"then the next maps are asked for: {asks}"
        assert all(redraw for redraw, n in asks[:-1]), f"a tick without a drawing asked for nothing: {asks}"
