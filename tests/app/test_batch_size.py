"""The app's batch-size dialog (key B) against a scripted session: it opens on the run's batch size, sends one
set_batch_size, and follows the trainer's batch_size_changed answers: a size asked for the next epoch shows as
pending on the status panel, the applied one replaces the batch, the steps per epoch (the charts' epoch axis),
the plan and the log follow, and a line marks the change on the charts; bad values, escape and the same size
send nothing; a restart takes the sizes and regularization the run has now."""

from __future__ import annotations

from typing import Any

import pytest

from tests.app.fakes import FakeSession, opening
from tuinet.app.app import TuinetApp
from tuinet.app.screens.dialogs import BatchSizeDialog, parse_batch_size
from tuinet.app.testing import async_test, dialog_closed, press, wait_until
from tuinet.app.testing import open_dialog as open_typed
from tuinet.protocol import make_event
from tuinet.training.config import TrainConfig

SIZE = (120, 40)


def fake_app() -> tuple[TuinetApp, FakeSession]:
    """A spiral run at step 15 (batch 32, 10 steps per epoch, 100 epochs; its steps at epochs 0.5, 1 and 1.5)."""
    events = opening()
    events[0]["dataset"]["sizes"] = {"train": 320, "val": 40, "test": 40}
    events[0]["config"] = {**events[0]["config"], "dropout": 0.1, "l1": 0.0, "l2": 0.002}
    fake = FakeSession(events)
    return TuinetApp(fake, config=TrainConfig(dataset="spiral", epochs=100, batch_size=32)), fake


def status(app: TuinetApp) -> str:
    return str(app.query_one("#status").render())


def field(app: TuinetApp) -> str:
    return app.screen.query_one("#batch-input").value


async def open_dialog(pilot) -> None:
    await open_typed(pilot, "B", BatchSizeDialog, "#batch-input")


async def closed(pilot) -> None:
    await dialog_closed(pilot, BatchSizeDialog)


def asked(size: int, step: int = 15) -> dict[str, Any]:
    """The trainer's answer to a size asked for in the middle of epoch 2."""
    return make_event("batch_size_changed", batch_size=32, previous=32, pending=size, from_epoch=2, step=step,
                      epoch=1, steps_per_epoch=10, total_steps=1000)


