"""Alerts: the terminal's bell and desktop notifications only on a terminal, --notify and --notify-url get the event."""

from __future__ import annotations

import http.server
import json
import os
import pty
import select
import subprocess
import sys
import threading
import time

import pytest
from tuinet.errors import ConfigError
from tuinet.training import alerts as A
from tuinet.training.config import TrainConfig
from tuinet.training.trainer import Trainer

FAST = dict(dataset="gaussian", model="8", epochs=2, batch_size=64, keep_epochs=0)


def _read_all(fd: int, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> bytes:
    """Everything written to a pty master until the writer is gone (or its process ended and nothing is left)."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            out += chunk
        elif proc is not None and proc.poll() is not None:
            break
    return out


def test_codes_go_to_a_terminal_and_never_to_a_pipe():
    alert = A.make_alert({"event": "finished", "epochs": 3, "test_accuracy": 0.9812}, "run-a")
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        assert A.notify_terminal(alert, tty) is True
    out = _read_all(master).decode()
    os.close(master)
    assert out.startswith("\a") and "\x1b]9;tuinet: run-a: finished 3 epochs: test accuracy 98.12%\x07" in out
    assert "\x1b]777;notify;tuinet: run-a;finished 3 epochs: test accuracy 98.12%\x07" in out
    r, w = os.pipe()
    with os.fdopen(w, "w") as pipe:
        assert A.notify_terminal(alert, pipe) is False
    with os.fdopen(r) as f:
        assert f.read() == ""


def test_codes_carry_no_control_characters_and_pass_through_tmux():
    alert = A.make_alert({"event": "failed", "error": "bad\x1b]0;x\x07 ; thing"}, "r;un")
    codes = A.terminal_codes(alert, tmux=False)
    assert codes.count("\x1b") == 2 and codes.count("\x07") == 3  # the bell and the two sequences' own
    assert "\x1b]777;notify;tuinet: r,un;" in codes
    wrapped = A.terminal_codes(alert, tmux=True)
    assert wrapped.startswith("\a\x1bPtmux;\x1b\x1b]9;") and wrapped.endswith("\x1b\\")


def test_which_events_raise_an_alert():
    assert A.make_alert({"event": "diverged", "step": 5, "reason": "non-finite", "action": "paused"}, "r")["alert"] \
        == "diverged"
    assert A.make_alert({"event": "early_stopped", "epoch": 4, "best_epoch": 2}, "r") is None  # the finished after
    early = A.make_alert({"event": "finished", "epochs": 4, "best_epoch": 2, "stopped_early": True,
                          "test_accuracy": 0.9}, "r")
    assert early["alert"] == "early_stopped" and early["message"].startswith("stopped early at epoch 4 (best epoch 2)")
    assert A.make_alert({"event": "paused", "reason": "watch rule: val_loss rises 2"}, "r")["alert"] == "watch_rule"
    assert A.make_alert({"event": "paused", "reason": "user"}, "r") is None
    assert A.make_alert({"event": "stopped", "reason": "SIGINT"}, "r") is None
    assert A.make_alert({"event": "epoch"}, "r") is None


@pytest.mark.slow
def test_a_headless_run_rings_its_terminal_only(tmp_path):
    args = [sys.executable, "-m", "tuinet", "train", "--headless", "--dataset", "gaussian", "--epochs", "1",
            "--runs-dir", str(tmp_path)]
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    out = _read_all(master, proc).decode(errors="replace")
    os.close(master)
    assert proc.wait(60) == 0, out
    assert "\x1b]9;tuinet: " in out and "\x1b]777;notify;tuinet: " in out and "\a" in out
    piped = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert "finished 1 epoch in" in piped.stdout
    assert "\x1b]" not in piped.stdout + piped.stderr and "\a" not in piped.stdout + piped.stderr


def test_notify_command_receives_the_event_as_json(tmp_path):
    got = tmp_path / "alert.json"
    final = Trainer(TrainConfig(runs_dir=str(tmp_path), name="n", notify=f"cat > {got}", **FAST)).run()
    assert final["event"] == "finished"
    alert = json.loads(got.read_text())  # the trainer waited for the command before it returned
    assert alert["alert"] == "finished" and alert["run"] == "n" and "test accuracy" in alert["message"]
    assert alert["event"]["event"] == "finished" and alert["event"]["test_accuracy"] == final["test_accuracy"]


def test_a_failing_notify_command_is_logged_not_fatal(tmp_path):
    final = Trainer(TrainConfig(runs_dir=str(tmp_path), name="f", notify="echo nope >&2; exit 3", **FAST)).run()
    assert final["event"] == "finished"
    assert "--notify command exited with 3: nope" in (tmp_path / "f" / "log.txt").read_text()


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_notify_url_posts_to_a_webhook(tmp_path):
    pytest.importorskip("apprise")  # the `notify` extra (installed with `test`)
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"json://127.0.0.1:{server.server_address[1]}/hook"
        final = Trainer(TrainConfig(runs_dir=str(tmp_path), name="w", notify_url=url, **FAST)).run()
    finally:
        server.shutdown()
    assert final["event"] == "finished"
    assert len(_Hook.received) == 1
    assert _Hook.received[0]["title"] == "tuinet: w" and "finished 2 epochs" in _Hook.received[0]["message"]


def test_notify_url_without_the_extra_is_one_clear_error(monkeypatch):
    real = A.importlib.util.find_spec
    monkeypatch.setattr(A.importlib.util, "find_spec", lambda name, *a: None if name == "apprise" else real(name, *a))
    with pytest.raises(ConfigError, match=r"tuinet\[notify\]"):
        Trainer(TrainConfig(notify_url="json://127.0.0.1/x", **FAST), run_dir=False).prepare()
