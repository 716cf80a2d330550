"""Where a setting changed, the charts draw a line: the renderer's marks, the state's record of changes, and the
dashboard's charts in the app."""

from __future__ import annotations

from tests.app.fakes import FakeSession, opening
from tuinet.app.app import TuinetApp
from tuinet.app.state import RunState
from tuinet.app.testing import async_test, wait_until
from tuinet.app.widgets.charts import MARK_COLOR, ChartData, Line, render_chart
from tuinet.protocol import make_event
from tuinet.training.config import TrainConfig


def columns_of(strips, ch: str) -> set[int]:
    """The columns where ``ch`` appears in the plot rows."""
    return {c for strip in strips[:-2] for c, x in enumerate(strip.text) if x == ch}


def test_a_mark_is_a_dim_line_under_the_curves_at_its_x_and_a_tick_on_the_axis():
    flat = ChartData([Line("flat", [0, 10], [1.0, 1.0], 45)])  # a horizontal line across the middle
    plain = render_chart(flat, 60, 12)
    marked = render_chart(ChartData(flat.lines, marks=[5.0]), 60, 12)
    cols = columns_of(marked, "┊")
    assert len(cols) == 1 and not columns_of(plain, "┊")
    col = cols.pop()
    axis = marked[-2].text
    assert axis[col] in "┴┼" and plain[-2].text[col] in "─┬"
    # halfway between x = 0 and x = 10, within a cell of the middle of the plot area
    left, right = axis.index("└") + 1, len(axis)
    assert abs(col - (left + right - 1) / 2) <= 1
    # it is drawn under the line: the rows the curve passes through keep their dots
    rows = [r for r, strip in enumerate(marked[:-2]) if strip.text[col] == "┊"]
    assert len(rows) == 12 - 2 - 1 and all(plain[r].text[col] == " " for r in rows)
    segs = [seg for strip in marked[:-2] for seg in strip if "┊" in seg.text]
    assert segs and all(seg.style.color.number == MARK_COLOR and seg.style.dim for seg in segs)
    # outside the data's x range: nothing
    assert not columns_of(render_chart(ChartData(flat.lines, marks=[-1.0, 11.0]), 60, 12), "┊")


def ev(kind, **fields):
    return make_event(kind, **fields)


def test_the_state_records_where_settings_changed_but_not_the_schedules_steps():
    st = RunState()
    st.apply(ev("started", config={}, dataset={"name": "x", "task": "classification"}, steps_per_epoch=10,
                total_steps=100, epochs=10, batch_size=32, optimizer="adam", hyperparams={"lr": 0.1}, lr=0.1))
    st.apply(ev("lr_changed", lr=0.05, old_lr=0.1, source="schedule", step=5))
    assert st.changes == []
    st.apply(ev("lr_changed", lr=0.2, old_lr=0.1, source="user", step=15))
    st.apply(ev("optimizer_changed", name="sgd", hyperparams={"lr": 0.2}, describe="sgd", previous="adam",
                state="fresh", step=25, base_lr=0.2))
    st.apply(ev("regularization_changed", l1=0.0, l2=0.01, dropout=0.0, weight_decay=0.0,
                previous={"l1": 0.0, "l2": 0.0, "dropout": 0.0, "weight_decay": 0.0}, step=40))
    st.apply(ev("lr_changed", lr=0.1, old_lr=0.2, source="divergence", step=40))  # the same step: one line
    assert st.changes == [1.5, 2.5, 4.0]


@async_test
async def test_the_dashboards_charts_draw_a_line_where_the_trainer_changed_a_setting():
    fake = FakeSession(opening(steps=6))
    app = TuinetApp(fake, config=TrainConfig(dataset="spiral", epochs=100))

    def chart_text(name: str) -> str:
        chart = app.query_one(f"#{name}-chart")
        return "".join(chart.render_line(y).text for y in range(chart.size.height))

    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.state.step == 30, what="the opening")
        await wait_until(pilot, lambda: chart_text("loss").strip(), what="a chart")
        assert "┊" not in chart_text("loss")
        fake.emit(make_event("lr_changed", lr=0.002, old_lr=0.001, source="user", step=15, base_lr=0.002))
        for i in range(7, 10):  # more steps after it, so the change is inside the charted range
            fake.emit(make_event("step", step=5 * i, epoch=0.5 * i, loss=1.0 / i, accuracy=0.5, lr=0.002,
                                 samples_per_second=1000.0))
        await wait_until(pilot, lambda: "┊" in chart_text("loss") and "┊" in chart_text("acc"),
                         what="the change's line on both charts")
