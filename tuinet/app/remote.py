"""The app on a detached trainer: ``d`` detaches, and quitting asks whether to stop training or leave it running.

:class:`RemoteApp` is the normal :class:`~tuinet.app.app.TuinetApp` driven by a
:class:`~tuinet.remote.client.RemoteSession`, with what only a remote run needs: a detach key, a three-way quit
question, no restart, and a lost terminal that detaches instead of stopping training.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

import tuinet.app.app as app_module
from tuinet.app import actions
from tuinet.app.app import TuinetApp, print_summary
from tuinet.training.signals import handle_stop_signals

if TYPE_CHECKING:
    from tuinet.remote.client import RemoteSession
    from tuinet.training.config import TrainConfig


class QuitRemoteDialog(ModalScreen["str | None"]):
    """Stop the training, leave it running, or cancel; dismisses with "stop", "detach" or None."""

    BINDINGS = [Binding("s", "choose('stop')", "Stop training"), Binding("d", "choose('detach')", "Leave running"),
                Binding("escape,n", "choose(None)", "Cancel")]

    def __init__(self, run: str | None, paused: bool = False):
        super().__init__(classes="dialog-screen")
        self.run = run or "this run"
        self.paused = paused

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as v:
            v.border_title = "Quit"
            how = "is paused" if self.paused else "is still running"
            yield Static(f"Training of {self.run} {how} in the background. Stop it (a checkpoint is saved) or leave "
                         f"it {'paused' if self.paused else 'running'} and close this viewer?",
                         classes="dialog-message")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Stop training [s]", id="stop", variant="error")
                yield Button("Leave running [d]", id="detach", variant="primary")
                yield Button("Cancel [esc]", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#detach", Button).focus()

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)


class RemoteApp(TuinetApp):
    """TuinetApp on a trainer in another process.

    Args:
        session: a connected :class:`~tuinet.remote.client.RemoteSession`.
        config: the run's TrainConfig (for the divergence dialog's factor; optional).
    """

    CSS_PATH = str(Path(app_module.__file__).with_name("app.tcss"))  # the subclass lives elsewhere: absolute path
    ACTIONS = (*actions.REMOTE_ACTIONS, *(a for a in actions.ACTIONS if a.id != "detach"))
    HELP_ACTIONS = (*ACTIONS, *actions.COMPARE_ACTIONS, *actions.NEURON_ACTIONS, *actions.STEP_ACTIONS,
                    *actions.DRAW_ACTIONS)
    BINDINGS = actions.bindings(actions.REMOTE_ACTIONS)  # Textual adds them to TuinetApp's (d: shown here)
    detachable = True

    def __init__(self, session: RemoteSession, config: TrainConfig | None = None, **kwargs: Any):
        super().__init__(session, config=config, session_factory=None, autostart=False, **kwargs)
        self.run_name: str | None = session.run  # the run's name before its events arrive
        self.outcome: str | None = None  # "detached", "detached-paused", "stopped" or None (the run ended)

    def _trainer_running(self) -> bool:
        return self.applies(actions.When.TRAINER_RUNNING)

    def action_detach(self) -> None:
        """Close this viewer; training goes on, or stays paused (reattach with `tuinet attach`)."""
        self.outcome = "detached-paused" if self.paused else "detached"
        self.exit(0)

    def _on_signal(self, signum: int) -> None:
        """A lost terminal (SIGHUP), SIGTERM or SIGINT ends this viewer only: the detached trainer goes on."""
        self.outcome = "detached"
        self.exit(128 + signum)

    def action_quit_app(self) -> None:
        """Quit: while training runs, ask whether to stop it (checkpoint saved) or leave it running."""
        if not self._trainer_running():
            self.exit(self._exit_code())
            return

        def done(choice: str | None) -> None:
            if choice == "stop":
                self.outcome = "stopped"
                self._quit()
            elif choice == "detach":  # "leave running" (or paused)
                self.action_detach()
        self.push_screen(QuitRemoteDialog(self.state.name or self.run_name, self.paused), done)


def run_remote_app(session: RemoteSession, config: TrainConfig | None = None) -> tuple[int, str | None]:
    """Run the app on ``session`` until the user detaches or quits; returns (exit code, outcome).

    However the app ends (``d``, quit, ctrl+q, a lost terminal), the trainer keeps running unless the user chose
    to stop it; the connection is closed on the way out.
    """
    app = RemoteApp(session, config=config)
    code = None
    try:
        with handle_stop_signals(app.deliver_signal):
            code = app.run()
    finally:
        if session.running:
            session.close()
    print_summary(session)  # a run that ended while watched: its summary stays on the terminal
    if not isinstance(code, int):
        code = 1 if app.state.status == "failed" else 0
    return code, app.outcome
