"""The actions table is the one description of the keys: the app's bindings, its command palette and the help screen
all come from it and agree with it."""

from __future__ import annotations

import asyncio

from textual.binding import Binding

from tests.app.fakes import FakeSession, opening
from tuinet.app import actions
from tuinet.app.app import TuinetApp
from tuinet.app.compare import CompareApp
from tuinet.app.remote import RemoteApp
from tuinet.app.screens.compare import CompareView
from tuinet.app.screens.help import HelpScreen
from tuinet.app.screens.dialogs import ConfirmDialog, DivergedDialog
from tuinet.app.testing import press, wait_for_screen, wait_until
from tuinet.protocol import ACKNOWLEDGED_BY, COMMANDS, make_event
from tuinet.training.config import TrainConfig


def _key(b: Binding) -> tuple:
    return (b.key, b.action, b.description, b.show, b.key_display, b.tooltip)


def test_every_binding_comes_from_the_table():
    assert [_key(b) for b in TuinetApp.BINDINGS] == [_key(b) for a in actions.ACTIONS for b in a.bindings()]
    assert [_key(b) for b in RemoteApp.BINDINGS] == [_key(b) for a in actions.REMOTE_ACTIONS for b in a.bindings()]
    assert [_key(b) for b in CompareView.BINDINGS] == [_key(b) for a in actions.COMPARE_ACTIONS
                                                       for b in a.bindings()]
    assert [_key(b) for b in CompareApp.BINDINGS] == [_key(b) for a in actions.COMPARE_APP_ACTIONS
                                                      for b in a.bindings()]
    ids = [a.id for a in (*actions.ACTIONS, *actions.COMPARE_ACTIONS)]
    assert len(ids) == len(set(ids)), "an action is in the table once"
    # the viewer's entries only show in its footer what the app binds (hidden) already
    assert {a.id for a in actions.REMOTE_ACTIONS} <= set(ids)


def test_every_compare_action_runs_a_method_of_the_view_or_the_compare_app():
    for a in actions.COMPARE_ACTIONS:
        assert callable(getattr(CompareView, f"action_{a.name}", None)), a.id
        assert a.description and a.label and a.title and a.command is None, a.id
    for a in actions.COMPARE_APP_ACTIONS:
        assert callable(getattr(CompareApp, f"action_{a.name}", None)), a.id


def test_compare_keys_leave_the_training_keys_alone_except_log_and_space():
    """On the compare tab the view's keys come first: only l (the same meaning: log scale of the loss) and space
    (the highlighted run in / out of the chart; pause stays in the palette and on the other tabs) are shared."""
    app_keys = {k for a in (*actions.ACTIONS, *actions.REMOTE_ACTIONS) for k in a.keys.split(",")}
    compare_keys = [k for a in actions.COMPARE_ACTIONS for k in a.keys.split(",")]
    assert len(compare_keys) == len(set(compare_keys))
    assert app_keys & set(compare_keys) == {"l", "space"}


def test_every_action_runs_a_method_and_sends_a_known_command():
    for app_class in (TuinetApp, RemoteApp):
        for a in app_class.ACTIONS:
            assert callable(getattr(app_class, f"action_{a.name}", None)), a.id
            assert a.description and a.label and a.title, a.id
            if a.command is not None:
                assert a.command in COMMANDS and a.command in ACKNOWLEDGED_BY, a.id
                assert a.when is actions.When.LIVE, f"{a.id} sends a command: it needs a live trainer"


def test_a_key_is_bound_to_one_action_except_the_pause_resume_pair():
    seen: dict[str, str] = {}
    for a in (*actions.ACTIONS, *actions.REMOTE_ACTIONS):
        for key in a.keys.split(","):
            assert key not in seen or seen[key] == a.id or {seen[key], a.id} == {"pause", "resume"}, key
            seen[key] = a.id
    assert [a.paused for a in actions.ACTIONS if a.keys == "space"] == [False, True]


