"""Pilot tests: every hotkey and dialog of the app against a real (small, fast) training run.

Each test asserts the effect on the trainer itself (lr in ``trainer.optimizer.lr``, the optimizer object, steps not
advancing while paused) and on the screen. Runs use the 2-D spiral dataset so they start in well under a second.
"""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path

import pytest

from tuinet.training.config import TrainConfig
from tuinet.training.session import Session
from tuinet.training.trainer import Trainer
from tuinet.app.app import TuinetApp
from tuinet.app.screens.dialogs import ConfirmDialog, DivergedDialog, LrDialog, OptimizerDialog
from tuinet.app.screens.help import HelpScreen

SIZE = (120, 40)


def async_test(fn):
    """Run an async test function with asyncio (no pytest-asyncio needed)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))
    return wrapper


def make_app(tmp_path: Path, **overrides) -> tuple[TuinetApp, Session]:
    """An app on a spiral run long enough not to finish during a test."""
    opts = dict(dataset="spiral", epochs=500, batch_size=32, runs_dir=str(tmp_path), on_divergence="pause",
                log_every=5, stats_every=20)
    opts.update(overrides)
    cfg = TrainConfig(**opts)
    session = Session(Trainer(cfg))
    app = TuinetApp(session, config=cfg, session_factory=lambda c: Session(Trainer(c)))
    return app, session


async def press(pilot, *keys: str) -> None:
    """Press keys like ``Pilot.press`` without its wait for an idle CPU (never idle while training runs: each
    press would cost two seconds); waits until the screen processed each key instead."""
    import unicodedata

    from textual import events
    from textual.keys import REPLACED_KEYS, _character_to_key, _get_unicode_name_from_key

    app = pilot.app
    for key in keys:
        if len(key) == 1 and not key.isalnum():
            key = _character_to_key(key)
        original = REPLACED_KEYS.get(key, key)
        try:
            char = unicodedata.lookup(_get_unicode_name_from_key(original))
        except KeyError:
            char = key if len(key) == 1 else None
        event = events.Key(key, char)
        event.set_sender(app)
        app._driver.send_message(event)
        await asyncio.sleep(0.01)
        await pilot._wait_for_screen()


async def wait_for(pilot, cond, timeout: float = 20.0, what: str = "condition") -> None:
    """Let the app run until ``cond()`` is true."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def dialog(pilot, cls) -> None:
    """Wait until a dialog of type ``cls`` is on top and composed."""
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, cls) and len(pilot.app.screen.query("Static, Input"))
                   > 0, what=cls.__name__)
    await pilot._wait_for_screen()


async def started(pilot, app: TuinetApp, session: Session, steps: int = 10) -> None:
    """Wait until the trainer is past its first ``steps`` steps and the app has shown them."""
    await wait_for(pilot, lambda: session.trainer.global_step >= steps and app.state.step > 0, what="training")


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
        await wait_for(pilot, lambda: session.trainer.paused and app.paused, what="pause")
        step = session.trainer.global_step
        await pilot.pause(0.5)
        assert session.trainer.global_step == step, "steps advanced while paused"
        assert "paused" in screen_text(app)
        assert app.check_action("resume", ()) is True and app.check_action("pause", ()) is False
        await press(pilot, "space")
        await wait_for(pilot, lambda: session.trainer.global_step > step + 5, what="resume")
        # the trainer runs ahead of the screen by up to a tick: wait for the app to show it
        await wait_for(pilot, lambda: not app.paused and "running" in screen_text(app), what="running shown")
        await shutdown(app, session)


@async_test
async def test_lr_keys_double_and_halve(tmp_path):
    app, session = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, session)
        lr0 = session.trainer.optimizer.lr
        await press(pilot, "plus")
        await wait_for(pilot, lambda: app.lr == pytest.approx(2 * lr0), what="lr x2 shown")
        assert session.trainer.optimizer.lr == pytest.approx(2 * lr0)
        assert "0.002" in screen_text(app)
        await press(pilot, "minus")
        await press(pilot, "minus")
        await wait_for(pilot, lambda: app.lr == pytest.approx(lr0 / 2), what="lr /4 shown")
        assert session.trainer.optimizer.lr == pytest.approx(lr0 / 2)
        assert app.latencies, "the app records how long each command took to show"
        await shutdown(app, session)


