"""Alerts: tell the user when a run finishes, diverges, stops early, fails or trips a watch rule.

Three ways out, each optional:

* the terminal: a bell and a desktop notification through escape codes (OSC 9, understood by iTerm2, Windows
  Terminal, WezTerm, kitty, ConEmu; OSC 777, by foot, Ghostty, rxvt-unicode and VTE terminals such as GNOME
  Terminal). They travel over SSH like any output, and a terminal that does not know them ignores them. Written only
  when the stream is a terminal; inside tmux they are wrapped in its passthrough sequence.
* ``--notify CMD``: the command runs through the shell with the alert as one JSON object on its standard input
  (``notify-send``, ``mail``, a script of your own).
* ``--notify-url URL``: a webhook or chat service through apprise (the optional extra ``tuinet[notify]``).

The trainer runs the command and the webhook itself (headless, in the app and detached alike); the terminal codes
come from whoever owns the terminal (the headless printer, the app).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import threading
import time
from typing import Any, Callable, TextIO

from tuinet.errors import ConfigError
from tuinet.formatting import fmt_num, fmt_pct

#: events that may raise an alert (a ``paused`` or ``stopped`` one only when a watch rule caused it; an early stop
#: through the ``finished`` event that follows it)
ALERT_EVENTS = frozenset({"finished", "diverged", "early_stopped", "failed", "paused", "stopped"})
COMMAND_TIMEOUT = 30.0  # seconds a --notify command may take
REPEAT_SECONDS = 60.0  # the same kind of alert (a divergence repeating) at most this often
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _rule_reason(event: dict[str, Any]) -> str | None:
    reason = str(event.get("reason") or "")
    return reason if reason.startswith("watch rule") else None


def make_alert(event: dict[str, Any], run: str | None) -> dict[str, Any] | None:
    """The alert an event raises (None for most events): ``{"alert", "run", "title", "message", "event"}``."""
    kind = event.get("event")
    if kind not in ALERT_EVENTS:
        return None
    name = run or event.get("name") or "run"
    if kind == "finished":
        acc = event.get("test_accuracy")
        what = f"test accuracy {fmt_pct(acc)}" if acc is not None else f"test loss {fmt_num(event.get('test_loss'))}"
        message = f"finished {event.get('epochs')} epochs: {what}"
        if event.get("stopped_early"):  # one alert for the run's end, named for why it ended
            kind = "early_stopped"
            message = f"stopped early at epoch {event.get('epochs')} (best epoch {event.get('best_epoch')}): {what}"
    elif kind == "diverged":
        message = f"diverged at step {event.get('step')} ({event.get('reason')}): {event.get('action')}"
    elif kind == "early_stopped":
        return None  # the `finished` that follows raises it, with the test figures
    elif kind == "failed":
        message = f"failed: {event.get('error')}"
    elif _rule_reason(event):
        message = f"{kind} by {_rule_reason(event)}"
        kind = "watch_rule"
    else:
        return None
    return {"alert": kind, "run": name, "title": f"tuinet: {name}", "message": message, "event": event}


def terminal_codes(alert: dict[str, Any], tmux: bool | None = None) -> str:
    """The bell and the OSC 9 and OSC 777 desktop notifications for ``alert`` (control characters removed)."""
    title = _CONTROL.sub(" ", alert["title"]).replace(";", ",")
    body = _CONTROL.sub(" ", alert["message"])
    codes = f"\x1b]9;{title}: {body}\x07\x1b]777;notify;{title};{body.replace(';', ',')}\x07"
    if tmux if tmux is not None else bool(os.environ.get("TMUX")):
        codes = f"\x1bPtmux;{codes.replace(chr(27), chr(27) * 2)}\x1b\\"
    return "\a" + codes


def notify_terminal(alert: dict[str, Any], stream: TextIO) -> bool:
    """Write the bell and notification codes to ``stream`` when it is a terminal; True when written."""
    try:
        if not stream.isatty():
            return False
        stream.write(terminal_codes(alert))
        stream.flush()
        return True
    except (OSError, ValueError):  # a closed or lost terminal
        return False


class Throttle:
    """Lets the same kind of alert through at most once every ``seconds`` (a divergence that repeats rings once)."""

    def __init__(self, seconds: float = REPEAT_SECONDS):
        self.seconds = seconds
        self._last: dict[str, float] = {}

    def allow(self, kind: str) -> bool:
        """True when an alert of ``kind`` may go out now (and remembers that it did)."""
        now = time.monotonic()
        if now - self._last.get(kind, -self.seconds) < self.seconds:
            return False
        self._last[kind] = now
        return True


class TerminalAlerts:
    """A listener that rings ``stream``'s terminal (bell, OSC 9, OSC 777) for each alert an event raises; nothing
    when the stream is not a terminal."""

    def __init__(self, stream: TextIO, run: str | None = None):
        self.stream, self.run = stream, run
        self.throttle = Throttle()

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") == "started":
            self.run = event.get("name") or self.run
        alert = make_alert(event, self.run)
        if alert is not None and self.throttle.allow(alert["alert"]):
            notify_terminal(alert, self.stream)


def check_notify_url(url: str) -> Any:
    """An apprise notifier for ``url``; a ConfigError with one line when the extra is missing or the URL unknown."""
    if importlib.util.find_spec("apprise") is None:
        raise ConfigError("--notify-url needs the optional extra: pip install 'tuinet[notify]' (apprise)")
    import apprise

    a = apprise.Apprise()
    if not a.add(url):
        raise ConfigError(f"--notify-url {url!r}: not a URL apprise knows (see its list of services, e.g. "
                          "json://HOST/PATH, ntfy://TOPIC, mailto://USER:PASS@HOST)")
    return a


class Alerts:
    """Sends every alert a run raises to a ``--notify`` command and a ``--notify-url`` webhook, each in a thread of
    its own (training does not wait); :meth:`wait` lets them finish before the process ends.

    Args:
        command: shell command given the alert as JSON on stdin (None: none).
        url: apprise URL (None: none).
    Notifications that fail are kept in :attr:`errors` (the trainer writes them to the run's log.txt).
    """

    def __init__(self, command: str | None = None, url: str | None = None):
        self.command = command
        self.apprise = check_notify_url(url) if url else None
        self.errors: list[str] = []
        self.run: str | None = None
        self._threads: list[threading.Thread] = []
        self.throttle = Throttle()
        self.sent: list[dict[str, Any]] = []

    @property
    def active(self) -> bool:
        """Whether anything would be notified."""
        return bool(self.command or self.apprise)

    def __call__(self, event: dict[str, Any]) -> None:
        alert = make_alert(event, self.run)
        if alert is None or not self.active:
            return
        if not self.throttle.allow(alert["alert"]):
            return
        self.sent.append(alert)
        if self.command:
            self._start(self._run_command, alert)
        if self.apprise is not None:
            self._start(self._post, alert)

    def _start(self, fn: Callable[[dict[str, Any]], None], alert: dict[str, Any]) -> None:
        t = threading.Thread(target=fn, args=(alert,), name="tuinet-alert", daemon=True)
        t.start()
        self._threads.append(t)

    def _run_command(self, alert: dict[str, Any]) -> None:
        data = json.dumps(alert, default=str)
        try:
            r = subprocess.run(self.command, shell=True, input=data, text=True, capture_output=True,
                               timeout=COMMAND_TIMEOUT, check=False)
            if r.returncode != 0:
                self.errors.append(f"--notify command exited with {r.returncode}: {r.stderr.strip()[-200:]}")
        except (OSError, subprocess.SubprocessError) as e:
            self.errors.append(f"--notify command failed: {e}")

    def _post(self, alert: dict[str, Any]) -> None:
        try:
            if not self.apprise.notify(title=alert["title"], body=alert["message"]):
                self.errors.append("--notify-url: the notification was not delivered")
        except Exception as e:  # noqa: BLE001 - a webhook's failure must never reach training
            self.errors.append(f"--notify-url failed: {e}")

    def wait(self, timeout: float = COMMAND_TIMEOUT + 5) -> None:
        """Wait (at most ``timeout`` seconds in all) for the notifications under way."""
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]
