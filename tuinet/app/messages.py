"""The app's own Textual messages."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class EventsArrived(Message):
    """Posted (thread-safely) by the session listener when an event that must show at once was queued: the app
    drains its queue now instead of at the next tick."""
