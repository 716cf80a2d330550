"""The files of a sweep folder, and the driver's lock (one driver per sweep folder)."""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from tuinet.engine.checkpoint import atomic_write_bytes
from tuinet.errors import ConfigError
from tuinet.training.procs import pid_alive

SPEC_NAME = "sweep.json"  # the parsed SPEC, the options and the storage: what a resumed driver starts from
STATE_NAME = "state.json"  # the trials as the driver sees them, rewritten atomically (what viewers read)
JOURNAL_NAME = "study.journal"  # the Optuna study (JournalFileBackend) when no --storage URL is given
LOCK_NAME = "driver.lock"  # flock held by the driver for its lifetime; holds its pid
CONTROL_DIR = "control"  # requests to the driver (stop, promote), one small JSON file each
LOG_NAME = "driver.log"  # a detached driver's output


def is_sweep(folder: str | Path) -> bool:
    """True when ``folder`` is a sweep folder (it has a ``sweep.json``)."""
    return (Path(folder) / SPEC_NAME).is_file()


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; {} when missing, unreadable, half-written or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON object atomically (temporary file, fsync, rename)."""
    payload = json.dumps(data, indent=1, default=str).encode()
    atomic_write_bytes(path, lambda f: f.write(payload))


def driver_pid(folder: str | Path) -> int | None:
    """The pid of the live driver of the sweep in ``folder`` (None when no driver runs; -1 when one holds the
    lock but its pid is not known).

    The lock decides, not the pid alone (a pid outlives a driver that let go): a shared lock taken and dropped at
    once succeeds only when no driver holds the exclusive one."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            pass  # held: a driver runs
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        try:
            pid = int(os.pread(fd, 32, 0).decode().strip())
        except (OSError, ValueError):
            return -1  # a driver holds the lock and has not written its pid yet
    finally:
        os.close(fd)
    return pid if pid_alive(pid) else -1


class DriverLock:
    """The exclusive flock a sweep driver holds on ``driver.lock`` for its lifetime (one driver per folder)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; ConfigError naming the holder when another driver has it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        for _ in range(20):  # a viewer's check (driver_pid) holds a shared lock for a moment
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise ConfigError(f"{self.path}: cannot lock the sweep ({e.strerror})") from None
                time.sleep(0.02)
        else:
            os.close(fd)
            pid = driver_pid(self.path.parent)
            by = f" (pid {pid})" if pid and pid > 0 else ""
            raise ConfigError(f"sweep {self.path.parent.name} is already running{by}; attach to it with "
                              f"`tuinet attach {self.path.parent.name}`") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock."""
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)  # no pid left behind for a driver that has gone
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None


def run_curve(run_dir: Path, objective: str) -> dict[int, float]:
    """The objective after each epoch, from a trial run's ``metrics.jsonl`` (a resumed run's repeats: the later)."""
    from tuinet.training.rundir import RunDir, metric_events

    curve = {}
    for e in metric_events(RunDir(run_dir)) if run_dir.is_dir() else ():
        v = e.get(objective)
        if e.get("event") == "epoch" and isinstance(e.get("epoch"), int) and isinstance(v, (int, float)) \
                and math.isfinite(v):
            curve[e["epoch"]] = float(v)
    return curve


def save_spec(folder: Path, spec, extra: dict[str, Any]) -> None:
    """Write ``sweep.json`` (the SPEC and how the sweep runs: backend, workers, storage): what a detached or resumed
    driver starts from. A sweep folder started with another [train], [search] or objective is refused (its study
    holds other distributions); the number of trials, the workers and the backend may change between runs."""
    path = folder / SPEC_NAME
    old = read_json(path)
    new = {**spec.to_dict(), **extra, "folder": str(folder.absolute())}
    if old and (old.get("search") != new["search"] or old.get("train") != new["train"]
                or old.get("objective") != new["objective"]):
        raise ConfigError(f"sweep {spec.name} in {folder.parent} was started with another [train], [search] or "
                          "objective; give this SPEC another [sweep] name (or --name)")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, new)
