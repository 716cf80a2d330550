"""Trainer processes seen from outside: is a recorded pid alive, is a control socket served, removing a dead one."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import threading
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


def reap_when_done(proc: subprocess.Popen) -> None:
    """Collect ``proc``'s exit status when it ends, from a daemon thread, so that a detached child of a process that
    lives on (the sweep or lesson app that started a driver or a trainer) does not stay a zombie until that process
    exits. Call it once nothing else polls ``proc``: ``Popen.poll`` answers "running" while another thread waits."""
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()


def socket_listening(path: str | Path, timeout: float = 1.0) -> bool:
    """True unless connecting to the Unix socket at ``path`` proves nobody listens on it (refused, or gone).

    Anything else (accepted, a full backlog, a timeout, no permission) counts as listening: a live socket must
    never be taken for a stale one.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as e:
        return e.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK)
    finally:
        sock.close()
    return True


def remove_stale_socket(path: str | Path | None) -> bool:
    """Delete the control socket a dead trainer left behind; True when one was removed.

    Only a socket file owned by this user on which nobody listens (a connection attempt is refused) is removed;
    anything else (a live trainer's socket, a regular file, a missing path, None) is left.
    """
    if not path:
        return False
    try:
        st = os.lstat(path)
        if not (stat.S_ISSOCK(st.st_mode) and st.st_uid == os.getuid()) or socket_listening(path):
            return False
        again = os.lstat(path)  # the same file we found dead, not one a new trainer bound meanwhile
        if (again.st_ino, again.st_dev) == (st.st_ino, st.st_dev):
            os.unlink(path)
            return True
    except (OSError, TypeError, ValueError):
        pass
    return False
