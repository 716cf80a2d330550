"""The Draw tab against a real run on the digits set (8x8 gray images): drawing with the mouse and with the keys,
what is sent to the trainer, the answer shown against the model's own probabilities, the eraser, the test samples,
the centring switch, and the saved weights answering once the run has ended.

Pure functions (the brush, the bars) are checked directly; the screen tests read the app's state and the text of its
panels.
"""

from __future__ import annotations

import numpy as np
from textual.events import MouseMove

from tuinet.app.app import TuinetApp
from tuinet.app.testing import async_test, press, wait_until
from tuinet.app.widgets.drawpad import SIZE, DrawCanvas, DrawPad, brush, probability_bars, stroke
from tuinet.protocol import make_command
from tuinet.training.config import TrainConfig
from tuinet.training.probe import drawn_input, probe_input
from tuinet.training.session import Session
from tuinet.training.trainer import Trainer

from tests.app.fakes import FakeSession, opening


def digits_app(tmp_path, **kw) -> tuple[TuinetApp, Session]:
    cfg = TrainConfig(**{**dict(dataset="digits", model="32", epochs=200, batch_size=64, runs_dir=str(tmp_path),
                                log_every=5), **kw})
    session = Session(Trainer(cfg))
    return TuinetApp(session, config=cfg), session


def sent_probes(session: Session) -> list[dict]:
    """The probe commands the trainer received, in order (recorded by wrapping its command queue)."""
    return session.trainer._probes_seen  # type: ignore[attr-defined]


def record_probes(session: Session) -> None:
    t = session.trainer
    t._probes_seen = []
    put = t.commands.put

    def recording(cmd, *a, **kw):
        if cmd.get("command") == "probe":
            t._probes_seen.append(cmd)
        return put(cmd, *a, **kw)

    t.commands.put = recording


def model_answer(session: Session, image) -> np.ndarray:
    """The trainer's model's probabilities for an 8x8 input of ink (the trainer is paused: its weights hold)."""
    t = session.trainer
    d = t.data
    lo, hi = 0.0, 16.0  # the digits set's gray levels
    return t.model.predict_proba(probe_input(image, d.task, d.input_shape, d.normalizer, (lo, hi)))[0]


async def dot_on_the_draw_tab(pilot, app) -> None:
    """Once the scripted opening is shown: the Draw tab, then a dot at the pen (enter)."""
    await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
    await press(pilot, "6")
    await wait_until(pilot, lambda: isinstance(app.focused, DrawCanvas), what="the canvas focused")
    await press(pilot, "enter")


def test_the_brush_inks_a_round_dab_and_a_drag_leaves_a_line():
    ink = np.zeros((SIZE, SIZE), np.float32)
    brush(ink, 10.0, 10.0)
    assert ink[10, 10] == 1 and ink[10, 11] > 0.5 and ink[10, 13] == 0 and ink[13, 10] == 0
    assert np.allclose(ink, ink.T)  # round: symmetric about the centre's diagonal
    brush(ink, 10.0, 10.0, erase=True)
    assert ink.max() == 0
    stroke(ink, (5.0, 2.0), (5.0, 25.0))  # a fast drag from one end to the other: no gap along the line
    assert (ink[5, 2:26] == 1).all() and ink[9, 2:26].max() == 0
    brush(ink, -5.0, -5.0)  # off the canvas: nothing
    assert ink[:, :2].max() < 1 and ink[0, 0] == 0


def test_probability_bars_mark_the_prediction_and_say_when_outputs_are_not_finite():
    text = probability_bars({"probs": [0.1, 0.7, 0.2], "pred": 1}, ["a", "b", "c"], width=10).plain
    lines = text.split("\n")
    assert lines[1].startswith("b ███████") and lines[1].endswith(" 70.0% ◀")
    assert "◀" not in lines[0] + lines[2] and lines[0].startswith("a █")
    assert "not finite" in probability_bars({"probs": [None, None], "pred": None}, ["a", "b"]).plain
    assert "draw a digit" in probability_bars(None, []).plain