def test_every_table_entry_is_in_the_help():
    for app_class in (TuinetApp, RemoteApp):
        table = actions.by_id(app_class.HELP_ACTIONS)
        assert set(table) == {a.id for a in (*app_class.ACTIONS, *actions.COMPARE_ACTIONS, *actions.NEURON_ACTIONS,
                                             *actions.STEP_ACTIONS, *actions.DRAW_ACTIONS)}
        covered = [i for row in app_class.HELP_ROWS for i in row.ids]
        assert sorted(covered) == sorted(table), app_class.__name__
        lines = actions.help_lines(app_class.HELP_ROWS, table)
        keys = " ".join(k for k, _ in lines)
        for a in table.values():
            assert a.key in keys, a.id
    compare_table = actions.by_id((*actions.COMPARE_ACTIONS, *actions.COMPARE_APP_ACTIONS))
    assert sorted(i for row in actions.COMPARE_APP_HELP_ROWS for i in row.ids) == sorted(compare_table)
    # what the help screen shows today, generated from the table
    assert actions.help_lines(actions.APP_HELP_ROWS, actions.by_id(TuinetApp.HELP_ACTIONS)) == [
        ("space", "pause / resume training"),
        ("+  -", "learning rate x2 / ÷2 (next step)"),
        ("L", "type an exact learning rate"),
        ("f", "lr finder: a range test on a copy; pick an lr on its curve"),
        ("o", "choose the optimizer (weights kept, fresh state)"),
        ("g", "set L1 / L2, weight decay and dropout (weights, optimizer state kept)"),
        ("B", "set the batch size (from the next epoch; weights and optimizer state kept)"),
        ("E", "plan more (or fewer) epochs: train on without a stop and a resume (a schedule is stretched over them)"),
        ("s", "save a checkpoint now"),
        ("e", "evaluate on the test set now"),
        ("n", "take one training step and show it stage by stage (pauses first; a count typed before it, 10n, "
              "takes that many)"),
        ("r", "restart with the current settings (asks first)"),
        ("l", "loss chart: log / linear scale"),
        ("[  ]", "layer by layer (predictions tab): the previous / next layer's view of the validation samples"),
        ("1 2 3 4 5 6", "dashboard, inspector, predictions, boundary, compare (or c), draw"),
        ("tab", "focus the next panel (shift+tab: back), then ↑ ↓ PgUp PgDn scroll it; ← → on the tab bar switch "
                "tabs"),
        ("ctrl+p", "command palette (every action by name)"),
        ("?", "this help"),
        ("d", "close this viewer; training goes on (in a viewer of a detached run)"),
        ("q ctrl+q ctrl+c", "quit: stops training and saves a checkpoint (asks first)"),
        ("", ""),
        ("", "in the step view (n):"),
        ("space", "back to normal training (resume) and close the step view"),
        ("esc", "close the step view; training stays paused"),
        ("", ""),
        ("", "on the boundary tab's neuron maps:"),
        ("↑ ↓ ← →", "select a unit (or click its picture): it is drawn large"),
        ("esc", "back to the decision boundary"),
        ("", ""),
        ("", "on the draw tab:"),
        ("mouse", "draw with the left button, erase with the right"),
        ("← → ↑ ↓", "move the pen"),
        ("shift+← shift+→ shift+↑ shift+↓", "draw as the pen moves"),
        ("enter", "ink (or erase) a dot at the pen"),
        ("p", "the left button and the keys: pen ↔ eraser (the right button always erases)"),
        ("x backspace", "clear the canvas"),
        ("t", "put the next test sample on the canvas, to change it and watch the answer move"),
        ("m", "centre and size the drawing as MNIST's digits were (on) or give it as drawn (off)"),
        ("", ""),
        ("", "on the compare tab:"),
        ("space", "put the highlighted run in / out of the chart"),
        ("a", "every shown run in / out of the chart (at most 8)"),
        ("enter", "open the highlighted run: a finished one's summary (curves, confusion), or how to attach to a "
                  "live one"),
        ("b", "branch the highlighted run: a new detached run from its checkpoint, with the options you change"),
        ("x", "x axis: epoch → step → samples seen → wall time"),
        ("v", "curves: validation → train → both"),
        ("m", "smooth the curves on / off"),
        ("l", "loss chart: log / linear scale"),
        ("S R", "sort by the next column / reverse (or click a heading)"),
        ("/", "filter the runs (e.g. dataset=mnist, lr<0.01, model~cnn; empty: all)"),
        ("D", "the settings diff of the charted runs: show / hide"),
        ("w", "draw a digit: how each charted run reads it, with its saved weights"),
    ]
    remote = actions.help_lines(RemoteApp.HELP_ROWS, actions.by_id(RemoteApp.HELP_ACTIONS))
    assert ("d", "close this viewer; training goes on") in remote


