"""Where a detached trainer's control socket lives, and the checks that keep other users out of it.

The socket is ``control.sock`` in the run folder, or ``$XDG_RUNTIME_DIR/tuinet/<run>-<hash>.sock`` when the run
folder's path is too long for ``AF_UNIX`` (108 bytes on Linux, 104 on macOS, counting the final NUL). Its mode is
0600; the server also checks each peer's user id (``SO_PEERCRED``) and the client checks the socket file's owner
and mode before connecting, so neither side talks to another user.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import struct
import sys
import tempfile
from pathlib import Path

from tuinet.errors import TuinetError

SOCKET_NAME = "control.sock"
#: longest socket path we bind: sun_path is 108 bytes on Linux (104 on macOS), one of them the final NUL
MAX_SOCKET_PATH = 103 if sys.platform == "darwin" else 107


class RemoteError(TuinetError):
    """A detached trainer cannot be reached, or refused us, or its socket is not safe to use."""


def runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/tuinet`` (or ``<tmp>/tuinet-<uid>``), created private (0700) and checked to be ours."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "tuinet" if base and Path(base).is_dir() else \
        Path(tempfile.gettempdir()) / f"tuinet-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise RemoteError(f"{path}: cannot create the folder for control sockets ({e.strerror})") from None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise RemoteError(f"{path}: not a folder owned by you; refusing to put control sockets there")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def socket_path_for(run_dir: str | Path) -> Path:
    """The control socket path of the run in ``run_dir``: in the run folder when the path fits ``AF_UNIX``."""
    run_dir = Path(run_dir).absolute()
    inside = run_dir / SOCKET_NAME
    if len(os.fsencode(str(inside))) <= MAX_SOCKET_PATH:
        return inside
    digest = hashlib.sha1(os.fsencode(str(run_dir))).hexdigest()[:10]
    short = runtime_dir() / f"{run_dir.name[:40]}-{digest}.sock"
    if len(os.fsencode(str(short))) > MAX_SOCKET_PATH:
        short = runtime_dir() / f"{digest}.sock"
    return short


def check_peer(uid: int | None, own_uid: int | None = None) -> str | None:
    """None when a peer with user id ``uid`` may use the socket, else the one-line reason it may not.

    Only the user running the trainer may connect (root included only when root runs the trainer). ``uid`` None
    means the platform gave no credentials; the 0600 socket mode is then the only guard, which is enough there.
    """
    own = os.getuid() if own_uid is None else own_uid
    if uid is None or uid == own:
        return None
    return f"refused: user id {uid} is not the owner of this trainer (user id {own})"


def peer_credentials(sock: socket.socket) -> tuple[int | None, int | None]:
    """(pid, uid) of the process at the other end of a Unix socket, or (None, None) when the OS will not say."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None, None
    try:
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i")))
    except OSError:
        return None, None
    return pid, uid


def check_socket_file(path: str | Path, own_uid: int | None = None) -> None:
    """Raise RemoteError unless ``path`` is a socket owned by us that nobody else can open (mode 0600 or stricter)."""
    path = Path(path)
    own = os.getuid() if own_uid is None else own_uid
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise RemoteError(f"{path}: no control socket (the trainer is not running, or not detached)") from None
    except OSError as e:
        raise RemoteError(f"{path}: cannot read the control socket ({e.strerror})") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise RemoteError(f"{path}: not a socket; refusing to use it")
    if st.st_uid != own:
        raise RemoteError(f"{path}: owned by user id {st.st_uid}, not you ({own}); refusing to connect")
    if st.st_mode & 0o077:
        raise RemoteError(f"{path}: permissions {stat.S_IMODE(st.st_mode):04o} let other users in (must be 0600); "
                          "refusing to connect")


def connect(path: str | Path, timeout: float = 5.0) -> socket.socket:
    """A connected Unix socket to a trainer, after checking the socket file; clear errors when it is stale."""
    check_socket_file(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
    except ConnectionRefusedError:
        sock.close()
        raise RemoteError(f"{path}: nobody is listening (the trainer died); the stale socket can be removed") \
            from None
    except OSError as e:
        sock.close()
        raise RemoteError(f"{path}: cannot connect ({e.strerror or e})") from None
    return sock
