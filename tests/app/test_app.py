"""Pilot tests of the app: every hotkey and dialog against a real (small, fast) training run, then what needs no
trainer against a scripted one (:class:`tests.app.fakes.FakeSession`).

The real-run tests assert the effect on the trainer itself (lr in ``trainer.optimizer.lr``, the optimizer object,
steps not advancing while paused) and on the screen; they use the 2-D spiral dataset so they start in well under a
second. The scripted ones assert which command each key sends and what the screen, the keys and the palette say.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.app.fakes import FakeSession, finished, opening
from tuinet.app.app import TuinetApp
from tuinet.app.remote import RemoteApp
from tuinet.app.screens.help import HelpScreen
from tuinet.protocol import make_event
from tuinet.app.screens.dialogs import ConfirmDialog, DivergedDialog, LrDialog, OptimizerDialog
from tuinet.app.testing import async_test, press, wait_until
from tuinet.training.config import TrainConfig
from tuinet.training.session import Session
from tuinet.training.trainer import Trainer

SIZE = (120, 40)


def make_app(tmp_path: Path, **overrides) -> tuple[TuinetApp, Session]:
    """An app on a spiral run long enough not to finish during a test."""
    opts = dict(dataset="spiral", epochs=500, batch_size=32, runs_dir=str(tmp_path), on_divergence="pause",
                log_every=5, stats_every=20)
    opts.update(overrides)
    cfg = TrainConfig(**opts)
    session = Session(Trainer(cfg))
    app = TuinetApp(session, config=cfg, session_factory=lambda c: Session(Trainer(c)))
    return app, session


async def dialog(pilot, cls) -> None:
    """Wait until a dialog of type ``cls`` is on top and composed."""
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, cls) and len(pilot.app.screen.query("Static, Input"))
                   > 0, what=cls.__name__)
    await pilot.pause(0)


async def started(pilot, app: TuinetApp, session: Session, steps: int = 10) -> None:
    """Wait until the trainer is past its first ``steps`` steps and the app has shown them."""
    await wait_until(pilot, lambda: session.trainer.global_step >= steps and app.state.step > 0, what="training")


def screen_text(app: TuinetApp) -> str:
    """The visible text of the topbar and status panel."""
    return str(app.query_one("#topbar").render()) + "\n" + str(app.query_one("#status").render())


async def shutdown(app: TuinetApp, session: Session) -> None:
    if session.running:
        from tuinet.protocol import make_command

        session.send(make_command("stop"))
        await asyncio.to_thread(session.join, 30)


@async_test
async def test_pause_stops_steps_and_resume_continues(tmp_path):
    app, session = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, session)
        await press(pilot, "space")
        await wait_until(pilot, lambda: session.trainer.paused and app.paused, what="pause")
        step = session.trainer.global_step
        # a paused trainer still answers commands between steps it does not take: an evaluation comes back from
        # the same step
        await press(pilot, "e")
        await wait_until(pilot, lambda: app.state.evaluated is not None, what="evaluation while paused")
        assert app.state.evaluated["step"] == step and session.trainer.global_step == step, \
            "steps advanced while paused"
        assert "paused" in screen_text(app)
        assert app.check_action("resume", ()) is True and app.check_action("pause", ()) is False
        await press(pilot, "space")
        await wait_until(pilot, lambda: session.trainer.global_step > step + 5, what="resume")
        # the trainer runs ahead of the screen by up to a tick: wait for the app to show it
        await wait_until(pilot, lambda: not app.paused and "running" in screen_text(app), what="running shown")
        await shutdown(app, session)


@async_test
async def test_lr_keys_double_and_halve(tmp_path):
    app, session = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, session)
        lr0 = session.trainer.optimizer.lr
        await press(pilot, "plus")
        await wait_until(pilot, lambda: app.lr == pytest.approx(2 * lr0), what="lr x2 shown")
        assert session.trainer.optimizer.lr == pytest.approx(2 * lr0)
        assert "0.002" in screen_text(app)
        await press(pilot, "minus")
        await press(pilot, "minus")
        await wait_until(pilot, lambda: app.lr == pytest.approx(lr0 / 2), what="lr /4 shown")
        assert session.trainer.optimizer.lr == pytest.approx(lr0 / 2)
        assert app.latencies, "the app records how long each command took to show"
        await shutdown(app, session)


@async_test
async def test_lr_dialog_sets_exact_value_and_rejects_garbage(tmp_path):
    app, session = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, session)
        from tuinet.protocol import make_command

        session.send(make_command("set_lr", lr=0.00123456))
        await wait_until(pilot, lambda: app.state.lr == pytest.approx(0.00123456), what="lr set")
        await press(pilot, "L")
        await dialog(pilot, LrDialog)
        inp = app.screen.query_one("Input")
        assert inp.value == "0.00123456", "the field holds the lr unrounded (enter on it changes nothing)"
        inp.value = "banana"
        await press(pilot, "enter")
        await wait_until(pilot, lambda: "not a positive number" in str(app.screen.query_one("#lr-error").render()),
                       what="error shown")
        assert isinstance(app.screen, LrDialog), "a bad value keeps the dialog open"
        # the run's lr moves while the dialog is open (a schedule, another client's command): its "Current" line
        # follows, the typed field stays
        session.send(make_command("set_lr", lr=0.000777))
        await wait_until(pilot, lambda: "Current: 0.000777" in str(app.screen.query_one("#lr-current").render()),
                         what="the current lr followed")
        assert inp.value == "banana"
        inp.value = "0.0123"
        await press(pilot, "enter")
        await wait_until(pilot, lambda: session.trainer.optimizer.lr == pytest.approx(0.0123), what="exact lr")
        await wait_until(pilot, lambda: "0.0123" in screen_text(app), what="lr on screen")
        # escape cancels without sending anything: no command waits for its answer, none was answered since
        await wait_until(pilot, lambda: not app.pending, what="the lr answered")
        answered = len(app.latencies)
        await press(pilot, "L")
        await dialog(pilot, LrDialog)
        await press(pilot, "escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, LrDialog), what="dialog closed")
        assert not app.pending and len(app.latencies) == answered
        assert session.trainer.optimizer.lr == pytest.approx(0.0123)
        await shutdown(app, session)


@async_test
async def test_optimizer_dialog_swaps_optimizer(tmp_path):
    app, session = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, session)
        assert session.trainer.optimizer.name == "adam"
        from tuinet.protocol import make_command

        session.send(make_command("set_lr", lr=0.00123456))
        await wait_until(pilot, lambda: app.state.lr == pytest.approx(0.00123456), what="lr set")
        await press(pilot, "o")
        await dialog(pilot, OptimizerDialog)
        # the lr field starts empty (enter keeps the run's lr exactly, not a rounded copy of it); its placeholder
        # says what is kept
        lr_field = app.screen.query_one("#opt-lr")
        assert lr_field.value == "" and lr_field.placeholder == "keep current (0.0012)"
        session.send(make_command("set_lr", lr=0.0031))  # the lr moves while the dialog is open: it follows
        await wait_until(pilot, lambda: lr_field.placeholder == "keep current (0.0031)", what="placeholder follows")
        # the list starts on the current optimizer (adam, third); rmsprop is two below
        await press(pilot, "down", "down", "enter")
        await wait_until(pilot, lambda: session.trainer.optimizer.name == "rmsprop", what="rmsprop")
        assert session.trainer.optimizer.lr == 0.0031
        await wait_until(pilot, lambda: app.optimizer == "rmsprop", what="rmsprop shown")
        assert "rmsprop" in screen_text(app)
        step = session.trainer.global_step
        await wait_until(pilot, lambda: session.trainer.global_step > step + 3, what="training goes on")
        # momentum: SGD with momentum 0.9, with a typed learning rate
        await press(pilot, "o")
        await dialog(pilot, OptimizerDialog)
        app.screen.query_one("#opt-list").highlighted = 1
        app.screen.query_one("#opt-lr").value = "0.05"
        await press(pilot, "enter")
        await wait_until(pilot, lambda: session.trainer.optimizer.name == "sgd", what="sgd")
        assert session.trainer.optimizer.hyper["momentum"] == pytest.approx(0.9)
        assert session.trainer.optimizer.lr == pytest.approx(0.05)
        await shutdown(app, session)


@async_test
async def test_save_and_evaluate(tmp_path):
    app, session = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, session)
        latest = Path(session.trainer.run_dir.latest)
        await press(pilot, "s")
        await wait_until(pilot, lambda: latest.exists(), what="checkpoint file")
        await wait_until(pilot, lambda: any("checkpoint" in text for _, _, text in app.state.log), what="log line")
        await press(pilot, "e")
        await wait_until(pilot, lambda: app.state.evaluated is not None, what="evaluation")
        assert 0.0 <= app.state.evaluated["accuracy"] <= 1.0
        assert "test" in screen_text(app)
        await shutdown(app, session)


@pytest.mark.slow  # two training runs, one after the other
@async_test
async def test_restart_starts_a_new_session_with_current_settings(tmp_path):
    app, session = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, session)
        await press(pilot, "plus")
        await wait_until(pilot, lambda: app.lr == pytest.approx(0.002), what="lr x2")
        await press(pilot, "r")
        await dialog(pilot, ConfirmDialog)
        await press(pilot, "n")
        await wait_until(pilot, lambda: not isinstance(app.screen, ConfirmDialog), what="dialog closed")
        assert app.session is session and session.running, "n cancels the restart"
        await press(pilot, "r")
        await dialog(pilot, ConfirmDialog)
        await press(pilot, "y")
        await wait_until(pilot, lambda: app.session is not session, what="new session")
        assert not session.running and session.last.get("stopped"), "the old run stopped (checkpoint saved)"
        new = app.session
        await wait_until(pilot, lambda: new.trainer.global_step > 3 and app.state.step > 0, what="new run trains")
        assert new.trainer.optimizer.lr == pytest.approx(0.002), "restart keeps the current lr"
        assert new.trainer.run_dir.path != session.trainer.run_dir.path
        restarted = [text for _, _, text in app.state.log if text.startswith("restarted: ")]
        # the settings of the run being restarted, read before the state was reset (not "- lr -, batch 0")
        assert restarted and "on spiral" in restarted[0] and "lr 0.002" in restarted[0], restarted
        assert "batch 32" in restarted[0] and "500 epochs" in restarted[0], restarted
        await shutdown(app, new)


@async_test
async def test_restart_after_a_decaying_schedule_starts_from_its_base_lr(tmp_path):
    """A cosine run ends with its lr near zero: `r` offers (and would start) a run at the schedule's base lr, moved
    by the user's own lr changes, not at the decayed lr (which would barely train)."""
    app, session = make_app(tmp_path, epochs=2, schedule="cosine", lr=0.004, log_every=1, pace=12)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, session, steps=3)
        await press(pilot, "minus")  # the user halves the lr: the schedule's base halves with it
        # (the current lr, already a little decayed, is halved: the base becomes about 0.002)
        await wait_until(pilot, lambda: session.trainer.base_lr == pytest.approx(0.002, rel=0.05), what="base halved")
        # the status panel says the lr follows a schedule, and from which base
        await wait_until(pilot, lambda: "(cosine from 0.002)" in screen_text(app), what="schedule shown")
        await wait_until(pilot, lambda: app.state.done, what="run ended")
        assert app.state.lr < 1e-4, "the cosine schedule has decayed the lr"
        assert app.current_config().lr == session.trainer.base_lr
        assert "lr 0.002 (cosine schedule)" in app._settings_text()
        await shutdown(app, session)


