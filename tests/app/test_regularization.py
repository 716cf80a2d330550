"""The app's regularization dialog (key g) against a scripted session: it opens on the run's L1, L2 and dropout,
sends only what changed as one set_regularization command, shows it pending until the trainer's
regularization_changed event, which the status panel, the layers and the event log then follow; bad values, escape
and unchanged values send nothing; a run that is over opens no dialog."""

from __future__ import annotations

from typing import Any

from tests.app.fakes import FakeSession, finished, opening
from tuinet.app.app import TuinetApp
from tuinet.app.screens.dialogs import RegularizationDialog
from tuinet.app.testing import async_test, dialog_closed, press, wait_until
from tuinet.app.testing import open_dialog as open_typed
from tuinet.protocol import make_event
from tuinet.training.config import TrainConfig

SIZE = (120, 40)
LAYERS = [{"name": "dense_1", "kind": "Dense", "output_shape": [16], "params": 48},
          {"name": "dropout_1", "kind": "Dropout", "output_shape": [16], "params": 0},
          {"name": "dense_2", "kind": "Dense", "output_shape": [2], "params": 34}]


def reg_opening(**config: Any) -> list[dict[str, Any]]:
    """A spiral run's opening (started at step 0, then steps 5, 10, 15) whose started event's config holds
    ``config`` (dropout 0.1, l2 0 by default)."""
    events = opening()
    events[0]["config"] = {**events[0]["config"], "dropout": 0.1, "l1": 0.0, "l2": 0.0, **config}
    return events


def fake_app(events: list[dict[str, Any]]) -> tuple[TuinetApp, FakeSession]:
    fake = FakeSession(events)
    return TuinetApp(fake, config=TrainConfig(dataset="spiral", epochs=100)), fake


def status(app: TuinetApp) -> str:
    """The visible text of the status panel."""
    return str(app.query_one("#status").render())


def field(app: TuinetApp, key: str) -> str:
    return app.screen.query_one(f"#reg-{key}").value


def error(app: TuinetApp) -> str:
    return str(app.screen.query_one("#reg-error").render())


async def open_dialog(pilot) -> None:
    await open_typed(pilot, "g", RegularizationDialog, "#reg-l1")


async def closed(pilot) -> None:
    await dialog_closed(pilot, RegularizationDialog)


@async_test
async def test_g_opens_on_the_runs_values_and_enter_sends_only_what_changed():
    app, fake = fake_app(reg_opening())
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        await wait_until(pilot, lambda: "dropout 0.1" in status(app), what="the run's dropout on the status panel")
        await open_dialog(pilot)
        assert (field(app, "l1"), field(app, "l2"), field(app, "dropout")) == ("0", "0", "0.1")
        assert app.screen.focused is app.screen.query_one("#reg-l1"), "the dialog starts on L1"
        # type over the L2 and dropout fields (tab selects a field's text); L1 is left as it was
        await press(pilot, "tab", *"0.001", "tab", *"0.3")
        assert (field(app, "l1"), field(app, "l2"), field(app, "dropout")) == ("0", "0.001", "0.3")
        await press(pilot, "enter")
        await closed(pilot)
        await wait_until(pilot, lambda: fake.sent, what="the command (the dialog's callback runs after it closes)")
        assert fake.sent == [{"command": "set_regularization", "l2": 0.001, "dropout": 0.3, "v": 1}]
        assert set(app.pending) == {"regularization_changed"}
        await wait_until(pilot, lambda: "l2 → 0.001, dropout → 0.3 (next step)" in status(app), what="pending shown")


