"""A Session runs a trainer in a background thread of this process and connects it to listeners.

The UI (or a headless printer) registers listeners that receive every event dict, called from the training thread,
and sends command dicts with :meth:`Session.send`; the trainer applies them between two optimizer steps. A
detached trainer behind a Unix socket offers the same interface (``RemoteSession``), so one UI drives both.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from tuinet.protocol import PICTURE_EVENTS, Listener, validate_command
from tuinet.training.history import EventHistory


class Session:
    """Train in a daemon thread; fan events out to listeners; queue commands for the trainer.

    Args:
        trainer: a :class:`~tuinet.training.trainer.Trainer` (not started).
    """

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.commands: queue.Queue[dict[str, Any]] = queue.Queue()
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.history = EventHistory()  # what a late viewer replays (bounded)
        self.last: dict[str, dict[str, Any]] = {}
        trainer.emit = self._emit
        trainer.commands = self.commands

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(event)`` for every event from now on (from the training thread)."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        """Stop calling ``fn``."""
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def _emit(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.last[event["event"]] = event
            if event["event"] not in PICTURE_EVENTS:
                self.history.append(event)
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(event)
            except Exception:  # a broken viewer must never kill training
                pass

    def start(self) -> None:
        """Start training in a daemon thread."""
        if self.thread is not None:
            raise RuntimeError("session already started")
        self.thread = threading.Thread(target=self.trainer.run, name="tuinet-trainer", daemon=True)
        self.thread.start()

    def send(self, command: dict[str, Any]) -> None:
        """Queue a command for the trainer (validated here; raises ConfigError when malformed)."""
        self.commands.put(validate_command(command))

    def join(self, timeout: float | None = None) -> bool:
        """Wait for training to end; True when it has."""
        if self.thread is None:
            return True
        self.thread.join(timeout)
        return not self.thread.is_alive()

    @property
    def started(self) -> bool:
        """True once :meth:`start` started the training thread."""
        return self.thread is not None

    @property
    def running(self) -> bool:
        """True while the training thread is alive."""
        return self.thread is not None and self.thread.is_alive()

    @property
    def state(self) -> dict[str, Any]:
        """The trainer's live state (status, paused, lr, optimizer, epoch, step ...), a copy."""
        return self.trainer.public_state()
