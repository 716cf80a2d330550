"""The app's epochs dialog (key E) against a scripted session: it opens on the run's plan, sends one set_epochs,
and the trainer's epochs_changed answer moves the plan on the top bar, the status panel and the log; a number below
the epoch in progress, escape and the same plan send nothing; a restart takes the plan."""

from __future__ import annotations

from tests.app.fakes import FakeSession, opening
from tuinet.app.app import TuinetApp
from tuinet.app.screens.dialogs import EpochsDialog, parse_epochs
from tuinet.app.testing import async_test, dialog_closed, press, wait_until
from tuinet.app.testing import open_dialog as open_typed
from tuinet.protocol import make_event
from tuinet.training.config import TrainConfig

SIZE = (120, 40)


def fake_app() -> tuple[TuinetApp, FakeSession]:
    """A spiral run at step 15 of 1,000 (epoch 1.5 of 100, 10 steps per epoch), on a cosine schedule."""
    events = opening()
    events[0]["config"] = {**events[0]["config"], "epochs": 100, "schedule": "cosine"}
    fake = FakeSession(events)
    return TuinetApp(fake, config=TrainConfig(dataset="spiral", epochs=100, schedule="cosine")), fake


def status(app: TuinetApp) -> str:
    return str(app.query_one("#status").render())


async def open_dialog(pilot) -> None:
    await open_typed(pilot, "E", EpochsDialog, "#epochs-input")


@async_test
async def test_e_plans_more_epochs_and_the_answer_moves_the_plan():
    app, fake = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        await open_dialog(pilot)
        assert app.screen.query_one("#epochs-input").value == "100"
        message = str(app.screen.query_one(".dialog-message").render())
        assert "Planned: 100 epochs, 1 done" in message and "at least 2" in message and "cosine schedule" in message
        await press(pilot, *"150", "enter")
        await dialog_closed(pilot, EpochsDialog)
        await wait_until(pilot, lambda: fake.sent, what="the command")
        assert fake.sent == [{"command": "set_epochs", "epochs": 150, "v": 1}]
        await wait_until(pilot, lambda: "epochs → 150" in status(app), what="pending shown")
        fake.emit(make_event("epochs_changed", epochs=150, previous=100, step=15, epoch=1, total_steps=1500,
                             lr=0.0009))
        await wait_until(pilot, lambda: app.state.epochs == 150 and not app.pending, what="the answer")
        await wait_until(pilot, lambda: "/1,500" in status(app) and "/150" in status(app), what="the new plan shown")
        assert app.state.log[-1][-1] == "epochs 100 -> 150 (from step 16, lr 0.0009)"
        assert app.state.changes == [1.5], "a line where the plan changed"
        assert app.current_config().epochs == 150


@async_test
async def test_too_few_epochs_escape_and_the_same_plan_send_nothing():
    app, fake = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        await open_dialog(pilot)
        for text in ("1", "0", "x", "1e3"):
            app.screen.query_one("#epochs-input").value = text
            await press(pilot, "enter")
            await wait_until(pilot, lambda: "epochs: a whole number from 2 (the epoch in progress)"
                             in str(app.screen.query_one("#epochs-error").render()), what=f"the error for {text!r}")
        await press(pilot, "escape")
        await dialog_closed(pilot, EpochsDialog)
        await open_dialog(pilot)
        await press(pilot, "enter")  # the plan as it is
        await dialog_closed(pilot, EpochsDialog)
        await pilot.pause()
        assert fake.sent == []


def test_typed_epochs():
    assert parse_epochs(" 40 ", 3) == 40 and parse_epochs("1,000", 1) == 1000
    for text in ("2", "", "-4", "1000001"):
        assert isinstance(parse_epochs(text, 3), str)