def test_the_palette_the_help_screen_and_the_footer_of_a_running_app_agree_with_the_table():
    async def scenario(app_class):
        fake = FakeSession(opening(), started=True)
        fake.run = "mlp-spiral"
        if app_class is RemoteApp:
            app = RemoteApp(fake)
        else:
            app = TuinetApp(fake, config=TrainConfig(dataset="spiral"), session_factory=lambda c: fake)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_until(pilot, lambda: app.state.step == 15, what="the history replayed")
            palette = {c.title: c.help for c in app.get_system_commands(app.screen)}
            footer = {b.action: b.description for _, b, _, _ in app.screen.active_bindings.values() if b.show}
            # the palette holds every entry that applies now, as the table words it; the footer every shown key
            # that is not hidden (resume: the run is not paused; restart in the remote viewer; the draw tab: the spiral
            # is not a set of gray images)
            applying = [a for a in app_class.ACTIONS if app.check_action(a.name, a.params)]
            assert len(applying) >= len(app_class.ACTIONS) - 3
            for a in app_class.ACTIONS:
                assert palette.get(a.title) == (a.palette_help if a in applying else None), a.id
                if a.show and app.check_action(a.name, a.params) is not False:
                    assert footer[a.id] == a.label, a.id
            await press(pilot, "question_mark")
            await wait_for_screen(pilot, HelpScreen, what="the help screen")
            assert app.screen.key_lines == actions.help_lines(app_class.HELP_ROWS,
                                                              actions.by_id(app_class.HELP_ACTIONS))

    for app_class in (TuinetApp, RemoteApp):
        asyncio.run(scenario(app_class))



def test_ctrl_q_and_ctrl_c_ask_like_q():
    """q, ctrl+q and ctrl+c are one confirmed quit: each asks first, and only yes stops training."""
    async def scenario():
        fake = FakeSession(opening(), started=True)
        app = TuinetApp(fake, config=TrainConfig(dataset="spiral"))
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_until(pilot, lambda: app.state.step == 15, what="the history replayed")
            for key in ("ctrl+q", "ctrl+c"):
                await press(pilot, key)
                await wait_for_screen(pilot, ConfirmDialog, what="the quit question")
                assert not [c for c in fake.sent if c["command"] == "stop"]
                await press(pilot, "escape")
                await wait_until(pilot, lambda: not isinstance(app.screen, ConfirmDialog), what="the question closed")
            await press(pilot, "ctrl+c")
            await wait_for_screen(pilot, ConfirmDialog, what="the quit question")
            await press(pilot, "y")
            await wait_until(pilot, lambda: app.return_value is not None, what="the app to exit")
        assert app.return_value == 0

    asyncio.run(scenario())


def test_the_divergence_dialog_rolls_back_by_the_factor_the_trainer_proposes():
    async def scenario():
        diverged = make_event("diverged", step=20, loss=3e29, lr=1.0, new_lr=0.1, factor=0.1, repeated=True,
                              reason="blow-up", action="paused")
        fake = FakeSession([*opening(), diverged, make_event("paused", reason="diverged", step=20)], started=True)
        app = TuinetApp(fake, config=TrainConfig(dataset="spiral"))
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for_screen(pilot, DivergedDialog, what="the divergence dialog")
            await press(pilot, "r")
            await wait_until(pilot, lambda: any(c["command"] == "rollback" for c in fake.sent), what="rollback")
        assert [c["factor"] for c in fake.sent if c["command"] == "rollback"] == [0.1]

    asyncio.run(scenario())
