"""Trainer processes seen from outside: is a recorded pid alive, and removing the socket a dead trainer left."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any


def pid_alive(pid: Any) -> bool:
    """True when process ``pid`` exists and is not a zombie (a killed trainer nobody reaped is dead).

    Anything but a positive int (None, a bool, a string from a damaged ``status.json``) is not a live process.
    """
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # PID 1 in some containers reaps nothing: a killed process stays a zombie
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def remove_stale_socket(path: str | Path | None) -> bool:
    """Delete the control socket a dead trainer left behind; True when one was removed.

    Only a socket file owned by this user is removed; anything else (a regular file, a missing path, None) is left.
    """
    if not path:
        return False
    try:
        st = os.lstat(path)
        if stat.S_ISSOCK(st.st_mode) and st.st_uid == os.getuid():
            os.unlink(path)
            return True
    except (OSError, TypeError, ValueError):
        pass
    return False
