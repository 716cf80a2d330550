"""The Predictions tab's layer-by-layer panel: the scatter drawn from an embedding event, [ and ] stepping through
the layers, and the trainer asked for the views only while the tab is shown (and told to stop when the viewer
leaves)."""

from __future__ import annotations

import numpy as np

from tests.app.fakes import FakeSession, opening
from tuinet.app.app import TuinetApp
from tuinet.app.testing import async_test, press, wait_until
from tuinet.app.widgets.embedding import EmbeddingView, class_symbols, scatter_text
from tuinet.protocol import make_event


def test_each_cell_shows_its_most_frequent_class_where_its_points_fall():
    points = np.array([[-1, 1], [1, -1], [1, -1], [1, -1], [0.0, 0.0], [1, 1]])
    labels = np.array([3, 1, 2, 2, 0, 1])
    t = scatter_text(points, labels, class_symbols(["0", "1", "2", "3"], 4), width=5, height=3)
    assert t.plain.split("\n") == ["3   1", "  0  ", "    2"]  # y up; two 2s beat one 1 in the lower right cell
    styles = {t.plain[s.start:s.end]: str(s.style) for s in t.spans}
    assert styles["3"] != styles["2"]
    plain = scatter_text(points, labels, class_symbols(["0", "1", "2", "3"], 4), 5, 3, color=False)
    assert plain.plain == t.plain and not plain.spans  # NO_COLOR: the characters say the classes
    assert class_symbols(["setosa", "versicolor", "virginica"], 3) == ["0", "1", "2"]


def embedding_event(step: int = 20) -> dict:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 60)
    views = []
    for name, spread in (("the input (64 values)", 1.0), ("dense_3's input (32 values)", 0.3),
                         ("the output (10 scores)", 0.1)):
        centres = np.stack([np.cos(labels), np.sin(labels)], axis=1) * 0.8
        pts = np.clip(centres + rng.normal(0, spread, (60, 2)), -1, 1)
        views.append({"name": name, "dims": 64, "explained": 0.25, "neighbours": 0.9, "points": pts.tolist()})
    return make_event("embedding", step=step, epoch=1.0, class_names=[str(i) for i in range(10)],
                      labels=labels.tolist(), preds=labels.tolist(), views=views)


def watched(session: FakeSession) -> list[bool]:
    """The ``watch`` of each embedding command the app sent, in order."""
    return [c["watch"] for c in session.sent if c["command"] == "embedding"]


@async_test
async def test_the_tab_asks_for_the_views_while_shown_and_steps_through_the_layers():
    session = FakeSession(opening("digits"))
    app = TuinetApp(session)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.state.step > 0, what="the opening")
        assert watched(session) == []
        await press(pilot, "3")
        await wait_until(pilot, lambda: watched(session) == [True], what="the views asked for")
        session.emit(embedding_event())
        view = app.query_one(EmbeddingView)
        await wait_until(pilot, lambda: view.event is not None, what="the views shown")
        assert view.border_title == "layers 3/3: the output (10 scores) · [ ]"
        text = view.render().plain
        assert "step 20 · 60 validation samples, 2 of 64 dimensions (25% of the variance)" in text.replace("\n", " ")
        await press(pilot, "left_square_bracket")
        await press(pilot, "left_square_bracket")
        assert view.border_title == "layers 1/3: the input (64 values) · [ ]"
        await press(pilot, "left_square_bracket")  # stays at the first
        assert view.border_title.startswith("layers 1/3")
        await press(pilot, "right_square_bracket")
        assert view.border_title.startswith("layers 2/3: dense_3's input")
        await press(pilot, "1")
        await wait_until(pilot, lambda: watched(session) == [True, False], what="the views no longer asked for")
        await press(pilot, "3")
        await wait_until(pilot, lambda: watched(session) == [True, False, True], what="asked again")
        app.exit()
        await pilot.pause(0.1)
    assert watched(session) == [True, False, True, False]  # a viewer leaving stops the trainer computing them


@async_test
async def test_an_ended_runs_tab_shows_its_saved_weights_views(tmp_path):
    from tuinet.training.config import TrainConfig
    from tuinet.training.trainer import Trainer

    t = Trainer(TrainConfig(dataset="digits", model="16", epochs=1, runs_dir=str(tmp_path), name="ended"))
    assert t.run()["event"] == "finished"
    events = opening("digits")
    events[0]["run_dir"] = str(tmp_path / "ended")
    events.append(make_event("finished", epochs=1, steps=23, test_accuracy=0.9, run_dir=str(tmp_path / "ended")))
    session = FakeSession(events)
    app = TuinetApp(session)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.state.done, what="the run's end")
        await press(pilot, "3")
        await wait_until(pilot, lambda: app.state.embedding is not None, what="the saved weights' views", timeout=60)
        assert app.state.embedding["source"] == "checkpoint" and app.state.embedding["step"] == t.global_step
        assert not [c for c in session.sent if c["command"] == "embedding"]  # no trainer to ask
        view = app.query_one(EmbeddingView)
        await wait_until(pilot, lambda: view.event is not None, what="drawn")
        assert view.border_title.startswith("layers 3/3: the output (10 scores)")
        assert view.render().plain.replace("\n", " ").count(f"the run's saved weights (step {t.global_step:,})") == 1


@async_test
async def test_a_terminal_too_small_for_the_panel_does_not_have_the_trainer_compute_it():
    session = FakeSession(opening("digits"))
    app = TuinetApp(session)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.state.step > 0, what="the opening")
        await press(pilot, "3")
        await pilot.pause(0.2)
        assert not app.query_one(EmbeddingView).display
        assert [c for c in session.sent if c["command"] == "embedding"] == []
        await pilot.resize_terminal(120, 40)
        await wait_until(pilot, lambda: watched(session) == [True],
                         what="asked once the panel shows")
        assert app.query_one(EmbeddingView).display


def test_the_drawing_is_a_star_over_the_samples():
    points = np.array([[-1, 1], [1, -1]])
    t = scatter_text(points, np.array([0, 1]), ["0", "1"], width=5, height=3, mark=[0.0, 0.0])
    assert t.plain.split("\n") == ["0    ", "  ★  ", "    1"]
    outside = scatter_text(points, np.array([0, 1]), ["0", "1"], width=5, height=3, mark=[3.0, -3.0])
    assert outside.plain.split("\n")[-1] == "    ★"  # beyond the samples: at the edge, where it goes


@async_test
async def test_the_draw_tabs_digit_is_sent_to_be_placed_among_the_samples():
    session = FakeSession(opening("mnist"))
    app = TuinetApp(session)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.state.step > 0, what="the opening")
        await press(pilot, "6", "enter")  # a dot at the pen: a drawing
        await wait_until(pilot, lambda: app._draw.image is not None, what="a drawing")
        await press(pilot, "3")
        await wait_until(pilot, lambda: [c for c in session.sent if c["command"] == "embedding"], what="asked")
        sent = [c for c in session.sent if c["command"] == "embedding"][-1]
        assert sent["watch"] is True and np.asarray(sent["image"]).shape == (28, 28)
        np.testing.assert_array_equal(sent["image"], app._draw.image)
        event = embedding_event()
        for v in event["views"]:
            v["drawn"] = [0.0, 0.0]
        event["drawn_pred"] = 7
        session.emit(event)
        view = app.query_one(EmbeddingView)
        await wait_until(pilot, lambda: view.event is not None, what="the views")
        text = view.render().plain
        assert "★" in text and "★ your drawing (Draw tab), read as 7" in text
