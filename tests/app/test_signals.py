"""The app in a real pseudo-terminal loses nothing to a hang-up, SIGTERM or SIGINT: the trainer finishes its step,
saves a checkpoint and marks the run stopped, and the process exits with 128 + the signal. Ctrl-C, a key there,
asks first as q does."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


class AppInPty:
    """``tuinet train`` in the app, in a pseudo-terminal of its own (it is the session leader, as in an SSH login)."""

    def __init__(self, runs: Path, name: str):
        self.status_path = runs / name / "status.json"
        self.metrics_path = runs / name / "metrics.jsonl"
        argv = [sys.executable, "-m", "tuinet.cli", "train", "--dataset", "digits", "--model", "32",
                "--epochs", "100000", "--name", name]
        pid, fd = pty.fork()
        if pid == 0:  # the child: becomes the app
            os.environ["TERM"] = "xterm-256color"
            os.execv(sys.executable, argv)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.code: int | None = None

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.output += chunk

    def status(self) -> dict:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}

    def wait_training(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.status()
            if s.get("status") == "running" and (s.get("step") or 0) > 0:
                return
            assert self.poll() is None, f"the app exited early ({self.code}): {bytes(self.output[-2000:])!r}"
            time.sleep(0.1)
        raise AssertionError("training did not start")

    def poll(self) -> int | None:
        if self.code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def wait_exit(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            assert time.monotonic() < deadline, "the app did not exit"
            time.sleep(0.05)
        return self.code

    def close(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.wait_exit()
        try:
            os.close(self.fd)
        except OSError:
            pass

    def stopped_event(self) -> dict:
        events = [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
        return [e for e in events if e["event"] == "stopped"][-1]


@pytest.mark.parametrize("how", ["SIGHUP", "SIGTERM", "SIGINT", "hang-up", "hang-up+SIGCONT"])  # ctrl+c asks first
def test_the_app_stops_cleanly(tmp_path, how):
    runs = Path(os.environ["TUINET_RUNS_DIR"])
    app = AppInPty(runs, "sig")
    try:
        app.wait_training()
        if how.startswith("hang-up"):
            os.close(app.fd)  # the terminal goes away (an SSH connection drops): the kernel sends SIGHUP
            if how == "hang-up+SIGCONT":  # and SIGCONT to a session leader; sent again here so it always comes
                os.kill(app.pid, signal.SIGCONT)
        else:
            os.kill(app.pid, getattr(signal, how))
        code = app.wait_exit()
    finally:
        app.close()
    signum = signal.SIGHUP if how.startswith("hang-up") else getattr(signal, how)
    assert code == 128 + signum, bytes(app.output[-3000:])
    status = app.status()
    assert status["status"] == "stopped"
    stopped = app.stopped_event()
    assert stopped["reason"] == signal.Signals(signum).name
    assert (runs / "sig" / "latest.npz").is_file()
    assert stopped["step"] >= status.get("step", 0) > 0
    if not how.startswith("hang-up"):  # the terminal was restored: the app left the alternate screen and showed the cursor
        text = bytes(app.output)
        assert text.rfind(b"\x1b[?1049l") > text.rfind(b"\x1b[?1049h") >= 0


def test_ctrl_c_in_the_app_asks_like_q(tmp_path):
    """In the app Ctrl-C is a key (the terminal is raw): it opens the quit question; yes stops with a checkpoint."""
    runs = Path(os.environ["TUINET_RUNS_DIR"])
    app = AppInPty(runs, "ctrlc")
    try:
        app.wait_training()
        os.write(app.fd, b"\x03")
        deadline = time.monotonic() + 60
        while b"save a checkpoint and quit?" not in bytes(app.output):
            assert time.monotonic() < deadline and app.poll() is None, bytes(app.output[-2000:])
            time.sleep(0.1)
        os.write(app.fd, b"y")
        code = app.wait_exit()
    finally:
        app.close()
    assert code == 0
    assert app.status()["status"] == "stopped"
    assert (runs / "ctrlc" / "latest.npz").is_file()