@async_test
async def test_drawing_sends_the_models_input_and_shows_the_trainers_answer(tmp_path):
    app, session = digits_app(tmp_path)
    record_probes(session)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.state.step > 0, what="training")
        await press(pilot, "space")
        await wait_until(pilot, lambda: app.state.paused, what="paused")
        await press(pilot, "6")
        canvas = app.query_one(DrawCanvas)
        pad = app.query_one(DrawPad)
        await wait_until(pilot, lambda: app.focused is canvas, what="the canvas focused")
        assert app.active_tab == "draw" and canvas.wide
        # a stroke with the mouse: down, a drag with the button held, up
        await pilot.mouse_down(canvas, offset=(1 + 2 * 6, 1 + 4))
        await pilot._post_mouse_events([MouseMove], canvas, offset=(1 + 2 * 20, 1 + 4), button=1)
        await pilot._post_mouse_events([MouseMove], canvas, offset=(1 + 2 * 20, 1 + 24), button=1)
        await pilot.mouse_up(canvas, offset=(1 + 2 * 20, 1 + 24))
        assert canvas.ink[4, 6:21].min() == 1 and canvas.ink[4:25, 20].min() == 1  # a 7: across, then down
        assert canvas.ink[15, 6] == 0
        assert not app.screen.selections  # the drag drew; it selected no text
        await wait_until(pilot, lambda: sent_probes(session) and app.state.probe is not None
                         and app.state.probe.get("probs"), what="the answer")
        last = sent_probes(session)[-1]
        assert not pad.centre  # the digits set's digits fill their 8x8 frame: given as drawn, not centred as MNIST's
        want_input = drawn_input(canvas.ink, 8, 8, centre=False)
        np.testing.assert_allclose(last["image"], want_input, atol=1e-3)  # the 8x8 the model is given
        sees = str(app.query_one("#draw-sees").render()).split("\n")
        assert len(sees[0]) == 24 and len(sees) == 12 + 1  # the 8x8 shown 3x (half blocks), then its caption
        assert sees[-1] == "8x8, as drawn"
        await wait_until(pilot, lambda: app.state.probe.get("probs") is not None
                         and np.allclose(app.state.probe["probs"], model_answer(session, last["image"]), atol=1e-5),
                         what="the answer to the last picture")
        want = model_answer(session, last["image"])
        shown = str(app.query_one("#draw-probs").render())
        pred = int(np.argmax(want))
        assert f"{pred} " in shown and f"{want[pred]:6.1%} ◀" in shown and "live weights" in shown
        # the layers panel is drawn a tick after the answer, and may still show an earlier answer's (to the stroke
        # half drawn): wait for this answer's
        await wait_until(pilot, lambda: f"where it looks for its {pred}" in str(app.query_one("#draw-layers").render()),
                         what="the layers panel of this answer")
        layers = str(app.query_one("#draw-layers").render())  # the forward pass of the picture, layer by layer
        assert "dense_1 → 32" in layers and "relu_2 → 32" in layers and "dense_3 → 10" in layers
        assert "flatten" not in layers
        assert f"where it looks for its {pred}" in layers and f"the {pred}'s score (logit)" in layers  # occlusion

        # the keys: clear, then a line with shift+arrows from the pen
        await press(pilot, "x")
        assert canvas.ink.max() == 0 and pad.image is None
        await wait_until(pilot, lambda: sent_probes(session)[-1]["image"] is None, what="the cleared picture sent")
        await press(pilot, "shift+right", "shift+right", "shift+right", "shift+down")
        r, c = canvas.pen
        assert (r, c) == (SIZE // 2 + 1, SIZE // 2 + 3)
        assert canvas.ink[SIZE // 2, SIZE // 2:SIZE // 2 + 4].min() == 1 and canvas.ink[r, c] == 1
        # the eraser: the keys now erase where they go
        await press(pilot, "p", "shift+left")
        assert canvas.eraser and canvas.ink[r, c - 1] == 0 and canvas.ink[r, c] == 0
        # a step while paused: the trainer answers the same picture with its new weights
        before = app.state.probe
        await press(pilot, "n")
        await wait_until(pilot, lambda: app.state.probe is not before and app.state.probe.get("step", 0)
                         > before.get("step", 0), what="the answer after a step")
        assert app.screen is app.screen_stack[0] and app.active_tab == "draw"  # the tab shows the step, no Step view
        assert app.state.probe["step"] == before["step"] + 1 and app.state.paused
        session.send(make_command("stop"))
        await wait_until(pilot, lambda: app.state.done, what="the run stopped")


@async_test
async def test_after_the_run_the_saved_weights_answer_and_centring_changes_the_input(tmp_path):
    app, session = digits_app(tmp_path, epochs=1, dataset="mnist", limit=600)  # 28x28: the canvas's size
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.state.done, what="the run finished")
        await press(pilot, "6")
        canvas = app.query_one(DrawCanvas)
        pad = app.query_one(DrawPad)
        assert pad.centre  # MNIST: centred as its digits were made
        await wait_until(pilot, lambda: pad.samples, what="the test samples")
        # (the canvas's keys reach it once it has the focus: on a loaded machine the tab can open later than "6")
        await wait_until(pilot, lambda: app.focused is canvas, what="the canvas focused")
        await press(pilot, "t")  # a test sample on the canvas
        await wait_until(pilot, lambda: canvas.ink.max() > 0, what="the sample on the canvas")
        assert canvas.ink.max() > 0.95 and canvas.ink.min() == 0
        await wait_until(pilot, lambda: (app.state.probe or {}).get("source") == "checkpoint",
                         what="the saved weights' answer")
        t = session.trainer
        sample = pad.samples[0]
        index = app.state.samples["samples"][0]["index"]
        # the sample, as drawn (no centring): the input given is the sample itself, answered as the model answers it
        await press(pilot, "m")
        await wait_until(pilot, lambda: not pad.centre, what="centring off")
        np.testing.assert_allclose(pad.image, (sample - sample.min()) / (sample.max() - sample.min()), atol=1e-2)
        want = t.model.predict_proba(t.data.x_test[index:index + 1])[0]
        await wait_until(pilot, lambda: np.allclose(app.state.probe.get("probs") or [0], want, atol=2e-2),
                         what="the answer to the sample as it is")
        assert "saved weights (latest.npz)" in str(app.query_one("#draw-probs").render())
        # a small digit in a corner: given as drawn, it stays there; centred, it is moved and sized as MNIST's
        small = np.zeros((SIZE, SIZE), np.float32)
        small[2:9, 3] = small[2, 3:7] = 1.0  # a 7-ish hook, 7 pixels tall, top left
        canvas.set_ink(small)
        await wait_until(pilot, lambda: pad.image is not None and pad.image[2, 3] == 1, what="the corner digit")

        def centre_of_mass(a):
            rows, cols = np.indices(a.shape)
            return (a * rows).sum() / a.sum(), (a * cols).sum() / a.sum()

        assert max(centre_of_mass(pad.image)) < 6
        await press(pilot, "m")
        await wait_until(pilot, lambda: pad.centre, what="centring on")
        cy, cx = centre_of_mass(pad.image)
        assert abs(cy - 14) < 1 and abs(cx - 14) < 1
        rows = np.nonzero(pad.image.max(axis=1) > 0.25)[0]
        assert 18 <= rows.max() - rows.min() + 1 <= 21  # 20 pixels tall, as MNIST's digits
        assert "28x28, centred as MNIST's" in str(app.query_one("#draw-sees").render())


@async_test
async def test_the_draw_tab_is_there_for_gray_image_classifiers_only():
    from tests.app.test_app import fake_app

    for dataset, shown in (("mnist", True), ("spiral", False), ("housing", False)):
        app, _ = fake_app(opening(dataset=dataset))
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
            assert bool(app.check_action("show_tab", ("draw",))) is shown, dataset
            assert ("Show draw" in [c.title for c in app.get_system_commands(app.screen)]) is shown


@async_test
async def test_the_fake_session_gets_validated_probe_commands():
    fake = FakeSession(opening(dataset="mnist"))
    app = TuinetApp(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await dot_on_the_draw_tab(pilot, app)
        await wait_until(pilot, lambda: [c for c in fake.sent if c["command"] == "probe"], what="a probe sent")
        image = [c for c in fake.sent if c["command"] == "probe"][-1]["image"]
        assert np.asarray(image).shape == (28, 28) and np.asarray(image).max() > 0.9


def test_without_colour_the_canvas_and_the_input_are_drawn_in_shades():
    from tuinet.app.widgets.drawpad import SHADES, shade_text

    ink = np.zeros((4, 3), np.float32)
    ink[0, 0], ink[1, 1], ink[2, 2], ink[3, 2] = 1.0, 0.5, 0.25, 1.0
    assert shade_text(ink).plain == f"{SHADES[4]}{SHADES[2]} \n  {SHADES[4]}"  # the stronger pixel of each pair


@async_test
async def test_no_color_shows_the_drawing_and_the_models_input(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    from tests.app.test_snapshots import draw_a_seven, draw_events, replay_app

    app = replay_app(draw_events())
    async with app.run_test(size=(120, 40)) as pilot:
        await draw_a_seven((120, 40))(pilot)
        canvas = str(app.query_one(DrawCanvas).render())
        sees = str(app.query_one("#draw-sees").render())
        assert canvas.count("██") >= 20 and "▀" not in canvas  # pixels as shades, two columns each
        assert sees.count("█") >= 20 and "▀" not in sees


@async_test
async def test_a_viewer_leaving_a_detached_run_makes_the_trainer_forget_its_drawing():
    from tuinet.app.remote import RemoteApp

    fake = FakeSession(opening(dataset="mnist"), started=True)
    fake.run = "mlp-mnist"
    app = RemoteApp(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await dot_on_the_draw_tab(pilot, app)
        await wait_until(pilot, lambda: [c for c in fake.sent if c["command"] == "probe"], what="a probe sent")
        await press(pilot, "d")
        await wait_until(pilot, lambda: app.return_value is not None, what="the viewer closed")
    probes = [c for c in fake.sent if c["command"] == "probe"]
    assert probes[-1]["image"] is None and probes[0]["image"] is not None
    assert fake.running  # the run goes on


def test_each_charted_run_reads_the_drawing_with_its_own_saved_weights(tmp_path):
    """`w` on the Compare screen: one answer a run, each equal to that run's model reading the same input (rebuilt
    here from its checkpoint); a run whose inputs are not gray images says so."""
    import asyncio

    from tuinet.app.compare import CompareApp
    from tuinet.app.screens.draw_runs import DrawRunsScreen
    from tuinet.engine.checkpoint import load_checkpoint
    from tuinet.training.compare import load_runs
    from tuinet.training.evaluation import checkpoint_model, saved_normalizer

    runs = tmp_path / "runs"
    for name, kw in (("fast", dict(lr=0.05)), ("slow", dict(lr=0.0005)), ("points", dict(dataset="spiral"))):
        cfg = TrainConfig(**{**dict(dataset="digits", model="16", epochs=2, runs_dir=str(runs), name=name), **kw})
        assert Trainer(cfg).run()["event"] == "finished"
    app = CompareApp(load_runs(runs), "runs", charted=["fast", "slow", "points"], poll=False)

    async def scenario():
        async with app.run_test(size=(120, 40)) as pilot:
            await press(pilot, "w")
            await wait_until(pilot, lambda: isinstance(app.screen, DrawRunsScreen) and app.screen.is_mounted,
                             what="the drawing screen")
            screen = app.screen
            canvas = screen.query_one(DrawCanvas)
            ink = np.zeros((SIZE, SIZE), np.float32)
            stroke(ink, (5.0, 8.0), (5.0, 20.0))
            stroke(ink, (5.0, 20.0), (24.0, 12.0))
            canvas.set_ink(ink)
            await wait_until(pilot, lambda: all(screen.answers.get(n) for n in ("fast", "slow", "points")),
                             what="every run's answer")
            assert not screen.query_one(DrawPad).centre  # no run on MNIST: each is given the drawing as drawn
            image = drawn_input(ink, 8, 8, centre=False)
            for name in ("fast", "slow"):
                ckpt = load_checkpoint(runs / name)
                model, norm = checkpoint_model(ckpt), saved_normalizer(ckpt)
                x = norm.transform((image * 16.0).reshape(1, 8, 8, 1))  # the digits' gray levels: 0..16
                np.testing.assert_allclose(screen.answers[name]["probs"], model.predict_proba(x)[0], atol=1e-5)
            assert screen.answers["fast"]["probs"] != screen.answers["slow"]["probs"]
            assert screen.answers["points"] == {"error": "not a classifier of gray images"}
            shown = str(screen.query_one("#draw-runs").render())
            pred = screen.answers["fast"]["pred"]
            assert "fast" in shown and "slow" in shown and "not a classifier of gray images" in shown
            assert f"{pred} {screen.answers['fast']['probs'][pred]:6.1%}" in shown
            await press(pilot, "escape")
            await wait_until(pilot, lambda: not isinstance(app.screen, DrawRunsScreen), what="back to Compare")

    asyncio.run(scenario())


@async_test
async def test_the_trainer_answers_the_drawing_only_while_its_tab_is_shown():
    fake = FakeSession(opening(dataset="mnist"))
    app = TuinetApp(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await dot_on_the_draw_tab(pilot, app)

        def probes():
            return [c["image"] is not None for c in fake.sent if c["command"] == "probe"]

        await wait_until(pilot, lambda: probes() == [True], what="the drawing sent")
        await press(pilot, "1")  # another tab: the trainer forgets it, the canvas keeps it
        await wait_until(pilot, lambda: probes() == [True, False], what="the drawing withdrawn")
        assert app.query_one(DrawCanvas).ink.max() > 0
        await press(pilot, "2")  # a third tab: nothing more to send
        await press(pilot, "6")  # back: sent again
        await wait_until(pilot, lambda: probes() == [True, False, True], what="the drawing sent again")


@async_test
async def test_a_restarted_run_is_given_the_drawing_again():
    from tests.app.test_app import dialog
    from tuinet.app.screens.dialogs import ConfirmDialog

    first, second = FakeSession(opening(dataset="mnist")), FakeSession(opening(dataset="mnist"))
    app = TuinetApp(first, config=TrainConfig(dataset="mnist"), session_factory=lambda c: second)
    async with app.run_test(size=(120, 40)) as pilot:
        await dot_on_the_draw_tab(pilot, app)
        await wait_until(pilot, lambda: [c for c in first.sent if c["command"] == "probe"], what="the drawing sent")
        await press(pilot, "r")
        await dialog(pilot, ConfirmDialog)
        await press(pilot, "y")
        await wait_until(pilot, lambda: app.session is second, what="the new run")
        await wait_until(pilot, lambda: [c for c in second.sent if c["command"] == "probe"], what="the drawing resent")
        assert [c for c in second.sent if c["command"] == "probe"][0]["image"] is not None
