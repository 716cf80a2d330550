"""The Inspector's layer table fits its pane: full where its columns fit, compact (no type and output columns)
where they would not, decided by the rows' content, not by a fixed terminal width."""

from __future__ import annotations

from textual.widgets import DataTable

from tests.app.test_snapshots import mnist_events, replay_app
from tuinet.app.testing import async_test, wait_until
from tuinet.protocol import make_event


async def _inspector(pilot):
    app = pilot.app
    await wait_until(pilot, lambda: app.state.step > 0 and app.state.layer_rows, what="the replay")
    await pilot.press("2")
    await wait_until(pilot, lambda: app.active_tab == "inspector", what="the Inspector")
    await pilot.pause()
    return app._insp, app._insp.query_one(DataTable)


@async_test
async def test_the_layer_table_never_needs_a_horizontal_scrollbar():
    """At 104 columns the full table (its gradient history filled) was 4 columns wider than its pane, and upd/w and
    dead sat behind a scrollbar; now it is compact there and full at 120 and 80 compact, with no overflow."""
    for width, compact in ((80, True), (104, True), (120, False)):
        app = replay_app(mnist_events())
        async with app.run_test(size=(width, 40)) as pilot:
            insp, table = await _inspector(pilot)
            assert insp.compact is compact, width
            assert table.virtual_size.width <= table.scrollable_content_region.width, width
            labels = [str(c.label) for c in table.columns.values()]
            assert ("type" in labels) is not compact and "upd/w" in labels


@async_test
async def test_a_flag_column_that_would_not_fit_compacts_the_table():
    """A flagged layer adds the flag column: at 120 columns it then moves into the layer cell (the compact table)."""
    app = replay_app(mnist_events())
    async with app.run_test(size=(120, 40)) as pilot:
        insp, table = await _inspector(pilot)
        assert not insp.compact
        rows = [dict(r, name=name) for name, r in app.state.layer_rows.items()]
        rows[0]["flag"] = "exploding gradient"
        app.session.emit(make_event("layer_stats", step=app.state.step + 1, epoch=app.state.epoch, layers=rows))
        await wait_until(pilot, lambda: insp.compact, what="the table to compact")
        assert table.virtual_size.width <= table.scrollable_content_region.width
        assert any("⚠" in str(table.get_row_at(i)[0]) for i in range(table.row_count))
