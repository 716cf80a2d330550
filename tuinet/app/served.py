"""The app in a browser tab (``tuinet serve``): a driver that ends the viewer once its page is gone, and the page
itself, which always says what it shows.

textual-serve runs one process per browser tab and talks to it through pipes: the page's keys and size come in on
stdin, the screen goes out on stdout. :class:`ServedDriver` is Textual's web driver with what a long-lived viewer
needs on top of it:

- the page is gone when stdin ends (the server closed it, or died), when stdout breaks or stays full for
  :data:`WRITE_DEADLINE` seconds (nobody reads it), or when the server says "quit": the app then exits at once, and
  so does every app this process would have shown next (:func:`page_gone`);
- SIGTERM, SIGINT and SIGHUP end the viewer the same way (the web driver's own handler only posts an exit that a
  blocked write could hold up forever);
- several apps can run one after another in one process (the runs page, then the app on the run picked there):
  the "this is a Textual app" prelude goes out once per process.

:func:`run_page` is what a tab shows: the app on the live run, or, when there is none to show, the runs of the folder
on the Compare screen under the reason, where Enter opens a finished run's summary or attaches to a live one.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import threading
import time
from typing import Any

from textual import messages
from textual.drivers.web_driver import WebDriver

from tuinet.errors import TuinetError

#: seconds a write to the page may wait for the server to read before the page counts as gone
WRITE_DEADLINE = 20.0
#: what textual-serve waits for before it reads the screen packets
PRELUDE = b"__GANGLION__\n"
#: the import path textual-serve's child takes its driver from (TEXTUAL_DRIVER)
DRIVER_PATH = "tuinet.app.served:ServedDriver"

_gone = threading.Event()
_prelude_sent = threading.Event()


def page_gone() -> bool:
    """Whether this process's page is gone (no further app should start)."""
    return _gone.is_set()


class ServedDriver(WebDriver):
    """Textual's web driver, ending the app when its page is gone (see the module's docstring)."""

    def __init__(self, app: Any, **kwargs: Any):
        super().__init__(app, **kwargs)
        self._write = self._guarded_write

    def _page_lost(self) -> None:
        """Mark the page gone and end the app (from any thread)."""
        _gone.set()
        self._app.post_message(messages.ExitApp())

    def _guarded_write(self, data: bytes) -> None:
        """Write ``data`` to the page, never blocking for more than WRITE_DEADLINE; once the page is gone, drop it."""
        if _gone.is_set():
            return
        if data == PRELUDE:
            if _prelude_sent.is_set():
                return
            _prelude_sent.set()
        fd = self.fileno
        view = memoryview(data)
        deadline = time.monotonic() + WRITE_DEADLINE
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
            try:
                while view:
                    try:
                        view = view[os.write(fd, view):]
                    except BlockingIOError:
                        left = deadline - time.monotonic()
                        if left <= 0 or not select.select([], [fd], [], left)[1]:
                            raise TimeoutError("the page reads nothing") from None
            finally:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        except (OSError, TimeoutError):  # a broken pipe (the server died) or a server that stopped reading
            self._page_lost()

    def start_application_mode(self) -> None:
        """Start as the web driver does, then take the stop signals: each ends this viewer (and the page)."""
        super().start_application_mode()
        import asyncio

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._page_lost)

    def stop_application_mode(self) -> None:
        """Stop as the web driver does, and let the input thread finish so the next app's reads the input alone."""
        super().stop_application_mode()
        if self._key_thread.is_alive() and threading.current_thread() is not self._key_thread:
            self._key_thread.join(1.0)

    def run_input_thread(self) -> None:
        """Read the page's input; when it ends before the app stopped (EOF: the server closed it), the page is gone."""
        super().run_input_thread()
        if not self.exit_event.is_set():
            self._page_lost()

    def on_meta(self, packet_type: str, payload: dict[str, object]) -> None:
        """The server's "quit" means the page closed: no app comes after this one."""
        if packet_type == "quit":
            _gone.set()
        super().on_meta(packet_type, payload)


def _runs_page(reason: str, runs_dir: str | None) -> int:
    """The runs of ``runs_dir`` on the Compare screen with ``reason`` above them, until the user quits or the page
    goes (Enter on a live run attaches to it, and its app comes back here)."""
    from tuinet.app.compare import run_compare_app
    from tuinet.training.compare import load_runs

    try:
        records = load_runs(runs_dir)
    except (TuinetError, OSError) as e:
        records, reason = [], f"{reason} ({e})"
    note = f"{reason}. Pick a run below: Enter attaches to a live one or opens a finished one's summary."
    return run_compare_app(records, runs_dir, note=note, until=page_gone)


def run_page(run: str | None, runs_dir: str | None) -> int:
    """What a browser tab shows: the app on the live run ``run`` (default: the only live run); when there is none
    to attach to, the runs page with the reason. Returns the exit code once the user leaves or the page is gone."""
    from tuinet.app.remote import run_remote_app
    from tuinet.remote.client import RemoteSession
    from tuinet.remote.runs import resolve
    from tuinet.training.config import TrainConfig

    try:
        rd, status = resolve(run, runs_dir)
        session = RemoteSession(status["socket"])
    except TuinetError as e:
        return _runs_page(str(e), runs_dir)
    try:
        config = TrainConfig.from_dict(rd.read_json("config.json"))
    except TuinetError:
        config = None
    code, _ = run_remote_app(session, config)
    return code