@async_test
async def test_quit_asks_then_stops_with_checkpoint(tmp_path):
    app, session = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, session)
        await press(pilot, "q")
        await dialog(pilot, ConfirmDialog)
        await press(pilot, "escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, ConfirmDialog), what="dialog closed")
        assert session.running, "escape cancels quitting"
        await press(pilot, "q")
        await dialog(pilot, ConfirmDialog)
        await press(pilot, "y")
        await wait_until(pilot, lambda: not session.running, what="stop")
        await wait_until(pilot, lambda: app.return_value is not None, what="the app exiting")
    stopped = session.last.get("stopped")
    assert stopped and stopped["checkpoint"] and Path(stopped["checkpoint"]).exists()
    assert app.return_value == 0


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy overflow warnings while the loss blows up
@async_test
async def test_divergence_dialog_offers_rollback(tmp_path):
    # plain SGD with a huge learning rate blows up within a few steps
    app, session = make_app(tmp_path, optimizer="sgd", lr=1e8)
    async with app.run_test(size=SIZE) as pilot:
        await dialog(pilot, DivergedDialog)
        assert session.trainer.paused
        assert app.status == "diverged"
        assert "diverged" in screen_text(app)
        lr_before = session.trainer.optimizer.lr
        await press(pilot, "r")
        await wait_until(pilot, lambda: session.trainer.optimizer.lr < lr_before, what="rollback lowers lr")
        assert session.trainer.optimizer.lr == pytest.approx(lr_before * 0.5)
        await wait_until(pilot, lambda: any("rolled back" in text for _, _, text in app.state.log), what="log")
        # it diverges again (1e8 is far too high): this time continue, which resumes training as is
        await dialog(pilot, DivergedDialog)
        await press(pilot, "c")
        await wait_until(pilot, lambda: any("resumed" in text for _, _, text in app.state.log), what="resumed")
        await shutdown(app, session)


# --- against a scripted session ------------------------------------------------------------------------------------


def fake_app(events=None, **kwargs) -> tuple[TuinetApp, FakeSession]:
    """An app on a FakeSession that plays ``events`` (a spiral run's opening by default) when the app starts it."""
    fake = FakeSession(opening() if events is None else events, **kwargs)
    cfg = TrainConfig(dataset="spiral", epochs=100)
    return TuinetApp(fake, config=cfg, session_factory=lambda c: FakeSession(opening())), fake


@async_test
async def test_each_key_sends_its_command_and_shows_it_pending_until_answered():
    app, fake = fake_app(answer=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        assert fake.starts == 1, "the app starts a session that has not started"
        await press(pilot, "space", "plus", "minus", "s", "e")
        assert fake.kinds() == ["pause", "scale_lr", "scale_lr", "save", "evaluate"]
        assert [c["factor"] for c in fake.sent if c["command"] == "scale_lr"] == [2.0, 0.5]
        # nothing answered yet: every command waits on the status panel
        assert set(app.pending) == {"paused", "lr_changed", "checkpoint_saved", "evaluated"}
        assert "saving checkpoint" in screen_text(app) and "(next step)" in screen_text(app)
        fake.emit(make_event("checkpoint_saved", path="runs/x/latest.npz", kind="latest", step=15, epoch=1))
        fake.emit(make_event("paused", reason="user", step=15))
        await wait_until(pilot, lambda: "checkpoint_saved" not in app.pending and app.paused, what="answers shown")
        assert "saving checkpoint" not in screen_text(app)
        assert [what for what, _ in app.latencies] == ["saving checkpoint", "pausing"]
        # paused: space now resumes
        assert app.check_action("resume", ()) is True and app.check_action("pause", ()) is False
        await press(pilot, "space")
        assert fake.kinds()[-1] == "resume"


@async_test
async def test_answers_from_the_session_show_at_once():
    app, fake = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        await press(pilot, "plus")
        await wait_until(pilot, lambda: app.lr == pytest.approx(0.002), what="lr x2 shown")
        assert "0.002" in screen_text(app)
        await press(pilot, "o")
        await dialog(pilot, OptimizerDialog)
        await press(pilot, "down", "down", "enter")  # from adam, two down: rmsprop
        await wait_until(pilot, lambda: app.optimizer == "rmsprop", what="rmsprop shown")
        assert fake.sent[-1]["command"] == "set_optimizer" and fake.sent[-1]["name"] == "rmsprop"


@async_test
async def test_help_palette_tabs_and_log_scale():
    app, fake = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        await press(pilot, "question_mark")
        await dialog(pilot, HelpScreen)
        await press(pilot, "escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, HelpScreen), what="help closed")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for t in ("Pause training", "Learning rate ×2", "Learning rate ÷2", "Set learning rate…",
                  "Choose optimizer…", "Save checkpoint", "Evaluate on test set", "Restart run…",
                  "Quit (save checkpoint)", "Show boundary"):
            assert t in titles
        assert "Resume training" not in titles, "the palette offers pause or resume, whichever applies"
        for key, tab in (("2", "inspector"), ("3", "predictions"), ("4", "boundary"), ("1", "dashboard")):
            await press(pilot, key)
            await wait_until(pilot, lambda tab=tab: app.active_tab == tab, what=tab)
        assert fake.kinds().count("snapshot") == 1, "opening a picture tab asks for pictures, at most every 3 s"
        await press(pilot, "l")
        await wait_until(pilot, lambda: app.log_scale, what="log scale")
        await wait_until(pilot, lambda: "log" in str(app.query_one("#loss-chart").border_title), what="log title")
        # a command from the palette's callback does what the key does
        cmd = next(c for c in app.get_system_commands(app.screen) if c.title == "Learning rate ×2")
        cmd.callback()
        assert fake.sent[-1] == {"command": "scale_lr", "factor": 2.0, "v": 1}


@async_test
async def test_keys_grey_out_when_the_run_ended():
    app, fake = fake_app([*opening(), finished()])
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.status == "finished", what="finish")
        for action in ("lr_up", "lr_down", "set_lr", "optimizer", "regularize", "save", "evaluate"):
            assert app.check_action(action, ()) is None, action
        # pause and resume leave the footer: nothing brings them back
        assert app.check_action("pause", ()) is False and app.check_action("resume", ()) is False
        assert app.check_action("restart", ()) is True
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Pause training" not in titles and "Save checkpoint" not in titles and "Restart run…" in titles
        await press(pilot, "q")  # nothing to lose: quits at once
        await wait_until(pilot, lambda: app.return_value is not None, what="the app exiting")
    assert app.return_value == 0 and fake.kinds() == []


@async_test
async def test_tabs_that_do_not_apply_are_greyed_out():
    app, _ = fake_app(opening(dataset="mnist"))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        assert app.check_action("show_tab", ("boundary",)) is None, "mnist is not 2-D"
        assert app.check_action("show_tab", ("predictions",)) is True
        assert "Show boundary" not in [c.title for c in app.get_system_commands(app.screen)]


@async_test
async def test_a_session_already_under_way_is_replayed_not_started():
    fake = FakeSession(opening(), started=True)
    app = TuinetApp(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the history replayed")
        assert fake.starts == 1
        assert app.check_action("restart", ()) is None, "no config and no session factory: no restart"


@async_test
async def test_remote_app_detaches_from_its_key_and_palette():
    fake = FakeSession(opening(), started=True)
    fake.run = "mlp-spiral"
    app = RemoteApp(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the history replayed")
        assert app.check_action("detach", ()) is True
        assert "Detach (leave training running)" in [c.title for c in app.get_system_commands(app.screen)]
        await press(pilot, "d")
        await wait_until(pilot, lambda: app.return_value is not None, what="the app exiting")
    assert app.outcome == "detached" and fake.running and fake.kinds() == []
