"""Helpers the detached-trainer tests share: a trainer process, attaching to it, waiting for events or a state."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tuinet.remote.client import RemoteSession
from tuinet.remote.detach import launch_daemon, wait_until_started
from tuinet.remote.sockets import socket_path_for
from tuinet.training.config import TrainConfig
from tuinet.training.rundir import RunDir

#: steps per ``step`` event of the trainers started here
LOG_EVERY = 4


def kill(pid: int) -> None:
    """SIGKILL a trainer and its process group (gone already is fine)."""
    for k in (os.killpg, os.kill):
        try:
            k(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def wait_until(cond, timeout: float = 10.0) -> None:
    """Poll ``cond()`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def start_trainer(tmp_path, request):
    """Start a detached trainer on a small MNIST run; returns (RunDir, Popen). Killed at the end of the test."""

    def start(name: str = "run", epochs: int = 200):
        config = TrainConfig(dataset="mnist", limit=2000, epochs=epochs, log_every=LOG_EVERY, name=name,
                             runs_dir=str(tmp_path / "runs"))
        rd = RunDir.create(config.runs_dir, name, config.dataset, config.model)  # created and locked
        rd.write_config(config.to_dict())
        proc = launch_daemon(rd.path, lock=rd)  # the trainer process takes the lock over

        def finalize():
            kill(proc.pid)
            proc.wait(10)

        request.addfinalizer(finalize)
        wait_until_started(rd.path, proc)
        return rd, proc

    return start


class Collector:
    """A listener that records events and lets a test wait for one."""

    def __init__(self):
        self.events: list[dict] = []
        self.cond = threading.Condition()

    def __call__(self, e):
        with self.cond:
            self.events.append(e)
            self.cond.notify_all()

    def wait_for(self, pred, timeout: float = 30.0) -> dict:
        """The first event for which ``pred(event)`` is true, waiting up to ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events:
                    if pred(e):
                        return e
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; last events: {[x.get('event') for x in self.events[-8:]]}"
                self.cond.wait(left)


def attach(rd: RunDir) -> tuple[RemoteSession, list[dict], Collector]:
    """Attach the way the app does: read the history, then add a listener (which catches up)."""
    session = RemoteSession(socket_path_for(rd.path))
    history = session.history
    live = Collector()
    session.add_listener(live)
    return session, history, live


def attach_alone(rd: RunDir, timeout: float = 30.0) -> tuple[RemoteSession, list[dict], Collector]:
    """:func:`attach` as the trainer's only viewer: earlier viewers (the launcher's, which waited for ``started``)
    are counted until the trainer has read their hang-up, so try again until the ``hello`` counts one viewer."""
    deadline = time.monotonic() + timeout
    while True:
        session, history, live = attach(rd)
        if session.hello["viewers"] == 1:
            return session, history, live
        session.close()
        assert time.monotonic() < deadline, f"{session.hello['viewers']} viewers still counted after {timeout} s"
        time.sleep(0.05)
