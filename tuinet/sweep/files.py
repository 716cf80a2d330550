"""The files of a sweep folder, and the driver's lock (one driver per sweep folder)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
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
    """The pid of the live driver of the sweep in ``folder`` (None when no driver runs)."""
    try:
        pid = int((Path(folder) / LOCK_NAME).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


class DriverLock:
    """The exclusive flock a sweep driver holds on ``driver.lock`` for its lifetime (one driver per folder)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; ConfigError naming the holder when another driver has it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"{self.path}: cannot lock the sweep ({e.strerror})") from None
            pid = driver_pid(self.path.parent)
            by = f" (pid {pid})" if pid else ""
            raise ConfigError(f"sweep {self.path.parent.name} is already running{by}; attach to it with "
                              f"`tuinet attach {self.path.parent.name}`") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
