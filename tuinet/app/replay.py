"""A session over recorded events: view a finished run's ``metrics.jsonl``, or show the app a deterministic stream
(the snapshot tests). Commands are validated and recorded, not applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from tuinet.protocol import PICTURE_EVENTS, Listener, from_json, validate_command


class ReplaySession:
    """Replays ``events`` to a viewer that attaches; ``emit`` feeds more events live (as a trainer would).

    Satisfies :class:`tuinet.protocol.Session`: it counts as started, and no trainer runs behind it.

    Args:
        events: recorded protocol events, oldest first.
    """

    def __init__(self, events: Iterable[dict[str, Any]] = ()):
        self.history: list[dict[str, Any]] = []
        self.last: dict[str, dict[str, Any]] = {}
        self.sent: list[dict[str, Any]] = []
        self._listeners: list[Listener] = []
        for e in events:
            self._record(e)

    @classmethod
    def from_jsonl(cls, path: str | Path) -> "ReplaySession":
        """Read a ``metrics.jsonl`` written by a run."""
        with open(path, encoding="utf-8") as f:
            return cls(from_json(line) for line in f if line.strip())

    def _record(self, e: dict[str, Any]) -> None:
        self.last[e["event"]] = e
        if e["event"] not in PICTURE_EVENTS:
            self.history.append(e)

    def emit(self, e: dict[str, Any]) -> None:
        """Record ``e`` and pass it to the listeners."""
        self._record(e)
        for fn in list(self._listeners):
            fn(e)

    @property
    def started(self) -> bool:
        """Always True: the recorded run has happened."""
        return True

    @property
    def running(self) -> bool:
        """Always False: no trainer runs behind a replay."""
        return False

    def start(self) -> None:
        """Nothing to start."""

    def join(self, timeout: float | None = None) -> bool:
        """Nothing to wait for: True at once."""
        return True

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn`` for every event emitted from now on."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        """Stop calling ``fn``."""
        if fn in self._listeners:
            self._listeners.remove(fn)

    def send(self, command: dict[str, Any]) -> None:
        """Validate and record a command (nothing trains here)."""
        self.sent.append(validate_command(command))

    @property
    def state(self) -> dict[str, Any]:
        """What the recorded ``started`` event said, updated by later lr, optimizer and batch-size events."""
        st: dict[str, Any] = {}
        for e in self.history:
            if e["event"] == "started":
                st.update(optimizer=e.get("optimizer"), lr=e.get("lr"), batch_size=e.get("batch_size"))
            elif e["event"] == "lr_changed":
                st["lr"] = e.get("lr")
            elif e["event"] == "optimizer_changed":
                st["optimizer"] = e.get("name")
            elif e["event"] == "batch_size_changed":
                st["batch_size"] = e.get("batch_size")
        return st
