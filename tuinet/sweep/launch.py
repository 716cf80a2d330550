"""Starting and following a sweep driver in the background (``tuinet sweep --detach``, the Sweep app, and
``tuinet attach SWEEP``).

The driver runs as ``python -m tuinet.sweep.driver FOLDER`` in a new session (no controlling terminal; it ignores
SIGHUP), its output appended to ``driver.log``; every sweep event also goes to ``events.jsonl`` in the folder,
which a late viewer replays and then follows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from tuinet.errors import ConfigError
from tuinet.protocol import to_json
from tuinet.sweep.files import LOG_NAME, driver_pid
from tuinet.training.procs import reap_when_done

EVENTS_NAME = "events.jsonl"  # every sweep event, appended by the driver


class EventLog:
    """Append sweep events to ``events.jsonl`` (one JSON object per line, flushed), then pass them on."""

    def __init__(self, folder: Path, then: Callable[[dict[str, Any]], None] | None = None):
        self.path = Path(folder) / EVENTS_NAME
        self.then = then

    def __call__(self, event: dict[str, Any]) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (to_json(event) + "\n").encode())
        finally:
            os.close(fd)
        if self.then is not None:
            self.then(event)


def follow_events(folder: Path, stop: Callable[[], bool], poll: float = 0.3) -> Iterator[dict[str, Any]]:
    """The sweep's events from the start of ``events.jsonl``, then live ones until ``stop()`` says so (checked
    while no new line comes); a half-written last line waits for its end."""
    path = Path(folder) / EVENTS_NAME
    offset = 0
    buf = b""
    while True:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if isinstance(e, dict):
                yield e
        if not lines:
            if stop():
                return
            time.sleep(poll)


def launch_driver(folder: Path, wait: float = 60.0) -> int:
    """Start the driver of the sweep in ``folder`` (its ``sweep.json`` written) in the background; returns its
    pid once it holds the sweep's lock. ConfigError with the end of its log when it exits first."""
    folder = Path(folder).absolute()
    fd = os.open(folder / LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "tuinet.sweep.driver", str(folder)], stdin=subprocess.DEVNULL,
                                stdout=fd, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        os.close(fd)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if driver_pid(folder) == proc.pid:
            reap_when_done(proc)  # (the app that started it shows the sweep on: no zombie once the driver ends)
            return proc.pid
        if proc.poll() is not None:
            raise ConfigError(f"the sweep driver exited before it started: {log_tail(folder)}")
        time.sleep(0.1)
    raise ConfigError(f"the sweep driver did not start in {wait:.0f} s (see {folder / LOG_NAME})")


def log_tail(folder: Path, lines: int = 3) -> str:
    """The last lines of the driver's log, joined for one error line."""
    try:
        text = (Path(folder) / LOG_NAME).read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"no {LOG_NAME}"
    tail = [t for t in text[-lines:] if t.strip()]
    return " | ".join(tail) if tail else f"{LOG_NAME} is empty"