@async_test
async def test_lr_dialog_sets_exact_value_and_rejects_garbage(tmp_path):
    app, session = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, session)
        await press(pilot, "L")
        await dialog(pilot, LrDialog)
        inp = app.screen.query_one("Input")
        inp.value = "banana"
        await press(pilot, "enter")
        await wait_for(pilot, lambda: "not a positive number" in str(app.screen.query_one("#lr-error").render()),
                       what="error shown")
        assert isinstance(app.screen, LrDialog), "a bad value keeps the dialog open"
        inp.value = "0.0123"
        await press(pilot, "enter")
        await wait_for(pilot, lambda: session.trainer.optimizer.lr == pytest.approx(0.0123), what="exact lr")
        await wait_for(pilot, lambda: "0.0123" in screen_text(app), what="lr on screen")
        # escape cancels without sending anything
        await press(pilot, "L")
        await dialog(pilot, LrDialog)
        await press(pilot, "escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, LrDialog), what="dialog closed")
        await pilot.pause(0.2)
        assert session.trainer.optimizer.lr == pytest.approx(0.0123)
        await shutdown(app, session)


@async_test
async def test_optimizer_dialog_swaps_optimizer(tmp_path):
    app, session = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, session)
        assert session.trainer.optimizer.name == "adam"
        await press(pilot, "o")
        await dialog(pilot, OptimizerDialog)
        # the list starts on the current optimizer (adam, third); rmsprop is two below
        await press(pilot, "down", "down", "enter")
        await wait_for(pilot, lambda: session.trainer.optimizer.name == "rmsprop", what="rmsprop")
        await wait_for(pilot, lambda: app.optimizer == "rmsprop", what="rmsprop shown")
        assert "rmsprop" in screen_text(app)
        step = session.trainer.global_step
        await wait_for(pilot, lambda: session.trainer.global_step > step + 3, what="training goes on")
        # momentum: SGD with momentum 0.9, with a typed learning rate
        await press(pilot, "o")
        await dialog(pilot, OptimizerDialog)
        app.screen.query_one("#opt-list").highlighted = 1
        app.screen.query_one("#opt-lr").value = "0.05"
        await press(pilot, "enter")
        await wait_for(pilot, lambda: session.trainer.optimizer.name == "sgd", what="sgd")
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
        await wait_for(pilot, lambda: latest.exists(), what="checkpoint file")
        await wait_for(pilot, lambda: any("checkpoint" in text for _, _, text in app.state.log), what="log line")
        await press(pilot, "e")
        await wait_for(pilot, lambda: app.state.evaluated is not None, what="evaluation")
        assert 0.0 <= app.state.evaluated["accuracy"] <= 1.0
        assert "test" in screen_text(app)
        await shutdown(app, session)


@async_test
async def test_restart_starts_a_new_session_with_current_settings(tmp_path):
    app, session = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, session)
        await press(pilot, "plus")
        await wait_for(pilot, lambda: app.lr == pytest.approx(0.002), what="lr x2")
        await press(pilot, "r")
        await dialog(pilot, ConfirmDialog)
        await press(pilot, "n")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmDialog), what="dialog closed")
        assert app.session is session and session.running, "n cancels the restart"
        await press(pilot, "r")
        await dialog(pilot, ConfirmDialog)
        await press(pilot, "y")
        await wait_for(pilot, lambda: app.session is not session, what="new session")
        assert not session.running and session.last.get("stopped"), "the old run stopped (checkpoint saved)"
        new = app.session
        await wait_for(pilot, lambda: new.trainer.global_step > 3 and app.state.step > 0, what="new run trains")
        assert new.trainer.optimizer.lr == pytest.approx(0.002), "restart keeps the current lr"
        assert new.trainer.run_dir.path != session.trainer.run_dir.path
        assert any("restarted" in text for _, _, text in app.state.log)
        await shutdown(app, new)


@async_test
async def test_quit_asks_then_stops_with_checkpoint(tmp_path):
    app, session = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, session)
        await press(pilot, "q")
        await dialog(pilot, ConfirmDialog)
        await press(pilot, "escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmDialog), what="dialog closed")
        assert session.running, "escape cancels quitting"
        await press(pilot, "q")
        await dialog(pilot, ConfirmDialog)
        await press(pilot, "y")
        await wait_for(pilot, lambda: not session.running, what="stop")
        await pilot.pause(0.3)
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
        await wait_for(pilot, lambda: session.trainer.optimizer.lr < lr_before, what="rollback lowers lr")
        assert session.trainer.optimizer.lr == pytest.approx(lr_before * 0.5)
        await wait_for(pilot, lambda: any("rolled back" in text for _, _, text in app.state.log), what="log")
        # it diverges again (1e8 is far too high): this time continue, which resumes training as is
        await dialog(pilot, DivergedDialog)
        await press(pilot, "c")
        await wait_for(pilot, lambda: any("resumed" in text for _, _, text in app.state.log), what="resumed")
        await shutdown(app, session)


@async_test
async def test_help_palette_tabs_and_log_scale(tmp_path):
    app, session = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, session)
        await press(pilot, "question_mark")
        await dialog(pilot, HelpScreen)
        await press(pilot, "escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen), what="help closed")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for t in ("Pause / resume training", "Learning rate ×2", "Learning rate ÷2", "Set learning rate…",
                  "Choose optimizer…", "Save checkpoint", "Evaluate on test set", "Restart run…",
                  "Quit (save checkpoint)"):
            assert t in titles
        for key, tab in (("2", "inspector"), ("3", "predictions"), ("4", "boundary"), ("1", "dashboard")):
            await press(pilot, key)
            await wait_for(pilot, lambda tab=tab: app.active_tab == tab, what=tab)
        await press(pilot, "l")
        await wait_for(pilot, lambda: app.log_scale, what="log scale")
        await wait_for(pilot, lambda: "log" in str(app.query_one("#loss-chart").border_title), what="log title")
        # a command from the palette's callback does what the key does
        cmd = next(c for c in app.get_system_commands(app.screen) if c.title == "Learning rate ×2")
        lr0 = session.trainer.optimizer.lr
        cmd.callback()
        await wait_for(pilot, lambda: session.trainer.optimizer.lr == pytest.approx(2 * lr0), what="palette lr")
        await shutdown(app, session)


@async_test
async def test_keys_grey_out_when_the_run_ended(tmp_path):
    app, session = make_app(tmp_path, epochs=1)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state.status == "finished", what="finish")
        for action in ("pause", "lr_up", "lr_down", "set_lr", "optimizer", "save", "evaluate"):
            assert app.check_action(action, ()) is None, action
        assert app.check_action("resume", ()) is False
        assert app.check_action("restart", ()) is True
        await press(pilot, "q")  # nothing to lose: quits at once
        await pilot.pause(0.2)
    assert app.return_value == 0
