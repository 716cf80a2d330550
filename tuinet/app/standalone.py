"""What the apps of one screen (``tuinet compare``, ``tuinet sweep``) share: their command palette built from the
actions table, and leaving the screen for the app on a live detached run (as `tuinet attach`) and coming back."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Iterable

from textual.app import App, SystemCommand
from textual.widget import Widget

from tuinet.app import actions
from tuinet.errors import TuinetError


def palette_commands(app: App, view: Widget, view_actions: Iterable[actions.Action],
                     app_actions: Iterable[actions.Action]) -> Iterable[SystemCommand]:
    """The view's keys that apply now, then the app's own (Textual's follow them)."""
    for entry in view_actions:
        if view.check_action(entry.name, entry.params):
            yield SystemCommand(entry.title, entry.palette_help,
                                functools.partial(getattr(view, f"action_{entry.name}"), *entry.params))
    for entry in app_actions:
        yield SystemCommand(entry.title, entry.palette_help, getattr(app, f"action_{entry.name}"))


def control_socket(path: Path) -> str | None:
    """The control socket a live detached trainer of run folder ``path`` names in its status.json (None when it
    names none, or the socket is gone)."""
    try:
        status = json.loads((Path(path) / "status.json").read_text())
    except (OSError, ValueError):
        return None
    sock = status.get("socket") if isinstance(status, dict) else None
    return sock if isinstance(sock, str) and Path(sock).exists() else None


def attach_detached(sock: str, config: dict[str, Any] | None) -> None:
    """The app on the detached trainer behind ``sock`` until the user detaches (``d``) or quits (asks whether to stop
    it); a trainer that ended in between is skipped (the screen that comes back shows how it ended)."""
    from tuinet.app.remote import run_remote_app
    from tuinet.remote.client import RemoteSession
    from tuinet.training.config import TrainConfig

    try:
        session = RemoteSession(sock)
    except TuinetError:
        return
    try:
        cfg = TrainConfig.from_dict(config) if config else None
    except TuinetError:
        cfg = None
    run_remote_app(session, cfg)
