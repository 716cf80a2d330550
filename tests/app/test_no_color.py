"""Colour is never the only carrier: train and validation curves, and negative and positive weights, stay apart with
``NO_COLOR`` and in 16-colour terminals (``TERM=xterm``, ``screen``)."""

from __future__ import annotations

import asyncio

import numpy as np
from rich.color import ColorSystem

from tests.app.test_snapshots import mnist_events, replay_app
from tuinet.app.testing import press, wait_until
from tuinet.app.widgets.charts import ChartData, Line, line_key, render_chart, render_text
from tuinet.app.widgets.dashboard import train_val_lines
from tuinet.app.widgets.inspector import (NEG_GLYPHS, POS_GLYPHS, WidthText, diverging_lines, picture_legend,
                                          picture_mode)


def test_validation_is_dotted_with_markers_and_train_is_solid():
    x = list(range(50))
    train, val = train_val_lines(x, [1 / (i + 1) for i in x], x[::5], [1.2 / (i + 1) for i in x[::5]])
    assert not train.dotted and train.marker is None
    assert val.dotted and val.marker == "•"
    plain = render_text(ChartData([val]), 60, 12).plain
    assert plain.count("•") >= 5
    assert "•" not in render_text(ChartData([train]), 60, 12).plain
    assert line_key(train).plain == "━━━" and line_key(val).plain == "┅•┅"


def test_dotted_lines_draw_fewer_dots_than_solid_ones():
    x = list(range(100))
    y = [i * 0.5 for i in x]
    solid = render_text(ChartData([Line("a", x, y)]), 60, 12).plain
    dotted = render_text(ChartData([Line("a", x, y, dotted=True)]), 60, 12).plain

    def dots(s):
        return sum(bin(ord(c) - 0x2800).count("1") for c in s if 0x2800 < ord(c) <= 0x28FF)

    assert 0.3 * dots(solid) < dots(dotted) < 0.7 * dots(solid)


def test_markers_of_overlaid_lines_are_staggered():
    x = list(range(200))
    a = Line("a", x, [1.0] * 200, marker="●", marker_every=8, marker_offset=0)
    b = Line("b", x, [1.0] * 200, marker="▲", marker_every=8, marker_offset=4)
    rows = render_chart(ChartData([a, b], ylim=(0, 2)), 60, 10)
    text = "".join(seg.text for strip in rows for seg in strip)
    assert text.count("●") >= 5 and text.count("▲") >= 5  # the same y: both glyphs still show


def test_the_dashboard_tells_train_from_validation_without_colour(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = replay_app(mnist_events())

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            chart = app.query_one("#loss-chart")
            await wait_until(pilot, lambda: chart.builds > 0 and chart.data.lines and chart.data.lines[1].y,
                             what="the loss chart")
            drawn = "".join(seg.text for y in range(chart.content_size.height) for seg in chart.render_line(y))
            return drawn, str(chart.border_title)

    drawn, title = asyncio.run(run())
    assert app.no_color
    assert "•" in drawn and "━━━" in title and "┅•┅" in title and "val" in title


def test_picture_modes_follow_the_terminal():
    assert picture_mode(True, "truecolor") == "glyph"
    assert picture_mode(False, None) == "glyph"
    assert picture_mode(False, "standard") == "ansi16" and picture_mode(False, "windows") == "ansi16"
    assert picture_mode(False, "256") == "color" and picture_mode(False, "truecolor") == "color"
    assert "yellow" in picture_legend("ansi16") and POS_GLYPHS[-1] in picture_legend("glyph")


def test_weights_keep_their_sign_in_16_colours():
    """In 16 colours the old gradient turned to near-black; now negative and positive weights land on different
    standard colours at every strength but zero."""
    img = np.array([[-1.0, -0.5, -0.3, 0.0, 0.3, 0.5, 1.0]] * 2)
    (line,) = diverging_lines(img, 1.0, "ansi16")
    colors = [span.style.color.downgrade(ColorSystem.STANDARD).number for span in line.spans]
    neg, zero, pos = colors[:3], colors[3], colors[4:]
    assert zero == 0
    assert set(neg).isdisjoint(pos) and 0 not in neg and 0 not in pos
    assert len(set(neg)) == 2 and len(set(pos)) == 2  # two strengths a side


def test_weights_keep_their_sign_without_colour():
    img = np.array([[-1.0, -0.6, -0.1, 0.0, 0.1, 0.6, 1.0]] * 2)
    (line,) = diverging_lines(img, 1.0, "glyph")
    assert line.plain == f"{NEG_GLYPHS[3]}{NEG_GLYPHS[1]}   {POS_GLYPHS[1]}{POS_GLYPHS[3]}"
    assert not line.spans  # no colour at all


def test_the_inspector_draws_weight_glyphs_with_no_color(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = replay_app(mnist_events())

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await press(pilot, "2")
            pics = app.query_one("#layer-pictures", WidthText)
            await wait_until(pilot, lambda: "unit 0" in pics.text_for(80).plain, what="the weight pictures")
            return pics.text_for(80).plain

    plain = asyncio.run(run())
    assert "▀" not in plain
    assert any(g in plain for g in POS_GLYPHS) and any(g in plain for g in NEG_GLYPHS)
    assert "negative" in plain and "positive" in plain
