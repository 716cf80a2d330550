"""Pilot tests of the Step view (``n``, ``10n``, ``space``, ``escape``) and of the Inspector's gradient profile.

A scripted session (:class:`tests.app.fakes.FakeSession`) checks which commands the keys send and what the view
shows; one real run on the digits set checks that ``n`` in the app is one optimizer step of the trainer.
"""

from __future__ import annotations

import pytest

from tests.app.fakes import FakeSession, opening
from tests.app.step_fixture import step_detail
from tuinet.app.app import TuinetApp
from tuinet.app.screens.step import CountPrefix, StepScreen
from tuinet.app.testing import async_test, press, wait_for_screen, wait_until
from tuinet.app.widgets.inspector import flow_bar, health_text
from tuinet.app.widgets.stepview import CAPTIONS, SHORT_CAPTIONS, backward_text, forward_text, loss_text, update_text
from tuinet.protocol import make_event
from tuinet.training.config import TrainConfig
from tuinet.training.session import Session
from tuinet.training.trainer import Trainer


def flat(text: str) -> str:
    """Text with its line wrapping undone (words wrap to the panel's width)."""
    return " ".join(text.split())


def stage_text(app: TuinetApp, stage: str, width: int = 60) -> str:
    return flat(app.screen.query_one(f"#text-{stage}").text_for(width).plain)


@async_test
async def test_n_pauses_steps_and_opens_the_step_view_then_space_resumes():
    session = FakeSession(opening("mnist"))
    app = TuinetApp(session)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.state.step > 0, what="the run shown")
        await press(pilot, "n")
        assert session.kinds()[-2:] == ["pause", "step"] and "count" not in session.sent[-1]
        await wait_until(pilot, lambda: isinstance(app.screen, StepScreen) and app.screen.is_mounted and app.state.step_detail is not None
                         and "stepview" not in app.state.dirty, what="the step view drawn")
        assert app.state.step_detail["step"] == 16  # the scripted run was at step 15
        for stage in ("forward", "loss", "backward", "update"):  # a one-line caption each (short when narrow)
            assert SHORT_CAPTIONS[stage] in stage_text(app, stage, 50)
            assert CAPTIONS[stage] in stage_text(app, stage, 120)
        assert " step 16 " in str(app.screen.query_one("#step-head").render())

        await press(pilot, "1", "0", "n")  # a count: ten steps (on this screen the digits switch nothing)
        assert session.sent[-1] == {**session.sent[-1], "command": "step", "count": 10}
        assert session.kinds().count("pause") == 1  # already paused: no second pause
        await wait_until(pilot, lambda: app.state.step_detail["step"] == 26, what="the tenth step shown")
        assert isinstance(app.screen, StepScreen)

        await press(pilot, "space")
        assert session.kinds()[-1] == "resume"
        await wait_until(pilot, lambda: not isinstance(app.screen, StepScreen), what="the view closed")