def applied(size: int) -> dict[str, Any]:
    """The trainer's event when that size starts epoch 3 (at step 20)."""
    spe = -(-320 // size)
    return make_event("batch_size_changed", batch_size=size, previous=32, pending=None, from_epoch=2, step=20,
                      epoch=2, steps_per_epoch=spe, total_steps=20 + 98 * spe)


@async_test
async def test_b_opens_on_the_runs_batch_size_and_the_trainers_answers_follow():
    app, fake = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        await open_dialog(pilot)
        assert field(app) == "32"
        assert "10 steps per epoch of 320 samples" in str(app.screen.query_one(".dialog-message").render())
        await press(pilot, *"8", "enter")
        await closed(pilot)
        await wait_until(pilot, lambda: fake.sent, what="the command")
        assert fake.sent == [{"command": "set_batch_size", "batch_size": 8, "v": 1}]
        assert set(app.pending) == {"batch_size_changed"}
        await wait_until(pilot, lambda: "batch size → 8" in status(app), what="pending shown")

        fake.emit(asked(8))
        await wait_until(pilot, lambda: not app.pending, what="the answer")
        await wait_until(pilot, lambda: "batch 32 → 8 next epoch" in status(app), what="the size waiting")
        assert app.state.batch_size == 32 and app.state.steps_per_epoch == 10
        assert app.state.log[-1][-1] == "batch size 8 from epoch 3 (epoch 2 keeps batches of 32)"
        assert app.state.changes == [], "nothing changed yet: no line on the charts"

        fake.emit(make_event("step", step=20, epoch=2.0, loss=0.5, accuracy=0.6, lr=0.001, samples_per_second=1e3))
        fake.emit(applied(8))
        await wait_until(pilot, lambda: app.state.batch_size == 8, what="the new size")
        await wait_until(pilot, lambda: "→" not in status(app) and "batch 8" in status(app), what="shown")
        assert (app.state.steps_per_epoch, app.state.total_steps, app.state.batch_pending) == (40, 20 + 98 * 40, None)
        assert app.state.log[-1][-1] == "batch size 32 -> 8 from epoch 3 (40 steps per epoch)"
        assert app.state.changes == [2.0], "a line where epoch 3 started"
        # the steps after it count in the new epochs: step 40 is half way through epoch 3 (not epoch 4)
        fake.emit(make_event("validation", step=40, val_loss=0.4, val_accuracy=0.7))
        await wait_until(pilot, lambda: len(app.state.val_loss_s.x) == 1, what="the validation point")
        assert app.state.val_loss_s.x[-1] == pytest.approx(2.5)
        assert app.state.epoch_of(60) == pytest.approx(3.0) and app.state.epoch_of(10) == pytest.approx(1.0)

        # the dialog opens on the size the run has now
        await open_dialog(pilot)
        assert field(app) == "8"
        await press(pilot, "escape")
        await closed(pilot)
        assert fake.kinds() == ["set_batch_size"]


@async_test
async def test_bad_values_escape_and_the_same_size_send_nothing():
    app, fake = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        await open_dialog(pilot)
        for text in ("0", "abc", "65537", "2.5", "-4"):
            app.screen.query_one("#batch-input").value = text
            await press(pilot, "enter")
            await wait_until(pilot, lambda: "a batch size is a whole number from 1 to 65,536"
                             in str(app.screen.query_one("#batch-error").render()), what=f"the error for {text!r}")
            assert isinstance(app.screen, BatchSizeDialog), "the dialog stays open"
        await press(pilot, "escape")
        await closed(pilot)
        await open_dialog(pilot)
        await press(pilot, "enter")  # the run's own size, untouched
        await closed(pilot)
        await pilot.pause()
        assert fake.sent == []
        assert app.pending == {}


@async_test
async def test_a_restart_takes_the_batch_size_and_regularization_the_run_has_now():
    app, fake = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        assert (app.current_config().batch_size, app.current_config().dropout) == (32, 0.1)
        fake.emit(asked(128))
        await wait_until(pilot, lambda: app.state.batch_pending == 128, what="the size asked for")
        # a restart starts over at epoch 1: the size asked for the next epoch is the one to start with
        assert app.current_config().batch_size == 128
        assert "batch 128" in app._settings_text()
        fake.emit(make_event("regularization_changed", l1=0.0, l2=0.0, dropout=0.3, weight_decay=None,
                             previous={"l1": 0.0, "l2": 0.002, "dropout": 0.1, "weight_decay": None}, step=15))
        await wait_until(pilot, lambda: app.state.config.get("dropout") == 0.3, what="the new dropout")
        cfg = app.current_config()
        assert (cfg.dropout, cfg.l2, cfg.l1, cfg.batch_size) == (0.3, 0.0, 0.0, 128)


def test_typed_batch_sizes():
    assert parse_batch_size(" 256 ") == 256 and parse_batch_size("1,024") == 1024 and parse_batch_size("65536") == 65536
    for text in ("", "0", "1e3", "65537", "x"):
        assert isinstance(parse_batch_size(text), str)


@async_test
async def test_the_checkbox_scales_the_lr_with_the_batch():
    app, fake = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        await open_dialog(pilot)
        box = app.screen.query_one("#batch-scale-lr")
        await press(pilot, *"128")
        await wait_until(pilot, lambda: "scale the lr with it: 0.001 → 0.004 (×4)" in str(box.label), what="the label")
        fake.emit(make_event("step", step=16, epoch=1.6, loss=0.5, accuracy=0.6, lr=0.0005, samples_per_second=1e3))
        await wait_until(pilot, lambda: "scale the lr with it: 0.0005 → 0.002 (×4)" in str(box.label),
                         what="the label following the run's lr (a schedule moves it)")
        await press(pilot, "tab", "space")  # the checkbox, ticked
        assert box.value is True
        await press(pilot, "shift+tab", "enter")
        await closed(pilot)
        await wait_until(pilot, lambda: fake.sent, what="the command")
        assert fake.sent == [{"command": "set_batch_size", "batch_size": 128, "scale_lr": True, "v": 1}]
        fake.emit(make_event("batch_size_changed", batch_size=32, previous=32, pending=128, scale_lr=True,
                             from_epoch=2, step=15, epoch=1, steps_per_epoch=10, total_steps=1000))
        await wait_until(pilot, lambda: "batch 32 → 128 next epoch, lr ×4" in status(app), what="pending, scaled")
        assert app.state.log[-1][-1] == "batch size 128, the lr scaled with it, from epoch 3 (epoch 2 keeps batches of 32)"
