"""``tuinet train --detach``: start the trainer as a background process that outlives the terminal.

The run folder is created here (so its name is known at once), then ``python -m tuinet.remote.daemon RUN_DIR``
starts in a new session (no controlling terminal: a closed terminal sends it no SIGHUP, and it ignores SIGHUP
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
from tuinet.protocol import FINAL_EVENTS, LIVE_STATUSES
from tuinet.remote.sockets import RemoteError, socket_path_for
from tuinet.training.procs import pid_alive
from tuinet.training.rundir import RunDir

LOG_NAME = "daemon.log"


def launch_daemon(run_dir: str | Path, resume: bool = False, epochs: int | None = None) -> subprocess.Popen:
    """Start the detached trainer for ``run_dir``; returns its Popen (the caller may simply forget it)."""
    run_dir = Path(run_dir).absolute()
    args = [sys.executable, "-m", "tuinet.remote.daemon", str(run_dir)]
    if resume:
        args.append("--resume")
    if epochs is not None:
        args += ["--epochs", str(epochs)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(run_dir / LOG_NAME, "ab") as log:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env)


def wait_until_started(run_dir: str | Path, proc: subprocess.Popen | None = None, pid: int | None = None,
                       timeout: float = 60.0) -> dict[str, Any]:
    """Wait for the trainer's socket, then for its ``started`` (or ``failed``) event; returns that event.

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
        if (e.get("event") == "started" or e.get("event") in FINAL_EVENTS) and not result:
            result.update(e)
            got.set()

    session.add_listener(on_event)
    for e in session.history:
        on_event(e)
    got.wait(max(0.1, deadline - time.monotonic()))
    session.close()
    if result.get("event") == "failed":
        raise ConfigError(f"run {run_dir.name} failed: {result.get('error')}")
    return result


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
    rd = RunDir.create(config.runs_dir, config.name, config.dataset, config.model)
    rd.write_json("config.json", config.to_dict())
    proc = launch_daemon(rd.path)
    started = wait_until_started(rd.path, proc, timeout=wait)
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
    status = run.read_json("status.json")
    if status.get("status") in LIVE_STATUSES and pid_alive(status.get("pid")):
        raise ConfigError(f"run {run.name} is already running (pid {status.get('pid')}); "
                          f"`tuinet attach {run.name}` to watch it")
    if not run.latest.exists():
        raise ConfigError(f"{run.latest}: no checkpoint to resume from")
    proc = launch_daemon(run.path, resume=True, epochs=epochs)
    wait_until_started(run.path, proc, timeout=wait)
    extra = _runs_dir_option(str(run.path.parent))
    print(f"run {run.name} resumed in the background (pid {proc.pid})", file=out)
    print(f"  watch and steer it:  tuinet attach {run.name}{extra}", file=out)
    out.flush()
    return {"name": run.name, "pid": proc.pid, "run_dir": str(run.path)}