@async_test
async def test_the_trainers_answer_updates_status_layers_and_log():
    app, fake = fake_app(reg_opening())
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        await open_dialog(pilot)
        app.screen.query_one("#reg-l2").value = "0.001"
        app.screen.query_one("#reg-dropout").value = "0.3"
        await press(pilot, "enter")
        await closed(pilot)
        await wait_until(pilot, lambda: "l2 → 0.001, dropout → 0.3" in status(app), what="pending shown")
        assert app.state.config["dropout"] == 0.1 and app.state.config["l2"] == 0.0, "nothing applied before the answer"

        fake.emit(make_event("regularization_changed", l1=0.0, l2=0.001, dropout=0.3,
                             previous={"l1": 0.0, "l2": 0.0, "dropout": 0.1}, step=15, layers=LAYERS, num_params=82))
        await wait_until(pilot, lambda: not app.pending, what="the answer")
        await wait_until(pilot, lambda: "dropout 0.3, l2 0.001" in status(app), what="the new values shown")
        assert "→" not in status(app) and "(next step)" not in status(app), "the pending line is gone"
        assert "dropout 0.1" not in status(app)
        assert [app.state.config[k] for k in ("l1", "l2", "dropout")] == [0.0, 0.001, 0.3]
        assert app.state.layers == LAYERS
        line = "regularization: l2 0 -> 0.001, dropout 0.1 -> 0.3 from step 16"
        assert app.state.log[-1][-1] == line
        await wait_until(pilot, lambda: any(t.plain.endswith(line) for t in app.query_one("#event-log").log_lines),
                         what="the line in the event log")
        assert [what for what, _ in app.latencies] == ["l2 → 0.001, dropout → 0.3"]

        # the dialog opens on the run's values as they are now
        await open_dialog(pilot)
        assert (field(app, "l1"), field(app, "l2"), field(app, "dropout")) == ("0", "0.001", "0.3")
        await press(pilot, "escape")
        await closed(pilot)
        assert fake.kinds() == ["set_regularization"]


@async_test
async def test_bad_values_escape_and_unchanged_values_send_nothing():
    app, fake = fake_app(reg_opening(l2=0.001))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        await open_dialog(pilot)
        assert error(app) == ""
        for key, value, says in (("dropout", "1", "dropout must be in [0, 1)"),
                                 ("dropout", "0.5", None),
                                 ("l2", "-0.1", "l2 must be a number >= 0"),
                                 ("l2", "0.01", None),
                                 ("l1", "banana", "l1 must be a number, got 'banana'")):
            app.screen.query_one(f"#reg-{key}").value = value
            if says is None:
                continue
            await press(pilot, "enter")
            await wait_until(pilot, lambda says=says: says in error(app), what=f"the error for {key}")
            assert isinstance(app.screen, RegularizationDialog), "a bad value keeps the dialog open"
            await wait_until(pilot, lambda key=key: app.screen.focused is app.screen.query_one(f"#reg-{key}"),
                             what="the bad field to take the focus (Textual moves it after the handler)")
            assert fake.sent == [] and not app.pending
        # escape drops what was typed, valid or not
        await press(pilot, "escape")
        await closed(pilot)
        assert fake.sent == [] and not app.pending

        # the same values again, typed or not, send nothing either
        await open_dialog(pilot)
        assert (field(app, "l1"), field(app, "l2"), field(app, "dropout")) == ("0", "0.001", "0.1")
        assert error(app) == "", "a new dialog starts without the old error"
        app.screen.query_one("#reg-dropout").value = "0.10"
        app.screen.query_one("#reg-l2").value = " 1e-3 "
        await press(pilot, "enter")
        await closed(pilot)
        assert fake.sent == [] and not app.pending
        assert "→" not in status(app)


@async_test
async def test_g_on_a_finished_run_opens_nothing_and_says_why():
    app, fake = fake_app([*reg_opening(), finished()])
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.status == "finished", what="finish")
        toasts: list[str] = []
        show = app.notify
        app.notify = lambda message, **kwargs: (toasts.append(str(message)), show(message, **kwargs))[1]
        assert app.check_action("regularize", ()) is None, "greyed out"
        await press(pilot, "g")
        await wait_until(pilot, lambda: toasts, what="a toast for g")
        assert "the run is over (finished): q quits; `tuinet resume mlp-spiral --epochs N` trains it on" in toasts[-1]
        await pilot.pause(0)
        assert len(app.screen_stack) == 1 and not isinstance(app.screen, RegularizationDialog)
        assert fake.sent == [] and not app.pending


