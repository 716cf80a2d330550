"""``tuinet train --detach``: start the trainer as a background process that outlives the terminal.

The run folder is created (and locked) here, so its name is known at once and no other trainer can take it; then
``python -m tuinet.remote.daemon RUN_DIR`` starts, inheriting the run's lock (one trainer per run folder), in a new
session (no controlling terminal: a closed terminal sends it no SIGHUP, and it ignores SIGHUP
anyway) with stdin from /dev/null and stdout/stderr appended to ``RUN_DIR/daemon.log``. We wait until its
control socket answers and the run has started (or failed: then the error is reported here).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tuinet.errors import ConfigError
from tuinet.protocol import FINAL_EVENTS
from tuinet.remote.sockets import RemoteError, socket_path_for
from tuinet.training.procs import pid_alive, reap_when_done
from tuinet.training.rundir import RunDir

LOG_NAME = "daemon.log"


def launch_daemon(run_dir: str | Path, resume: bool = False, epochs: int | None = None,
                  lock: RunDir | None = None, env: dict[str, str] | None = None,
                  cpus: set[int] | None = None) -> subprocess.Popen:
    """Start the detached trainer for ``run_dir``; returns its Popen (the caller may simply forget it).

    Args:
        lock: the run, locked by the caller: its lock passes to the trainer process, and the caller's hold on it
            ends here (``lock.unlock()``), so the lock is never free between the two. Without it the trainer
            takes the lock itself (and exits 1 when another trainer has it).
        env: variables added to the trainer's environment (a sweep worker pins its threads with them).
        cpus: the cores the trainer may run on (``sched_setaffinity``); None: this process's.
    """
    run_dir = Path(run_dir).absolute()
    args = [sys.executable, "-m", "tuinet.remote.daemon", str(run_dir)]
    if resume:
        args.append("--resume")
    if epochs is not None:
        args += ["--epochs", str(epochs)]
    pass_fds: tuple[int, ...] = ()
    if lock is not None:
        if lock.lock_fd is None:
            raise ValueError(f"run {lock.name} is not locked by this process")
        pass_fds = (lock.lock_fd,)
        args += ["--lock-fd", str(lock.lock_fd)]
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus and hasattr(os, "sched_setaffinity") else None
    fd = os.open(run_dir / LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, pass_fds=pass_fds, env=env,
                                preexec_fn=pin)
    finally:
        os.close(fd)
    if lock is not None:
        lock.set_lock_pid(proc.pid)  # the trainer's pid, for whoever is refused meanwhile
        lock.unlock()  # closes our descriptor only: the trainer process holds the lock now
    return proc


def wait_until_started(run_dir: str | Path, proc: subprocess.Popen | None = None, pid: int | None = None,
                       timeout: float = 60.0, since: float | None = None) -> dict[str, Any]:
    """Wait for the trainer's socket, then for its ``started`` (or ``failed``) event; returns that event.

    ``since``: the wall-clock time the trainer was launched; events older than that (a resumed run's socket
    first replays the earlier process's history, its ``finished`` event included) are not this start's answer.
    Raises ConfigError with the reason (the run's error, or the end of daemon.log) when it does not start.
    """
    from tuinet.remote.client import RemoteSession

    run_dir = Path(run_dir).absolute()
    path = socket_path_for(run_dir)
    deadline = time.monotonic() + timeout
    session = None
    while session is None:
        dead = proc.poll() is not None if proc is not None else not pid_alive(pid)
        if dead:
            raise ConfigError(f"the background trainer exited before it started: {_log_tail(run_dir)}")
        if time.monotonic() > deadline:
            raise ConfigError(f"the background trainer did not open its socket in {timeout:.0f} s "
                              f"(see {run_dir / LOG_NAME})")
        if path.exists():
            try:
                session = RemoteSession(path)
            except RemoteError:
                pass
        if session is None:
            time.sleep(0.1)
    got = threading.Event()
    result: dict[str, Any] = {}

    def on_event(e: dict[str, Any]) -> None:
        if e.get("event") == "disconnected":
            got.set()  # the trainer hung up without a new started or final event: see below
            return
        if since is not None and e.get("time", since) < since:
            return
        if (e.get("event") == "started" or e.get("event") in FINAL_EVENTS) and not result:
            result.update(e)
            got.set()

    session.add_listener(on_event)
    for e in session.history:
        on_event(e)
    got.wait(max(0.1, deadline - time.monotonic()))
    session.close()
    if result.get("event") == "failed":
        # the trainer is ending (it removes its socket and lets go of the run on the way out): the command returns
        # once it has, so the run is as it was when the user reads the error (a test saw its socket still there)
        _wait_for_exit(proc, pid, timeout=10.0)
        raise ConfigError(f"run {run_dir.name} failed: {result.get('error')}")
    if not result:  # no answer of this start: the trainer hung up (then give it a moment to exit) or is loading
        if proc is not None:
            try:
                proc.wait(timeout=5.0 if got.is_set() else 0.0)
            except subprocess.TimeoutExpired:
                pass
            dead = proc.poll() is not None
        else:
            dead = not pid_alive(pid)
        if dead:
            raise ConfigError(f"the background trainer exited before it started: {_log_tail(run_dir)}")
    return result


def _wait_for_exit(proc: subprocess.Popen | None, pid: int | None, timeout: float) -> None:
    """Wait until the trainer process has exited, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    if proc is not None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        return
    while pid is not None and pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _log_tail(run_dir: Path, lines: int = 5) -> str:
    try:
        text = (run_dir / LOG_NAME).read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"no {LOG_NAME}"
    tail = [t for t in text[-lines:] if t.strip()]
    return " | ".join(tail) if tail else f"{LOG_NAME} is empty"


def _runs_dir_option(runs_dir: str) -> str:
    """`` --runs-dir X`` for the printed commands, unless X is the default."""
    from tuinet.training.config import default_runs_dir

    return "" if os.path.abspath(runs_dir) == os.path.abspath(default_runs_dir()) else f" --runs-dir {runs_dir}"


def detach_training(config, wait: float = 60.0, out=None) -> dict[str, Any]:
    """Start ``config`` as a detached trainer and print its name and how to attach; returns {name, pid, ...}."""
    out = out or sys.stdout
    rd = RunDir.create(config.runs_dir, config.name, config.dataset, config.model)  # created and locked
    try:
        rd.write_config(config.to_dict())
        launched = time.time()
        proc = launch_daemon(rd.path, lock=rd)
    finally:
        rd.unlock()
    started = wait_until_started(rd.path, proc, timeout=wait, since=launched)
    reap_when_done(proc)  # (a lesson's app starts its runs this way and stays open after they end)
    extra = _runs_dir_option(config.runs_dir)
    info = {"name": rd.name, "pid": proc.pid, "run_dir": str(rd.path), "socket": str(socket_path_for(rd.path)),
            "log": str(rd.path / LOG_NAME), "started": bool(started)}
    state = "started" if started.get("event") == "started" else "starting (still loading)"
    print(f"run {rd.name} {state} in the background (pid {proc.pid})", file=out)
    print(f"  watch and steer it:  tuinet attach {rd.name}{extra}", file=out)
    print(f"  stop it cleanly:     tuinet stop {rd.name}{extra}", file=out)
    print(f"  its output:          {rd.path / LOG_NAME}", file=out)
    out.flush()
    return info


def detach_resume(run: RunDir, epochs: int | None = None, wait: float = 60.0, out=None) -> dict[str, Any]:
    """``tuinet resume RUN --detach``: continue a stopped run in the background."""
    out = out or sys.stdout
    run.lock()  # RunLockedError (the holder named, nothing changed) when another trainer has the run
    try:
        if not run.latest.exists():
            raise ConfigError(f"{run.latest}: no checkpoint to resume from")
        launched = time.time()
        proc = launch_daemon(run.path, resume=True, epochs=epochs, lock=run)
    finally:
        run.unlock()
    wait_until_started(run.path, proc, timeout=wait, since=launched)
    reap_when_done(proc)
    extra = _runs_dir_option(str(run.path.parent))
    print(f"run {run.name} resumed in the background (pid {proc.pid})", file=out)
    print(f"  watch and steer it:  tuinet attach {run.name}{extra}", file=out)
    out.flush()
    return {"name": run.name, "pid": proc.pid, "run_dir": str(run.path)}