@async_test
async def test_escape_closes_the_view_and_stays_paused():
    session = FakeSession(opening("mnist"))
    app = TuinetApp(session)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.state.step > 0, what="the run shown")
        await press(pilot, "n")
        await wait_for_screen(pilot, StepScreen, what="the step view")
        await press(pilot, "escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, StepScreen), what="the view closed")
        # the run's "paused" event may still be on its way: wait for it, then check nothing resumed the run
        await wait_until(pilot, lambda: app.state.paused, what="the run shown paused")
        assert session.kinds()[-1] == "step" and "resume" not in session.kinds()


def test_count_prefix_takes_digits_just_before_n_and_forgets_them_otherwise():
    now = [0.0]
    c = CountPrefix(clock=lambda: now[0])
    for ch in "10":
        c.feed(ch, ch)
    assert c.pending == 10 and c.take() == 10 and c.take() == 1
    c.feed("3", "3")
    c.feed("x", "x")  # another key in between: forgotten
    assert c.take() == 1
    c.feed("4", "4")
    now[0] += 10  # too long ago
    assert c.pending is None and c.take() == 1


def layer_lines(text: str) -> list[str]:
    """The lines of a stage that start with a layer's name (``dense_3 ...``)."""
    return [ln for ln in text.splitlines() if ln.split() and ln.split()[0].rpartition("_")[2].isdigit()]


def test_stages_draw_the_event_numbers():
    e = step_detail()
    fw = flat(forward_text(e, 60).plain)
    assert "true label 7" in fw and "◀" in fw and "★" in fw and "81.0%" in fw
    assert "dense_1 → 256" in fw and "58 of 256" in fw  # as many units as fit the width
    lo = flat(loss_text(e, 60).plain)
    assert "0.455 → 0.431 (-5.3%)" in lo and "#40211 true 4 → said 9 ✗" in lo
    names = [ln.split()[0] for ln in layer_lines(backward_text(e, 60).plain)]
    assert names == ["dense_5", "relu_4", "dense_3", "relu_2", "dense_1", "flatten_0"]  # output to input
    up = flat(update_text(e, 60).plain)
    assert "adam lr 0.001" in up and "×7.9" in up and "upd/w" in up
    vanishing = backward_text(step_detail(grad_scale=0.01), 60,
                              {"status": "vanishing", "message": "vanishing gradients: dense_1 gets 1e-08 times"})
    assert "⚠ vanishing gradients" in vanishing.plain and "decades" in vanishing.plain
    bars = {ln.split()[0]: ln.split()[1] for ln in layer_lines(vanishing.plain)}
    assert len(bars["dense_5"]) > len(bars["dense_3"]) > len(bars["dense_1"])  # shrinking toward the input


def test_gradient_profile_bars_and_health_line():
    assert flow_bar(1.0, 1e-6, 1.0, 10).strip() == "█" * 10
    short, long_ = flow_bar(1e-6, 1e-6, 1.0, 10).rstrip(), flow_bar(1e-3, 1e-6, 1.0, 10).rstrip()
    assert 0 < len(short) < len(long_) < 10
    assert "healthy" in health_text({"status": "ok", "ratio": 0.8}).plain
    warn = health_text({"status": "vanishing", "ratio": 1e-6, "message": "vanishing gradients: dense_1 gets 1e-06",
                        "hint": "What usually helps: ReLU"}).plain
    assert "⚠ vanishing" in warn and "ReLU" in warn


@async_test
async def test_inspector_shows_the_profile_and_the_warning():
    rows = [{"name": "dense_1", "kind": "Dense", "params": 10, "grad_norm": 1e-6},
            {"name": "dense_3", "kind": "Dense", "params": 10, "grad_norm": 0.4}]
    events = opening("mnist")
    events[0]["layers"] = [{"name": r["name"], "kind": "Dense", "output_shape": [5], "params": 10} for r in rows]
    events += [make_event("layer_stats", step=15, epoch=0, layers=rows,
                          health={"status": "vanishing", "ratio": 2.5e-6, "layers": ["dense_1", "dense_3"]}),
               make_event("gradient_health", step=15, epoch=0, status="vanishing", ratio=2.5e-6,
                          layers=["dense_1", "dense_3"], message="vanishing gradients: dense_1 gets 2.5e-06 times "
                          "the gradient norm of dense_3", hint="What usually helps: ReLU instead of sigmoid")]
    app = TuinetApp(FakeSession(events))
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, "2")
        # the figures folded in and drawn (waiting only for "layers" to leave the dirty set passed before the
        # layer_stats event was even folded in, under a loaded suite)
        await wait_until(pilot, lambda: app.state.step == 15 and "layers" not in app.state.dirty
                         and app.active_tab == "inspector"
                         and "vanishing" in str(app.query_one("#grad-health").render()), what="the inspector drawn")
        line = str(app.query_one("#grad-health").render())
        assert "⚠ vanishing" in line and "first layer's gradient is 2.5e-06 times the last" in line and "ReLU" in line
        assert any("vanishing gradients" in text and level == "warning" for _, level, text in app.state.log)


@pytest.mark.slow
@async_test
async def test_n_in_the_app_is_one_optimizer_step_of_the_trainer(tmp_path):
    cfg = TrainConfig(dataset="digits", model="32", epochs=50, batch_size=32, runs_dir=str(tmp_path), log_every=5)
    session = Session(Trainer(cfg))
    app = TuinetApp(session, config=cfg)
    t = session.trainer
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: t.global_step > 5, what="training", timeout=120)
        await press(pilot, "space")
        await wait_until(pilot, lambda: app.state.paused and t.paused, what="paused")
        step, opt_t = t.global_step, t.optimizer.t
        await press(pilot, "n")
        await wait_until(pilot, lambda: app.state.step_detail is not None, what="the step shown", timeout=60)
        assert t.global_step == step + 1 and t.optimizer.t == opt_t + 1 and t.paused
        assert app.state.step_detail["step"] == step + 1
        session.send({"command": "stop"})
        await wait_until(pilot, lambda: not session.running, what="stopped", timeout=60)