@async_test
async def test_a_value_of_many_digits_is_shown_whole_so_enter_on_it_changes_nothing():
    app, fake = fake_app(reg_opening(l2=0.00012345678, dropout=0.0))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        await open_dialog(pilot)
        assert (field(app, "l2"), field(app, "dropout")) == ("0.00012345678", "0")
        await press(pilot, "enter")
        await closed(pilot)
        assert fake.sent == [] and not app.pending


@async_test
async def test_the_optimizers_weight_decay_is_a_field_and_follows_the_trainers_answer():
    events = reg_opening()
    events[0]["optimizer"], events[0]["hyperparams"] = "adamw", {"lr": 0.001, "weight_decay": 0.05}
    app, fake = fake_app(events)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        await wait_until(pilot, lambda: "weight_decay=0.05" in status(app), what="the optimizer's decay shown")
        await open_dialog(pilot)
        assert field(app, "weight_decay") == "0.05"  # the optimizer's own, not a config value
        app.screen.query_one("#reg-weight_decay").value = "0.1"
        await press(pilot, "enter")
        await closed(pilot)
        await wait_until(pilot, lambda: fake.sent, what="the command (the dialog's callback runs after it closes)")
        assert fake.sent == [{"command": "set_regularization", "weight_decay": 0.1, "v": 1}]
        fake.emit(make_event("regularization_changed", l1=0.0, l2=0.0, dropout=0.1, weight_decay=0.1,
                             previous={"l1": 0.0, "l2": 0.0, "dropout": 0.1, "weight_decay": 0.05}, step=15))
        await wait_until(pilot, lambda: "weight_decay=0.1" in status(app), what="the new decay in the status panel")
        assert app.state.log[-1][-1] == "regularization: weight_decay 0.05 -> 0.1 from step 16"
        assert app.state.layers == events[0]["layers"]  # no layers in the event: unchanged


@async_test
async def test_an_optimizer_without_weight_decay_gets_no_such_field():
    app, fake = fake_app(reg_opening())  # its hyperparams: lr alone
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        await open_dialog(pilot)
        assert not app.screen.query("#reg-weight_decay") and app.screen.query("#reg-dropout")


def test_layers_renamed_by_new_dropout_layers_keep_their_gradient_history():
    """Dropout layers shift the names of the layers after them (names are by position): each layer's history goes
    on under its new name."""
    from tuinet.app.state import RunState

    st = RunState()
    old = [{"name": "dense_0", "kind": "Dense", "params": 8}, {"name": "relu_1", "kind": "ReLU", "params": 0},
           {"name": "dense_2", "kind": "Dense", "params": 4}]
    new = [old[0], old[1], {"name": "dropout_2", "kind": "Dropout", "params": 0},
           {"name": "dense_3", "kind": "Dense", "params": 4}]
    st.apply(make_event("started", config={"dropout": 0.0}, dataset={"name": "x", "task": "classification"},
                        layers=old, steps_per_epoch=10, total_steps=100, epochs=10, batch_size=8, optimizer="adam",
                        hyperparams={"lr": 0.1}, lr=0.1))
    for step in (10, 20):
        st.apply(make_event("layer_stats", step=step, layers=[{"name": "dense_0", "grad_norm": 1.0 * step},
                                                              {"name": "dense_2", "grad_norm": 2.0 * step}]))
    st.apply(make_event("regularization_changed", l1=0.0, l2=0.0, dropout=0.2, weight_decay=0.0,
                        previous={"l1": 0.0, "l2": 0.0, "dropout": 0.0, "weight_decay": 0.0}, step=25, layers=new))
    assert list(st.grad_history["dense_3"]) == [20.0, 40.0] and "dense_2" not in st.grad_history
    assert list(st.grad_history["dense_0"]) == [10.0, 20.0]
    assert st.layer_rows["dense_3"]["name"] == "dense_3" and "dense_2" not in st.layer_rows
