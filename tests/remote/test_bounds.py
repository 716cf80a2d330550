"""A detached trainer's socket is bounded: any line a viewer sends is answered, never fatal; viewers are capped.

Each test starts a real trainer process (MNIST, 2000 samples); its finalizer kills it.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from tests.remote.conftest import attach_alone, wait_until
from tuinet.remote import server as server_mod
from tuinet.remote.client import RemoteSession
from tuinet.remote.sockets import RemoteError, socket_path_for

pytestmark = pytest.mark.slow  # every test here runs a trainer process


class RawViewer:
    """A viewer speaking raw bytes on the socket: reads past the history, sends any line, finds the answers."""

    def __init__(self, path: Path, timeout: float = 30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")
        self.first = self.next()
        assert self.first["event"] == "hello", self.first
        self.step = 0
        while self.next()["event"] != "history_end":
            pass

    def next(self) -> dict | None:
        """The next line as an event (None at the end of the connection); remembers the newest step."""
        try:
            line = self.file.readline()
        except ConnectionResetError:  # closed by the trainer while part of our line was still unread there
            return None
        if not line:
            return None
        e = json.loads(line)
        if e.get("event") == "step":
            self.step = e["step"]
        return e

    def wait_for(self, pred) -> dict | None:
        """Read until an event for which ``pred`` is true (or the end of the connection: None)."""
        while True:
            e = self.next()
            if e is None or pred(e):
                return e

    def error(self) -> str:
        """The message of the next `log` error addressed to this viewer."""
        e = self.wait_for(lambda e: e["event"] == "log" and e.get("level") == "error")
        assert e is not None, "the connection ended without an answer"
        return e["message"]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _trains_on(viewer: RawViewer) -> None:
    """The trainer still trains: a step beyond the newest one this viewer has seen arrives."""
    seen = viewer.step
    assert viewer.wait_for(lambda e: e["event"] == "step" and e["step"] > seen) is not None


def _send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    """Send a line the trainer will stop reading half way (it closes the connection): the send may fail."""

    def send():
        try:
            sock.sendall(data)
        except OSError:
            pass

    t = threading.Thread(target=send, daemon=True)
    t.start()
    return t


def test_malformed_lines_are_answered_with_an_error_and_training_goes_on(start_trainer):
    rd, proc = start_trainer("bad-lines")
    path = socket_path_for(rd.path)
    v = RawViewer(path)
    try:
        cases = [
            (b'{"command":"set_optimizer","name":5}\n', "optimizer name must be a text"),
            (b'{"command":"set_optimizer","name":{"a":{"b":[1,2]}}}\n', "optimizer name must be a text"),
            (b"[" * 30000 + b"]" * 30000 + b"\n", "nested too deeply"),  # within the line limit: parsed
            (b'{"command": "pause", "reason": "\xff\xfe"}\n', "not a JSON command"),  # not UTF-8
            (b"\xc3\x28\n", "not a JSON command"),
            (b'{"command": "set_lr", "lr": 1e999}\n', "command refused"),
            (b'"just a string"\n', "not a JSON command"),
        ]
        for line, expected in cases:
            v.sock.sendall(line)
            message = v.error()
            assert expected in message, (line[:60], message)
            assert len(message) < 400
            _trains_on(v)
        # still steerable: a valid command is obeyed
        v.sock.sendall(b'{"command": "pause"}\n')
        assert v.wait_for(lambda e: e["event"] == "paused") is not None
        v.sock.sendall(b'{"command": "resume"}\n')
        assert v.wait_for(lambda e: e["event"] == "resumed") is not None
    finally:
        v.close()

    # lines over the limit (a 1 MB line, a 50,000-deep nesting of 100 kB) are answered, then the connection closes
    for line in (b"x" * (1 << 20) + b"\n", b"[" * 50000 + b"]" * 50000 + b"\n"):
        v = RawViewer(path)
        try:
            sender = _send_in_background(v.sock, line)
            assert f"longer than {server_mod.MAX_LINE} bytes" in v.error()
            assert v.wait_for(lambda e: False) is None  # ... and the trainer hung up
            sender.join(10)
        finally:
            v.close()
    v = RawViewer(path)  # the trainer is alive and well
    try:
        _trains_on(v)
    finally:
        v.close()
    assert proc.poll() is None
    log = (rd.path / "daemon.log").read_text()
    assert "Traceback" not in log and "Exception in thread" not in log


def _threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_viewers_are_capped_and_idle_connections_cannot_pile_up_threads(start_trainer):
    rd, proc = start_trainer("crowd")
    path = socket_path_for(rd.path)
    first, _, live = attach_alone(rd)  # a viewer that was there first keeps watching
    baseline = _threads(proc.pid)
    cap = server_mod.MAX_VIEWERS
    idle: list[socket.socket] = []
    answers: list[dict] = []
    try:
        for _ in range(150):  # connect, never send a thing, never read past the first line
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(30)
            s.connect(str(path))
            idle.append(s)
            line = s.makefile("rb").readline()
            answers.append(json.loads(line))
        kinds = [a["event"] for a in answers]
        assert kinds.count("hello") == cap - 1 and kinds.count("refused") == 150 - (cap - 1)
        assert kinds[:cap - 1] == ["hello"] * (cap - 1)  # first come, first served
        refused = answers[-1]
        assert "too many viewers" in refused["error"] and str(cap) in refused["error"]
        # a refused connection is closed at once: it holds no thread
        assert idle[-1].recv(1) == b""
        assert _threads(proc.pid) <= baseline + 2 * (cap - 1) + 2
        with pytest.raises(RemoteError, match="too many viewers"):
            RemoteSession(path)
        seen = first.state["step"]
        live.wait_for(lambda e: e["event"] == "step" and e["step"] > seen)  # training goes on meanwhile
    finally:
        for s in idle:
            s.close()
    first.close()
    again, _, more = attach_alone(rd)  # the idle ones are gone: room again
    try:
        more.wait_for(lambda e: e["event"] == "step")
        wait_until(lambda: _threads(proc.pid) <= baseline + 4, timeout=20)
    finally:
        again.close()
    assert proc.poll() is None
