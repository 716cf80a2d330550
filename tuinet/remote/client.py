"""A viewer's side of a detached trainer: :class:`RemoteSession` looks like an in-process Session to the app.

It connects to the trainer's control socket, reads the ``hello`` and the whole history before returning (so
``history`` is complete at once), then a reader thread passes each live event to the listeners. When the
connection ends without a final event it adds a synthetic event that says what happened, so the viewer can tell
"the trainer was killed" from "this viewer was dropped".
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

from tuinet.protocol import FINAL_EVENTS, PICTURE_EVENTS, PROTOCOL_VERSION, Listener, final_event, from_json, \
    to_json, validate_command
from tuinet.remote.sockets import RemoteError, connect
from tuinet.training.history import EventHistory
from tuinet.training.procs import pid_alive


class RemoteSession:
    """A session-like view of a trainer in another process.

    Satisfies :class:`tuinet.protocol.Session`, as the in-process :class:`~tuinet.training.session.Session` does;
    adds ``close`` (detach) and ``hello``.

    Listeners are called from the reader thread, in order, one event at a time: keep them short.

    Args:
        socket_path: the trainer's control socket.
        timeout: seconds to wait for the connection and the history.
    """

    def __init__(self, socket_path: str | Path, timeout: float = 30.0):
        self.socket_path = Path(socket_path)
        self._sock = connect(self.socket_path, timeout=min(timeout, 5.0))
        self._sock.settimeout(timeout)
        self._file = self._sock.makefile("rb")
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._history = EventHistory()  # bounded: a week-long run must not grow the viewer's memory
        self._read_mark: int | None = None
        self.last: dict[str, dict[str, Any]] = {}
        self._ended = threading.Event()
        self._closing = False
        self.end_reason: str | None = None  # why the connection ended (None while connected)
        self.warning: str | None = None
        try:
            hello = self._read()
            if hello is None:
                raise RemoteError(f"{socket_path}: the trainer closed the connection at once")
            if hello.get("event") == "refused":
                raise RemoteError(f"{socket_path}: {hello.get('error', 'refused')}")
            if hello.get("event") != "hello":
                raise RemoteError(f"{socket_path}: not a tuinet trainer (first line {hello.get('event')!r})")
            if int(hello.get("v", 1)) > PROTOCOL_VERSION:
                self.warning = f"the trainer speaks protocol v{hello['v']}, this viewer v{PROTOCOL_VERSION}; " \
                               "fields this viewer does not know are ignored"
            self.hello = hello
            self.run = hello.get("run")
            self.pid = hello.get("pid")
            self._state: dict[str, Any] = dict(hello.get("state") or {})
            while True:  # the history, up to the marker; the pictures after it arrive as live events
                e = self._read()
                if e is None:
                    break
                if e.get("event") == "history_end":
                    break
                self._fold(e)
        except (OSError, ValueError) as e:
            self._sock.close()
            raise RemoteError(f"{socket_path}: lost the trainer while reading its history ({e})") from None
        except RemoteError:
            self._sock.close()
            raise
        self._sock.settimeout(None)
        self._thread = threading.Thread(target=self._read_loop, name="tuinet-remote-reader", daemon=True)
        self._thread.start()

    # --- the session interface ----------------------------------------------------------------------------------------

    @property
    def history(self) -> list[dict[str, Any]]:
        """The non-picture events so far (a copy; bounded, see EventHistory). A listener added next catches up
        from this point."""
        with self._lock:
            self._read_mark = self._history.total
            return list(self._history)

    @property
    def state(self) -> dict[str, Any]:
        """The trainer's state as of the last event (status, paused, lr, optimizer, epoch, step ...), a copy."""
        with self._lock:
            return dict(self._state)

    @property
    def started(self) -> bool:
        """Always True: the trainer runs in its own process."""
        return True

    @property
    def running(self) -> bool:
        """True while connected to a trainer that has not ended."""
        return not self._ended.is_set()

    def start(self) -> None:
        """Nothing to do: the trainer was started by its own process."""

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(event)`` for every event from now on.

        Events that arrived after the last read of :attr:`history` are passed to ``fn`` first, so the pattern
        ``replay(session.history); session.add_listener(fn)`` never misses one.
        """
        with self._lock:
            if self._read_mark is not None:
                for e in self._history.since(self._read_mark):
                    self._call(fn, e)
                self._read_mark = None
            self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        """Stop calling ``fn``."""
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def send(self, command: dict[str, Any]) -> bool:
        """Send a command (validated here; raises ConfigError when malformed). False when the trainer is gone."""
        validate_command(command)
        if self._ended.is_set():
            return False
        data = (to_json(command) + "\n").encode()
        try:
            with self._send_lock:
                self._sock.sendall(data)
        except OSError:
            return False
        return True

    def final_event(self) -> dict[str, Any] | None:
        """The trainer's own final event (finished, stopped or failed) if this process has sent one, else None.

        The newest: a resumed run's history holds the final event of its earlier process too."""
        with self._lock:
            final = final_event({k: e for k, e in self.last.items() if not e.get("synthetic")})
            if final is None or final.get("time", 0) < self.last.get("started", {}).get("time", 0):
                return None
            return final

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the connection ends (the trainer finished, stopped or died, or we closed); True when it has."""
        return self._ended.wait(timeout)

    def close(self) -> None:
        """Detach: hang up and leave the trainer running."""
        self._closing = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if threading.current_thread() is not self._thread:
            self._thread.join(5.0)
        self._sock.close()

    def __enter__(self) -> "RemoteSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- reading ------------------------------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any] | None:
        raw = self._file.readline()
        if not raw:
            return None
        return from_json(raw.decode())

    def _read_loop(self) -> None:
        try:
            while True:
                try:
                    e = self._read()
                except ValueError:
                    continue  # a garbled line: skip it, as readers of metrics.jsonl do
                if e is None:
                    break
                self._deliver(e)
        except OSError:
            pass
        finally:
            self._file.close()
            self._end()

    def _fold(self, e: dict[str, Any]) -> None:
        """Remember an event and update the state (under the lock)."""
        kind = e.get("event")
        with self._lock:
            self.last[kind] = e
            if kind not in PICTURE_EVENTS:
                self._history.append(e)
            _fold_state(self._state, e)

    def _deliver(self, e: dict[str, Any]) -> None:
        with self._lock:  # listeners run under the lock: events reach them in order, and add_listener cannot race
            self._fold(e)
            for fn in list(self._listeners):
                self._call(fn, e)

    @staticmethod
    def _call(fn: Listener, e: dict[str, Any]) -> None:
        try:
            fn(e)
        except Exception:  # noqa: BLE001 - one broken listener must not stop the others
            pass

    def _end(self) -> None:
        """The connection ended: say why with synthetic events (unless we hung up ourselves)."""
        if self._closing:
            self.end_reason = "detached"
        else:
            final = self.final_event()
            if final is not None:
                self.end_reason = f"trainer {final['event']}"
                self._deliver(_synthetic("disconnected", reason=self.end_reason, trainer_alive=False))
            else:
                alive = self._wait_exit(2.0)
                where = f"last step {self._state.get('step', '?')}"
                if alive:
                    self.end_reason = "dropped"
                    msg = (f"disconnected from run {self.run}: the trainer (pid {self.pid}) is still running but "
                           f"closed this connection (viewer too slow?); `tuinet attach {self.run}` to reconnect")
                    self._deliver(_synthetic("log", level="error", message=msg))
                else:
                    self.end_reason = "trainer died"
                    msg = (f"the trainer process (pid {self.pid}) died without a final event (killed or crashed), "
                           f"{where}; `tuinet resume {self.run}` continues from the latest checkpoint")
                    self._deliver(_synthetic("failed", error=msg, crashed=True))
                self._deliver(_synthetic("disconnected", reason=self.end_reason, trainer_alive=alive))
        self._ended.set()

    def _wait_exit(self, seconds: float) -> bool:
        """True when the trainer is still alive after up to ``seconds`` (EOF can come just before the exit)."""
        deadline = time.monotonic() + seconds
        while pid_alive(self.pid):
            if time.monotonic() > deadline:
                return True
            time.sleep(0.05)
        return False


def _synthetic(kind: str, **fields: Any) -> dict[str, Any]:
    return {"event": kind, "v": PROTOCOL_VERSION, "time": round(time.time(), 3), "synthetic": True, **fields}


def _fold_state(state: dict[str, Any], e: dict[str, Any]) -> None:
    """Update a public_state()-like dict from one event."""
    kind = e.get("event")
    if kind == "started":
        state.update(status="running", paused=False, epochs=e.get("epochs"), step=e.get("step", 0),
                     epoch=e.get("epoch", 0), lr=e.get("lr"), optimizer=e.get("optimizer"),
                     hyperparams=e.get("hyperparams") or {}, batch_size=e.get("batch_size"),
                     run_dir=e.get("run_dir"))
    elif kind == "paused":
        state.update(paused=True, status="paused")
    elif kind == "resumed":
        state.update(paused=False, status="running")
    elif kind in ("lr_changed", "rolled_back"):
        state["lr"] = e.get("lr", state.get("lr"))
    elif kind == "optimizer_changed":
        state.update(optimizer=e.get("name"), hyperparams=e.get("hyperparams") or {})
    elif kind == "step":
        state.update(step=e.get("step"), lr=e.get("lr"))
    elif kind == "epoch":
        state.update(epoch=e.get("epoch"), step=e.get("step"), lr=e.get("lr"))
    elif kind in FINAL_EVENTS:
        state.update(status=kind, paused=False)
        if kind == "stopped":
            state.update(step=e.get("step", state.get("step")), epoch=e.get("epoch", state.get("epoch")))
    elif kind == "disconnected":
        state["connected"] = False
