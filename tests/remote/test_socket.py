"""The control socket without a background process: security checks, slow viewers, socket paths, the remote app."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time

import pytest

from tests.remote.conftest import wait_until
from tuinet import protocol
from tuinet.protocol import make_command, make_event
from tuinet.remote import server as server_mod
from tuinet.remote.client import RemoteSession
from tuinet.remote.server import ControlServer
from tuinet.remote.sockets import (MAX_SOCKET_PATH, RemoteError, check_peer, check_socket_file, runtime_dir,
                                   socket_path_for)


class FakeSession:
    """Just enough of a Session for the server: listeners, a command list, a state."""

    def __init__(self):
        self.listeners = []
        self.commands = []
        self.state = {"status": "running", "paused": False, "step": 0, "lr": 0.1}

    def add_listener(self, fn):
        self.listeners.append(fn)

    def remove_listener(self, fn):
        if fn in self.listeners:
            self.listeners.remove(fn)

    def emit(self, event):
        for fn in list(self.listeners):
            fn(event)

    def send(self, cmd):
        self.commands.append(cmd)


@pytest.fixture
def served(tmp_path, request):
    """(FakeSession, ControlServer, socket path) with the server running; closed at the end."""
    session = FakeSession()
    path = tmp_path / "control.sock"
    srv = ControlServer(session, path, "fake")
    srv.start()
    request.addfinalizer(lambda: srv.close(grace=0.5))
    return session, srv, path


def test_socket_is_private_and_history_then_live(served):
    session, srv, path = served
    assert path.stat().st_mode & 0o777 == 0o600
    session.emit(make_event("step", step=1, batches=1, loss=1.0))
    viewer = RemoteSession(path)
    assert isinstance(viewer, protocol.Session) and viewer.started
    viewer.start()  # nothing to do: the trainer runs elsewhere
    seen = []
    history = viewer.history
    viewer.add_listener(seen.append)
    session.emit(make_event("step", step=2, batches=1, loss=0.9))
    wait_until(lambda: seen)
    assert [e["step"] for e in history] == [1] and seen[0]["step"] == 2
    viewer.send(make_command("pause"))
    wait_until(lambda: session.commands)
    assert session.commands[0]["command"] == "pause"
    viewer.close()


def test_malformed_command_gets_an_error_line_only_to_its_sender(served):
    session, srv, path = served
    viewer = RemoteSession(path)
    errors = []
    viewer.add_listener(lambda e: errors.append(e) if e["event"] == "log" else None)
    viewer._sock.sendall(b'{"command": "explode"}\nnot json\n')
    wait_until(lambda: len(errors) == 2)
    assert "unknown command 'explode'" in errors[0]["message"] and "not a JSON command" in errors[1]["message"]
    assert session.commands == []
    viewer.close()


@pytest.mark.parametrize("before, after", [("stopped", "finished"), ("finished", "stopped")])
def test_a_resumed_run_ends_with_its_own_final_event(served, before, after):
    """The history of a resumed run holds the final event of its first process: the end is the newest one."""
    session, srv, path = served
    session.emit({**make_event("started"), "time": 1000.0})
    session.emit({**make_event(before), "time": 1001.0})
    session.emit({**make_event("started", resumed=True), "time": 1002.0})
    viewer = RemoteSession(path)
    seen = []
    viewer.add_listener(seen.append)
    session.emit({**make_event(after), "time": 1003.0})
    wait_until(lambda: seen)
    srv.close(grace=0.5)
    assert viewer.join(10)
    assert viewer.end_reason == f"trainer {after}"
    assert [e["event"] for e in seen] == [after, "disconnected"]
    assert seen[-1]["trainer_alive"] is False


def test_wrong_permissions_or_owner_are_refused(tmp_path):
    path = tmp_path / "open.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(1)
    try:
        os.chmod(path, 0o666)
        with pytest.raises(RemoteError, match="0666.*refusing"):
            RemoteSession(path)
        os.chmod(path, 0o600)
        check_socket_file(path)  # now fine
        with pytest.raises(RemoteError, match="owned by user id"):
            check_socket_file(path, own_uid=os.getuid() + 1)
    finally:
        s.close()
    plain = tmp_path / "plain"
    plain.write_text("")
    os.chmod(plain, 0o600)
    with pytest.raises(RemoteError, match="not a socket"):
        check_socket_file(plain)


def test_peer_with_another_uid_is_refused(served, monkeypatch):
    assert check_peer(1000, own_uid=1000) is None
    assert check_peer(None, own_uid=1000) is None  # no credentials from the OS: the 0600 mode guards
    assert "user id 1234 is not the owner" in check_peer(1234, own_uid=1000)
    session, srv, path = served
    own = os.getuid()
    # the server sees this test as a peer of another user
    monkeypatch.setattr(server_mod, "check_peer", lambda uid: check_peer(uid, own_uid=own + 1))
    with pytest.raises(RemoteError, match="refused: user id"):
        RemoteSession(path)
    assert srv.viewers == 0


def test_slow_viewer_is_dropped_without_blocking_training(served, monkeypatch):
    monkeypatch.setattr(server_mod, "MAX_QUEUE", 50)
    session, srv, path = served
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # connects and never reads
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(str(path))
    wait_until(lambda: srv.viewers == 1)
    big = "x" * 20000
    done = threading.Event()

    def train():
        for i in range(400):
            session.emit(make_event("log", level="info", message=big, i=i))
        done.set()

    threading.Thread(target=train, daemon=True).start()
    assert done.wait(30), "emitting blocked on a viewer that does not read"
    assert srv.dropped == 1 and srv.viewers == 0
    stuck.close()


def test_viewer_that_vanishes_is_forgotten(served):
    session, srv, path = served
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(path))
    wait_until(lambda: srv.viewers == 1)
    s.close()
    wait_until(lambda: srv.viewers == 0)
    session.emit(make_event("step", step=1, batches=1, loss=1.0))  # nobody to send to: fine


def test_long_run_dir_gets_a_short_socket_path(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    (tmp_path / "xdg").mkdir()
    short = tmp_path / "r"
    assert socket_path_for(short) == short.absolute() / "control.sock"
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "my-run"
    p = socket_path_for(deep)
    assert len(os.fsencode(str(p))) <= MAX_SOCKET_PATH
    assert p.parent == runtime_dir() == tmp_path / "xdg" / "tuinet" and p.name.startswith("my-run-")
    assert p.parent.stat().st_mode & 0o777 == 0o700
    assert socket_path_for(deep) == p and socket_path_for(tmp_path / ("d" * 60) / ("e" * 60) / "other") != p


# --- the app on a remote session ------------------------------------------------------------------------------------


def _spiral_behind_socket(tmp_path):
    """A real (fast) trainer in this process, served on a socket the way the daemon does it."""
    from tuinet.training.config import TrainConfig
    from tuinet.training.session import Session
    from tuinet.training.trainer import Trainer

    cfg = TrainConfig(dataset="spiral", epochs=500, batch_size=32, runs_dir=str(tmp_path / "runs"), log_every=5,
                      name="spiral")
    session = Session(Trainer(cfg))
    path = tmp_path / "control.sock"
    srv = ControlServer(session, path, "spiral")
    srv.start()
    session.start()

    def close_when_done():
        session.join()
        srv.close(grace=1.0)

    threading.Thread(target=close_when_done, daemon=True).start()
    return session, srv, path, cfg


@pytest.mark.slow
def test_app_detach_leaves_training_running_and_quit_can_stop_it(tmp_path):
    pytest.importorskip("tuinet.app.app")
    from tuinet.app.remote import QuitRemoteDialog, RemoteApp
    from tuinet.protocol import make_command as cmd

    local, srv, path, cfg = _spiral_behind_socket(tmp_path)

    async def until(pilot, cond, timeout=20.0):
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, "timed out"
            await pilot.pause(0.05)

    async def scenario():
        # 1. d detaches: the app exits, training goes on
        remote = RemoteSession(path)
        app = RemoteApp(remote, config=cfg)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.state.step > 0)
            remote.send(cmd("pause"))  # an idle CPU lets Pilot.press return at once
            await until(pilot, lambda: app.state.paused)
            await pilot.press("d")
            await until(pilot, lambda: app.outcome == "detached-paused")  # paused: it stays paused
        remote.close()
        assert local.running and local.state["paused"]
        # 2. q asks; "leave running" would detach, "s" stops the trainer (checkpoint saved)
        remote = RemoteSession(path)
        app = RemoteApp(remote, config=cfg)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.state.paused)  # still paused from the first viewer
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, QuitRemoteDialog))
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, QuitRemoteDialog))
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, QuitRemoteDialog))
            await pilot.press("s")
            await until(pilot, lambda: app.outcome == "stopped" and not remote.running, timeout=60)
        assert local.join(30)
        assert local.last["stopped"]["reason"] == "user"
        assert remote.last["stopped"]["checkpoint"]

    try:
        asyncio.run(scenario())
    finally:
        if local.running:
            local.send(cmd("stop"))
            local.join(30)


def test_cli_serve_is_localhost_only_and_explains_a_missing_textual_serve(monkeypatch):
    import sys

    from click.testing import CliRunner

    from tuinet.cli import main

    r = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"])
    assert r.exit_code == 1 and "only binds to localhost" in r.output
    monkeypatch.setitem(sys.modules, "textual_serve", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "textual_serve.server", None)
    r = CliRunner().invoke(main, ["serve"])
    assert r.exit_code == 1 and "pip install textual-serve" in r.output


def test_cli_attach_without_live_runs_says_how_to_start_one():
    from click.testing import CliRunner

    from tuinet.cli import main

    r = CliRunner().invoke(main, ["attach"])
    assert r.exit_code == 1 and "tuinet train --detach" in r.output


def test_a_resumed_runs_old_final_event_is_not_the_answer_to_its_start(tmp_path):
    """A resumed trainer's socket replays the earlier process's history, its ``finished`` event included: waiting
    for the new process to start must not take that for the answer (it reported a failed resume as resumed)."""
    import threading

    from tuinet.errors import ConfigError
    from tuinet.remote.detach import wait_until_started
    from tuinet.remote.sockets import socket_path_for

    run_dir = tmp_path / "gone"
    run_dir.mkdir()
    old = [make_event("started", step=0, epochs=1), make_event("finished", step=10)]
    for e in old:
        e["time"] -= 60.0  # the earlier process's events
    session = FakeSession()
    srv = ControlServer(session, socket_path_for(run_dir), "gone", history=old)
    srv.start()
    try:
        launched = time.time()
        assert wait_until_started(run_dir, pid=os.getpid(), timeout=1.0, since=launched) == {}  # still loading
        fail = make_event("failed", error="table.csv: no such file or folder")
        timer = threading.Timer(0.3, session.emit, args=(fail,))
        timer.start()
        with pytest.raises(ConfigError, match="no such file or folder"):
            wait_until_started(run_dir, pid=os.getpid(), timeout=10.0, since=launched)
        timer.join()
    finally:
        srv.close(grace=0.5)
