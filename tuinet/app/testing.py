"""Helpers for driving the app headlessly (inside ``App.run_test``) while a trainer keeps the CPU busy: the tests,
``scripts/screenshots.py`` and ``benchmarks/app_cost.py`` press keys and wait with these.

``Pilot.press`` waits for an idle CPU after every key, which never comes while training runs (each press would cost
seconds); :func:`press` waits until the screen has handled the key instead.
"""

from __future__ import annotations

import asyncio
import functools
import time
import unicodedata
from typing import Callable

from textual import events
from textual.app import App
from textual.keys import REPLACED_KEYS, _character_to_key, _get_unicode_name_from_key
from textual.pilot import Pilot


def key_event(key: str) -> events.Key:
    """The Key event a terminal produces for ``key``, a Textual key name ("plus", "question_mark", "L") or one
    character, built as ``Pilot.press`` builds it."""
    if len(key) == 1 and not key.isalnum():
        key = _character_to_key(key)
    try:
        char = unicodedata.lookup(_get_unicode_name_from_key(REPLACED_KEYS.get(key, key)))
    except KeyError:
        char = key if len(key) == 1 else None
    return events.Key(key, char)


def send_key(app: App, key: str) -> None:
    """Hand one key press to the app, as its driver does, and return at once."""
    event = key_event(key)
    event.set_sender(app)
    app.post_message(event)


async def press(pilot: Pilot, *keys: str) -> None:
    """Press ``keys`` one after another; after each, wait until the screen has handled it."""
    for key in keys:
        send_key(pilot.app, key)
        await asyncio.sleep(0.01)  # the key reaches the screen through the app's queue: let it get there first
        await pilot.pause(0)  # then wait until the screen and its widgets have processed what they were sent


async def wait_until(pilot: Pilot, cond: Callable[[], object], timeout: float = 20.0, what: str = "a condition",
                     poll: float = 0.05) -> None:
    """Let the app run until ``cond()`` is true; TimeoutError after ``timeout`` seconds."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        await pilot.pause(poll)


async def wait_for_screen(pilot: Pilot, screen_type: type, timeout: float = 20.0, what: str = "a screen") -> None:
    """Let the app run until the screen on top is a ``screen_type`` whose widgets are mounted: ``push_screen`` puts
    the screen on the stack at once, but composes and mounts its children a moment later, so a query straight after
    ``isinstance(app.screen, ...)`` can find nothing."""
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, screen_type) and pilot.app.screen.is_mounted,
                     timeout=timeout, what=what)


async def open_dialog(pilot: Pilot, key: str, screen_type: type, field: str) -> None:
    """Press ``key`` and wait for the ``screen_type`` dialog it opens, with its widget ``field`` (a selector) focused:
    a key pressed before that would not reach the field."""
    await press(pilot, key)
    await wait_for_screen(pilot, screen_type, what=f"the dialog of {key}")
    await wait_until(pilot, lambda: pilot.app.screen.focused is pilot.app.screen.query_one(field),
                     what=f"{field} focused")


async def dialog_closed(pilot: Pilot, screen_type: type) -> None:
    """Wait until the ``screen_type`` dialog is gone."""
    await wait_until(pilot, lambda: not isinstance(pilot.app.screen, screen_type), what="the dialog closed")


def async_test(fn):
    """Run an async test function with asyncio (no pytest-asyncio needed)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))
    return wrapper
