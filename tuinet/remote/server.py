"""The control socket of a detached trainer: every viewer gets the history, then the live events, and may command.

:class:`ControlServer` listens on a Unix socket (mode 0600) in the trainer process and checks each peer's user
id. A viewer receives one JSON object per line: a ``hello`` (run name, pid, the trainer's state), every event so
far (the run's history), a ``history_end`` marker, the latest picture events, then the live stream. Lines a viewer
sends are commands; they join the trainer's queue, and their effects (``paused``, ``lr_changed`` ...) reach every
viewer. A slow or dead viewer never blocks training: each has a bounded queue and is dropped when it overflows.

Everything is bounded: at most :data:`MAX_VIEWERS` viewers (two threads each; the next connection gets a
``refused`` line and is closed before it gets a thread), :data:`MAX_QUEUE` queued events each, command lines of
:data:`MAX_LINE` bytes. No line a viewer sends can end its reader or the trainer: whatever is wrong with it
(not UTF-8, not JSON, nested too deeply, not a valid command) is answered with a ``log`` error to that viewer.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from tuinet.errors import TuinetError
from tuinet.protocol import PICTURE_EVENTS, PROTOCOL_VERSION, from_json, to_json, validate_command
from tuinet.remote.sockets import check_peer, peer_credentials
from tuinet.training.history import EventHistory
from tuinet.training.procs import remove_stale_socket, socket_listening

#: live events a viewer may fall behind by before it is dropped
MAX_QUEUE = 4000
#: longest command line accepted (a command is tiny; this only stops a runaway client)
MAX_LINE = 64 * 1024
#: viewers connected at once; the next one is refused (each viewer costs two threads and a queue)
MAX_VIEWERS = 32
#: seconds a viewer closed for a bad line has to receive the error before its connection is cut
CLOSE_GRACE = 2.0


def _line(message: dict[str, Any]) -> bytes:
    return (to_json(message) + "\n").encode()


def _remote_event(kind: str, **fields: Any) -> dict[str, Any]:
    """An event of the socket layer (hello, history_end, refused): not in EVENTS, never in metrics.jsonl."""
    return {"event": kind, "v": PROTOCOL_VERSION, "time": round(time.time(), 3), **fields}


class _Viewer:
    """One connected viewer: its socket, its bounded queue of encoded lines, and its two threads."""

    def __init__(self, sock: socket.socket, pid: int | None, uid: int | None, backlog: list[dict[str, Any]]):
        self.sock = sock
        self.pid, self.uid = pid, uid
        self.backlog = backlog  # hello + history + pictures, written before the queue (not bounded by it)
        self.queue: queue.Queue[bytes | None] = queue.Queue(MAX_QUEUE)
        self.gone = threading.Event()
        self.reason = ""
        self.writer: threading.Thread | None = None
        self.reader: threading.Thread | None = None

    def hang_up(self, reason: str) -> None:
        """Stop talking to this viewer (wakes both of its threads). Safe to call twice, from any thread."""
        if self.gone.is_set():
            return
        self.reason = reason
        self.gone.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass


class ControlServer:
    """Serve a :class:`~tuinet.training.session.Session` over a Unix socket.

    Args:
        session: the in-process session running the trainer (the server adds itself as a listener).
        path: the socket file to create (see :func:`tuinet.remote.sockets.socket_path_for`).
        run_name: the run's name, sent in ``hello``.
        history: events that happened before this process (a resumed run's ``metrics.jsonl``), sent to every viewer
            before this process's own events.
    """

    def __init__(self, session, path: str | Path, run_name: str, history: Iterable[dict[str, Any]] = ()):
        self.session = session
        self.path = Path(path)
        self.run_name = run_name
        self._history = EventHistory()  # bounded: a week-long run must not grow the trainer's memory
        for e in history:
            self._history.append(e)
        self._pictures: dict[str, dict[str, Any]] = {}
        self._viewers: list[_Viewer] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._closing = False
        self.dropped = 0  # viewers dropped for falling behind (for tests and the log)
        session.add_listener(self._on_event)

    # --- lifecycle ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the socket (0600) and start accepting viewers in a daemon thread."""
        if self.path.exists() or self.path.is_symlink():
            if not remove_stale_socket(self.path):  # only a socket of ours on which nobody listens goes
                if self.path.is_socket() and socket_listening(self.path):
                    raise TuinetError(f"{self.path}: another trainer is listening on this socket; not replacing it")
                raise TuinetError(f"{self.path}: exists and is not a stale socket of yours; not replacing it")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the file is born 0600: no window in which another user could connect
        try:
            sock.bind(os.fspath(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        self._listener = sock
        self._accept_thread = threading.Thread(target=self._accept_loop, name="tuinet-accept", daemon=True)
        self._accept_thread.start()

    def close(self, grace: float = 3.0) -> None:
        """Stop accepting, let each viewer receive what is queued (up to ``grace`` seconds), hang up, unlink."""
        self._closing = True
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        with self._lock:
            viewers = list(self._viewers)
        for v in viewers:  # a None after the queued lines: the writer sends them, then hangs up
            try:
                v.queue.put_nowait(None)
            except queue.Full:
                v.hang_up("closing")
        deadline = time.monotonic() + grace
        for v in viewers:
            if v.writer is not None and v.writer.ident is not None:  # a viewer accepted this instant may not
                v.writer.join(max(0.0, deadline - time.monotonic()))  # have its threads started yet
            v.hang_up("closing")
        try:
            if self.path.is_socket():
                self.path.unlink()
        except OSError:
            pass
        self.session.remove_listener(self._on_event)

    @property
    def viewers(self) -> int:
        """How many viewers are connected."""
        with self._lock:
            return len(self._viewers)

    # --- events out ---------------------------------------------------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        """Session listener (training thread): remember the event, queue it for each viewer; never blocks."""
        with self._lock:
            if event.get("event") in PICTURE_EVENTS:
                self._pictures[event["event"]] = event
            else:
                self._history.append(event)
            if not self._viewers:
                return
            data = _line(event)
            for v in list(self._viewers):
                try:
                    v.queue.put_nowait(data)
                except queue.Full:
                    self._viewers.remove(v)
                    self.dropped += 1
                    v.hang_up("too slow: more than %d events behind" % MAX_QUEUE)

    # --- viewers ------------------------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            try:
                self._welcome(conn)
            except Exception:  # noqa: BLE001 - one bad viewer must not stop the accept loop
                conn.close()

    @staticmethod
    def _refuse(conn: socket.socket, reason: str) -> None:
        """One ``refused`` line, then the connection closes (a fresh socket's buffer takes a line at once)."""
        conn.settimeout(1.0)
        try:
            conn.sendall(_line(_remote_event("refused", error=reason)))
        except OSError:
            pass
        conn.close()

    def _welcome(self, conn: socket.socket) -> None:
        pid, uid = peer_credentials(conn)
        refusal = check_peer(uid)
        if refusal is None and self.viewers >= MAX_VIEWERS:
            refusal = f"too many viewers: {MAX_VIEWERS} are connected to this trainer; close one and try again"
        if refusal:
            self._refuse(conn, refusal)
            return
        conn.settimeout(None)
        try:
            state = self.session.state
        except Exception:  # noqa: BLE001 - a state we cannot read is not a reason to refuse a viewer
            state = {}
        hello = _remote_event("hello", run=self.run_name, pid=os.getpid(), state=state, socket=str(self.path),
                              viewers=self.viewers + 1)
        # the history snapshot and the registration happen under the lock that _on_event takes: every event is
        # either in the snapshot or in the queue, never both, never neither
        with self._lock:
            if len(self._viewers) >= MAX_VIEWERS:  # only this thread adds viewers: a last check, to be exact
                v = None
            else:
                history = list(self._history)
                pictures = list(self._pictures.values())
                v = _Viewer(conn, pid, uid, [hello, *history, _remote_event("history_end", events=len(history)),
                                             *pictures])
                self._viewers.append(v)
        if v is None:
            self._refuse(conn, f"too many viewers: {MAX_VIEWERS} are connected to this trainer")
            return
        v.writer = threading.Thread(target=self._write_loop, args=(v,), name="tuinet-viewer-out", daemon=True)
        v.reader = threading.Thread(target=self._read_loop, args=(v,), name="tuinet-viewer-in", daemon=True)
        v.reader.start()  # first: the writer joins the reader when it ends
        v.writer.start()

    def _forget(self, v: _Viewer, reason: str) -> None:
        with self._lock:
            if v in self._viewers:
                self._viewers.remove(v)
        v.hang_up(reason)

    def _write_loop(self, v: _Viewer) -> None:
        try:
            for message in v.backlog:
                if v.gone.is_set():
                    return
                v.sock.sendall(_line(message))
            v.backlog = []
            while True:
                data = v.queue.get()
                if data is None or v.gone.is_set():
                    return
                v.sock.sendall(data)
        except OSError:
            pass
        finally:
            self._forget(v, v.reason or "viewer left")
            if v.reader is not None:
                v.reader.join(2.0)
            v.sock.close()

    def _read_loop(self, v: _Viewer) -> None:
        f = v.sock.makefile("rb")
        try:
            while not v.gone.is_set():
                raw = f.readline(MAX_LINE)
                if not raw:
                    break
                if not raw.endswith(b"\n") and len(raw) >= MAX_LINE:
                    self._reply(v, f"command line longer than {MAX_LINE} bytes; closing")
                    self._close_after_queue(v, "command line too long")
                    break
                if raw.strip():
                    self._command(v, raw)
        except Exception:  # noqa: BLE001 - a broken connection (or anything else) ends this viewer, nothing more
            pass
        finally:
            f.close()
            self._forget(v, v.reason or "viewer left")

    def _close_after_queue(self, v: _Viewer, reason: str) -> None:
        """End ``v`` once its writer has sent what is queued (its own error line last), waiting at most
        CLOSE_GRACE seconds: a viewer that does not read is cut off anyway."""
        with self._lock:
            if v in self._viewers:
                self._viewers.remove(v)
        v.reason = reason
        try:
            v.queue.put_nowait(None)  # the writer stops after the lines before it
        except queue.Full:
            v.hang_up(reason)
        v.gone.wait(CLOSE_GRACE)

    def _command(self, v: _Viewer, raw: bytes) -> None:
        """Parse, validate and queue one command line; anything wrong is answered to ``v`` alone."""
        try:
            cmd = validate_command(from_json(raw))  # not UTF-8, not JSON, too deep: all ValueError
            if v.pid is not None:
                cmd["client_pid"] = v.pid  # who sent it is what the kernel says, not what the line claims
            self.session.send(cmd)
        except TuinetError as e:
            self._reply(v, f"command refused: {e}")
        except ValueError as e:
            self._reply(v, f"not a JSON command: {str(e)[:200]}")
        except Exception as e:  # noqa: BLE001 - no line may end the reader; the trainer never saw this one
            self._reply(v, f"command refused: {type(e).__name__}")

    def _reply(self, v: _Viewer, message: str) -> None:
        """A log event for one viewer only (its own malformed command)."""
        event = _remote_event("log", level="error", message=message)
        try:
            v.queue.put_nowait(_line(event))
        except queue.Full:
            pass
