"""Trials as local worker processes: each trial is a detached tuinet trainer (``python -m tuinet.remote.daemon``)
on its own run folder, pinned to one core with one thread, watched and steered through its control socket.

So a trial is exactly a ``tuinet train --detach`` run: ``tuinet attach RUN`` shows it, ``tuinet stop RUN`` stops
it, ``tuinet runs`` and ``tuinet compare`` list it; the driver is one more viewer of it.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tuinet.protocol import FINAL_EVENTS, LIVE_STATUSES
from tuinet.remote.detach import launch_daemon
from tuinet.remote.sockets import RemoteError, socket_path_for
from tuinet.training.procs import pid_alive
from tuinet.training.rundir import RunDir

#: the environment of a trial: one thread for Numba and for BLAS, no thread probing (a trial owns one core, and
#: its results repeat bit for bit on any worker)
PIN_ENV = {"TUINET_THREADS": "1", "TUINET_THREAD_TUNING": "0", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def available_cores() -> list[int]:
    """The cores this process may use, in order."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return list(range(os.cpu_count() or 1))


def default_workers() -> int:
    """Trials at once by default: one per core (each trial runs one thread), so nothing is oversubscribed."""
    return max(1, len(available_cores()))


class LocalTrial:
    """One trial's trainer process and the driver's connection to it.

    Args:
        number: the trial's number.
        run_dir: its run folder.
        cpus: the core(s) it is pinned to.
        proc: the trainer process when this driver started it (None when adopted from an earlier driver).
    """

    where = "local"

    def __init__(self, number: int, run_dir: Path, cpus: set[int] | None, proc: subprocess.Popen | None,
                 since: float | None = None):
        self.number, self.run_dir, self.cpus, self.proc = number, Path(run_dir), cpus, proc
        # a final event older than this is an earlier process's end (a resumed run's history holds it)
        self.since = time.time() if since is None else since
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.wake: threading.Event | None = None  # set on every event, so the driver reacts at once (pruning)
        self.session = None
        self.final: dict[str, Any] | None = None
        self._pending: list[dict[str, Any]] = []  # commands sent before the socket was up

    # --- starting -------------------------------------------------------------------------------------------------

    @classmethod
    def start(cls, number: int, config, cpus: set[int] | None) -> "LocalTrial":
        """A new run folder for ``config`` (created and locked here) and its trainer process."""
        since = time.time()
        rd = RunDir.create(config.runs_dir, config.name, config.dataset, config.model)
        try:
            rd.write_config(config.to_dict())
            proc = launch_daemon(rd.path, lock=rd, env=PIN_ENV, cpus=cpus)
        finally:
            rd.unlock()
        return cls(number, rd.path, cpus, proc, since)

    @classmethod
    def resume(cls, number: int, run_dir: Path, cpus: set[int] | None, epochs: int | None = None) -> "LocalTrial":
        """Continue an interrupted (or promoted) trial from its latest checkpoint."""
        since = time.time()
        rd = RunDir(run_dir)
        rd.lock()
        try:
            proc = launch_daemon(rd.path, resume=True, epochs=epochs, lock=rd, env=PIN_ENV, cpus=cpus)
        finally:
            rd.unlock()
        return cls(number, rd.path, cpus, proc, since)

    @classmethod
    def adopt(cls, number: int, run_dir: Path) -> "LocalTrial":
        """Watch a trial whose trainer outlived an earlier driver (killed with SIGKILL): it trains on. Its lock
        says while it lives (its recorded pid may still be the killed driver's, when it died launching it)."""
        return cls(number, run_dir, None, None)

    @staticmethod
    def restart_fresh(run_dir: Path) -> None:
        """Remove an interrupted trial's folder that holds no checkpoint, so the trial runs again from scratch."""
        rd = RunDir(run_dir)
        rd.lock()  # no trainer may hold it
        try:
            shutil.rmtree(run_dir)
        finally:
            rd.unlock()

    # --- watching ---------------------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The trainer's pid."""
        if self.proc is not None:
            return self.proc.pid
        return trainer_holding(self.run_dir)

    def _process_alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return trainer_holding(self.run_dir) is not None

    def _connect(self) -> None:
        from tuinet.remote.client import RemoteSession

        path = socket_path_for(self.run_dir)
        if not path.exists():
            return
        try:
            session = RemoteSession(path, timeout=10.0)
        except (RemoteError, OSError):
            return
        for e in session.history:
            self.events.put(e)
        session.add_listener(self._on_event)
        self.session = session
        for cmd in self._pending:
            session.send(cmd)
        self._pending.clear()

    def _on_event(self, e: dict[str, Any]) -> None:
        self.events.put(e)
        if self.wake is not None:
            self.wake.set()

    def _replay_record(self) -> None:
        """The trainer ended before this driver could connect (or the connection dropped before its end): its
        events, final one included, are read from the run's ``metrics.jsonl`` instead."""
        self._replayed = True
        for e in RunDir(self.run_dir).events() if self.run_dir.is_dir() else ():
            self.events.put(e)

    def poll(self) -> list[dict[str, Any]]:
        """The trainer's new events (each event once; the history first, on connecting)."""
        if self.session is None and self.final is None:
            self._connect()
        if self.final is None and not getattr(self, "_replayed", False) and self.events.empty() \
                and not self._process_alive() and (self.session is None or not self.session.running):
            self._replay_record()
        out = []
        while True:
            try:
                e = self.events.get_nowait()
            except queue.Empty:
                break
            out.append(e)
            if e.get("event") in FINAL_EVENTS and not e.get("synthetic") and (e.get("time") or 0) >= self.since - 0.01:
                self.final = e
            elif e.get("event") == "started":
                self.final = None  # a resumed run's record: only an end after its last start counts
        return out

    @property
    def done(self) -> bool:
        """The trainer has ended (with its final event, or killed without one) and every event was read."""
        if not self.events.empty():
            return False
        # the process must be gone too: until it has exited it holds the run's lock (a promoted trial resumes at
        # once, and a slot must not take a second trainer early); without a final event, its record is read first
        return not self._process_alive() and (self.final is not None or getattr(self, "_replayed", False))

    def send(self, command: dict[str, Any]) -> None:
        """Send a command to the trainer (queued until its socket is up)."""
        if self.session is not None:
            self.session.send(command)
        else:
            self._pending.append(command)

    def close(self) -> None:
        """Stop watching (the trainer goes on if it runs)."""
        if self.session is not None:
            self.session.close()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=0)
            except subprocess.TimeoutExpired:
                pass


def trainer_holding(run_dir: Path) -> int | None:
    """The pid of the trainer that holds the run's lock now (loading, training or testing), None when none does."""
    from tuinet.training.rundir import RunLockedError

    if not run_dir.is_dir():
        return None
    rd = RunDir(run_dir)
    try:
        rd.lock()
    except RunLockedError:
        return rd.lock_holder() or -1
    rd.unlock()
    return None


def run_status(run_dir: Path) -> tuple[str, bool]:
    """A trial run's status from its ``status.json``, and whether its trainer is alive now."""
    status = RunDir(run_dir).read_json("status.json") if run_dir.exists() else {}
    raw = status.get("status") or "unknown"
    return raw, raw in LIVE_STATUSES and pid_alive(status.get("pid"))
