"""Start training from a thread of normal priority, and optionally lower the UI thread's priority afterwards.

A thread inherits the nice value of the thread that starts it. The UI thread may lower its own priority
(``TUINET_UI_NICE``), so training threads are started from :data:`LAUNCHER`, a thread that the UI thread creates
before it lowers its own priority, so that it keeps the normal one for every later run (a restart). docs/tui.md has the measurements behind this.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Callable

from tuinet.protocol import Session


class Launcher:
    """A thread that runs callables for the UI thread, one at a time, while the caller waits."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], object], threading.Event, list[BaseException]]] = queue.Queue()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while True:
            fn, done, box = self._jobs.get()
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                box.append(e)
            done.set()

    def call(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` in the launcher thread; re-raise what it raised."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tuinet-launcher", daemon=True)
            self._thread.start()
        done, box = threading.Event(), []
        self._jobs.put((fn, done, box))
        done.wait()
        if box:
            raise box[0]


#: the launcher of this process
LAUNCHER = Launcher()


def lower_ui_priority() -> None:
    """Give the calling (UI) thread the nice value ``TUINET_UI_NICE`` when that is above its own (off by default)."""
    nice = int(os.environ.get("TUINET_UI_NICE", "0"))
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), max(current, nice))
    except OSError:
        pass


def start_session(session: Session) -> None:
    """Start ``session``'s training from the launcher thread, then lower the calling thread's priority if asked."""
    LAUNCHER.call(session.start)
    lower_ui_priority()
