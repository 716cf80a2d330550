"""A run on disk: ``runs/<name>/`` with config.json, metrics.jsonl, status.json, latest/best checkpoints (and the
last few epochs' ``epoch-NNNN.npz``), a log.

``metrics.jsonl`` gets every event except the bulky picture events (weights, samples, boundary), one JSON line
each, flushed as it goes. ``status.json`` is rewritten atomically on every lifecycle change and each epoch, and is
what ``tuinet runs`` lists.

One trainer per run folder: whoever trains a run holds an ``fcntl.flock`` on its ``trainer.lock`` for as long as
it trains (:meth:`RunDir.lock`); a second trainer is refused before it reads or writes anything. The folder is
private to its user (0700, files 0600). A resumed run's ``status.json`` and ``metrics.jsonl`` are left as they
were until its trainer has started (:meth:`RunDir.hold_until_started`): a resume that cannot start changes
nothing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from tuinet.engine.checkpoint import atomic_write_bytes
from tuinet.errors import ConfigError
from tuinet.protocol import LIVE_STATUSES, PICTURE_EVENTS, to_json
from tuinet.training.procs import pid_alive, remove_stale_socket

#: the file a trainer holds an exclusive flock on while it trains the run
LOCK_NAME = "trainer.lock"
#: events kept in memory while a resumed run waits to start (only log notes arrive before ``started``)
MAX_HELD_EVENTS = 1000


#: the per-epoch checkpoints a run folder keeps (``--keep-epochs``): ``epoch-0005.npz``
EPOCH_CHECKPOINT = re.compile(r"epoch-(\d{4,9})\.npz")


def epoch_checkpoint_name(epoch: int) -> str:
    """The file name of the checkpoint kept for the end of ``epoch``."""
    return f"epoch-{epoch:04d}.npz"


class RunLockedError(ConfigError):
    """Another trainer holds the run folder."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:40] or "run"


def absolute_dataset(dataset: Any) -> Any:
    """A dataset reference that means the same from any folder: a path is made absolute, a built-in name kept."""
    from tuinet.data import builtin_datasets

    if not isinstance(dataset, str) or not dataset.strip():
        return dataset
    if dataset.strip().lower() in {d["name"] for d in builtin_datasets()}:
        return dataset
    return os.path.abspath(os.path.expanduser(dataset))


def _read_json_file(path: Path) -> dict[str, Any]:
    """A JSON object from a file; {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


class RunDir:
    """One run's folder.

    Args:
        path: the run folder (created, private, if missing).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._metrics = None
        self._log = None
        self._lock_file = None
        self._held: dict[str, Any] | None = None

    @classmethod
    def create(cls, runs_dir: str | Path, name: str | None, dataset: str, model: str) -> "RunDir":
        """A new run folder, created atomically and locked for the caller (see :meth:`lock`).

        The name defaults to ``<model>-<dataset>-<timestamp>`` and never reuses a folder: of two processes that
        ask for the same name at once, exactly one gets it.
        """
        runs = Path(runs_dir)
        try:
            runs.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"{runs}: cannot create the runs folder ({e.strerror})") from None
        base = _slug(name) if name else f"{_slug(Path(model).stem)}-{_slug(Path(dataset).stem)}-" \
                                         f"{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        candidate, i = base, 1
        while True:
            try:
                (runs / candidate).mkdir(mode=0o700)  # atomic: the one process whose mkdir succeeds owns it
                break
            except FileExistsError:
                if name:
                    raise ConfigError(f"run '{name}' already exists in {runs}; choose another --name or "
                                      f"continue it with `tuinet resume {name}`") from None
                i += 1
                candidate = f"{base}-{i}"
            except OSError as e:
                raise ConfigError(f"{runs / candidate}: cannot create the run folder ({e.strerror})") from None
        rd = cls(runs / candidate)
        rd.lock()
        return rd

    @property
    def name(self) -> str:
        """The run's name (its folder name)."""
        return self.path.name

    @property
    def latest(self) -> Path:
        """Path of the latest checkpoint."""
        return self.path / "latest.npz"

    @property
    def best(self) -> Path:
        """Path of the best (lowest validation loss) checkpoint."""
        return self.path / "best.npz"

    def epoch_checkpoint(self, epoch: int) -> Path:
        """Path of the checkpoint kept for the end of ``epoch`` (``epoch-0005.npz``)."""
        return self.path / epoch_checkpoint_name(epoch)

    def epoch_checkpoints(self) -> dict[int, Path]:
        """The per-epoch checkpoints the folder holds now, by epoch, in order."""
        found = {}
        try:
            entries = list(os.scandir(self.path))
        except OSError:
            return {}
        for entry in entries:
            m = EPOCH_CHECKPOINT.fullmatch(entry.name)
            if m and entry.is_file(follow_symlinks=False):
                found[int(m.group(1))] = Path(entry.path)
        return dict(sorted(found.items()))

    def keep_epoch_checkpoint(self, epoch: int, keep: int) -> Path | None:
        """Keep ``latest.npz``, just written at the end of ``epoch``, as ``epoch-NNNN.npz`` too, and delete the
        epoch checkpoints older than the last ``keep`` epochs; returns the new file (None when ``keep`` is 0).

        The copy is a hard link made under a temporary name and renamed into place (atomic, like every checkpoint
        write, and free: ``latest.npz`` is later replaced by a new file, so the link keeps this epoch's content);
        where links are not possible, the bytes are copied through the same temporary-file-then-rename write.
        """
        path = None
        if keep > 0:
            path = self.epoch_checkpoint(epoch)
            tmp = self.path / f".{path.name}.{secrets.token_hex(6)}.tmp"
            try:
                os.link(self.latest, tmp)
                os.replace(tmp, path)
            except OSError:
                try:
                    tmp.unlink()
                except OSError:
                    pass
                with open(self.latest, "rb") as src:
                    atomic_write_bytes(path, lambda f: shutil.copyfileobj(src, f, 1 << 20))
        for n, old in self.epoch_checkpoints().items():
            if n <= epoch - keep:
                try:
                    old.unlink()
                except FileNotFoundError:
                    pass
        return path

    # --- one trainer per run folder -------------------------------------------------------------------------------

    @property
    def locked(self) -> bool:
        """True while this object holds the run's lock."""
        return self._lock_file is not None

    @property
    def lock_fd(self) -> int | None:
        """The descriptor of the held lock (to hand it to a child process with ``pass_fds``), or None."""
        return self._lock_file.fileno() if self._lock_file is not None else None

    def lock(self) -> bool:
        """Take the run's lock for as long as this process trains it; True when taken now, False when held already.

        Raises :class:`RunLockedError` (naming the run and, when known, the pid holding it) when another trainer
        has it; nothing in the folder is changed then. Once taken, the folder is made private and temporary files
        left by interrupted checkpoint writes are removed (nobody else can be writing them).
        """
        if self._lock_file is not None:
            return False
        try:
            fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise ConfigError(f"{self.path / LOCK_NAME}: cannot open the run's lock ({e.strerror})") from None
        f = os.fdopen(fd, "r+b", buffering=0)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.close()
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"{self.path / LOCK_NAME}: cannot lock the run ({e.strerror})") from None
            pid = self.lock_holder()
            by = f"another trainer (pid {pid})" if pid is not None else "another trainer"
            raise RunLockedError(f"run {self.name} is in use by {by}; one trainer per run folder: wait for it to "
                                 f"end, or stop it with `tuinet stop {self.name}`") from None
        self._take(f, os.getpid())
        return True

    def adopt_lock(self, fd: int) -> None:
        """Hold the lock a parent process took and passed down as descriptor ``fd`` (a detached trainer)."""
        if self._lock_file is not None:
            raise RuntimeError("the run's lock is already held by this object")
        os.set_inheritable(fd, False)
        f = os.fdopen(fd, "r+b", buffering=0)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already: this only checks it is the lock
        except OSError:
            f.close()
            raise RunLockedError(f"run {self.name}: the lock handed to this process is not held") from None
        self._take(f, os.getpid())

    def _take(self, f, pid: int) -> None:
        self._lock_file = f
        self.set_lock_pid(pid)
        try:
            if stat.S_IMODE(os.stat(self.path).st_mode) & 0o077:
                os.chmod(self.path, 0o700)
        except OSError:
            pass
        self.remove_temporaries()

    def set_lock_pid(self, pid: int) -> None:
        """Record which process trains the run (shown to a trainer that is refused)."""
        if self._lock_file is None:
            return
        try:
            os.ftruncate(self._lock_file.fileno(), 0)
            os.pwrite(self._lock_file.fileno(), f"{pid}\n".encode(), 0)
        except OSError:
            pass

    def lock_holder(self) -> int | None:
        """The pid recorded by the run's lock holder, when it is a live process (None when unknown)."""
        try:
            text = (self.path / LOCK_NAME).read_text().strip()
            pid = int(text)
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def unlock(self) -> None:
        """Let go of the run's lock. Only this descriptor is closed (no LOCK_UN): a child that was handed the lock
        keeps it."""
        f, self._lock_file = self._lock_file, None
        if f is not None:
            f.close()

    def remove_temporaries(self) -> int:
        """Delete the temporary files of interrupted atomic writes (``.<name>.<random>.tmp``); how many went."""
        removed = 0
        for p in self.path.glob(".*.tmp"):
            try:
                st = os.lstat(p)
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid():
                    p.unlink()
                    removed += 1
            except OSError:
                pass
        return removed

    # --- writing ----------------------------------------------------------------------------------------------------

    def hold_until_started(self) -> None:
        """Keep ``status.json`` and ``metrics.jsonl`` as they are until a ``started`` event is appended.

        Status updates and events are kept in memory meanwhile and written when the run starts; when it never
        starts (:meth:`close` first), they are dropped: a resume that fails leaves the run as it was.
        """
        if self._held is None:
            self._held = {"status": {}, "events": []}

    def _release(self) -> None:
        held, self._held = self._held, None
        if held and held["status"]:
            self.update_status(**held["status"])
        for event in held["events"] if held else ():
            self.append_event(event)

    def write_json(self, filename: str, data: dict[str, Any]) -> None:
        """Write a JSON file atomically (mode 0600)."""
        payload = json.dumps(data, indent=2, default=str).encode()
        atomic_write_bytes(self.path / filename, lambda f: f.write(payload))

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json``; a dataset path is stored absolute, so the run resumes from any folder."""
        data = dict(config)
        if "dataset" in data:
            data["dataset"] = absolute_dataset(data["dataset"])
        self.write_json("config.json", data)

    def read_json(self, filename: str) -> dict[str, Any]:
        """Read a JSON file of the run ({} when missing or unreadable)."""
        return _read_json_file(self.path / filename)

    def _open_private(self, filename: str):
        fd = os.open(self.path / filename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a file from an older version may be 0644
        except OSError:
            pass
        return os.fdopen(fd, "a", buffering=1)

    def append_event(self, event: dict[str, Any]) -> None:
        """Append an event to metrics.jsonl (flushed) unless it is a bulky picture event."""
        if event.get("event") in PICTURE_EVENTS:
            return
        if self._held is not None:
            if event.get("event") != "started":
                if len(self._held["events"]) < MAX_HELD_EVENTS:
                    self._held["events"].append(event)
                return
            self._release()
        if self._metrics is None:
            self._metrics = self._open_private("metrics.jsonl")
        self._metrics.write(to_json(event) + "\n")
        self._metrics.flush()

    def log(self, message: str) -> None:
        """Append a timestamped line to log.txt."""
        if self._log is None:
            self._log = self._open_private("log.txt")
        self._log.write(f"{datetime.now().isoformat(timespec='seconds')} {message}\n")
        self._log.flush()

    def update_status(self, **fields: Any) -> dict[str, Any]:
        """Merge fields into status.json (atomically) and return the new status (kept in memory while held)."""
        status = self.read_json("status.json")
        if self._held is not None:
            self._held["status"].update(fields)
            status.update(self._held["status"])
            status["updated"] = time.time()
            return status
        status.update(fields)
        status["updated"] = time.time()
        self.write_json("status.json", status)
        return status

    def events(self) -> Iterator[dict[str, Any]]:
        """Every event in metrics.jsonl (a torn last line from a crash is skipped)."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return
        with open(path) as f:
            for line in f:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue

    def close(self) -> None:
        """Close open files; what a run that never started held back is dropped (the lock is kept: see
        :meth:`unlock`)."""
        for f in (self._metrics, self._log):
            if f is not None:
                f.close()
        self._metrics = self._log = None
        if self._held is not None:
            self._held = {"status": {}, "events": []}


def free_run_name(runs_dir: str | Path, base: str) -> str:
    """``base`` made a valid run name, with ``-2``, ``-3`` ... added until no run folder has it (the folder is
    only created later: :meth:`RunDir.create` still refuses a name taken meanwhile)."""
    runs = Path(runs_dir)
    base = _slug(base)
    candidate, i = base, 1
    while (runs / candidate).exists():
        i += 1
        candidate = f"{base[:40 - len(str(i)) - 1]}-{i}"
    return candidate


def find_run(ref: str, runs_dir: str | Path | None = None) -> RunDir:
    """A run by name (in ``runs_dir``) or by path; a clear error when there is none."""
    from tuinet.training.config import default_runs_dir

    p = Path(ref)
    if (p / "config.json").exists():
        return RunDir(p)
    runs = Path(runs_dir or default_runs_dir())
    if (runs / ref / "config.json").exists():
        return RunDir(runs / ref)
    raise ConfigError(f"no run '{ref}' in {runs} (see `tuinet runs`)")


def list_runs(runs_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Status of every run in ``runs_dir``, newest first; live runs whose process is gone are marked 'crashed'."""
    from tuinet.training.config import default_runs_dir

    runs = Path(runs_dir or default_runs_dir())
    out = []
    if not runs.is_dir():
        return out
    for d in runs.iterdir():
        if not (d / "config.json").exists():
            continue
        status = _read_json_file(d / "status.json")
        status.setdefault("name", d.name)
        status.setdefault("status", "unknown")
        if status["status"] in LIVE_STATUSES and not pid_alive(status.get("pid")):
            status["status"] = "crashed"
            remove_stale_socket(status.get("socket"))
        status["path"] = str(d)
        out.append(status)
    out.sort(key=lambda s: s.get("started", 0), reverse=True)
    return out


def run_summaries(runs_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """:func:`list_runs` with each run's dataset, model and epochs filled in from its configuration, and a ``live``
    flag (a trainer process is running it now)."""
    out = []
    for s in list_runs(runs_dir):
        if not s.get("dataset") or not s.get("model"):
            cfg = RunDir(s["path"]).read_json("config.json")
            s.setdefault("epochs", cfg.get("epochs"))
            s["dataset"] = s.get("dataset") or cfg.get("dataset")
            s["model"] = s.get("model") or cfg.get("model")
        s["live"] = s.get("status") in LIVE_STATUSES and pid_alive(s.get("pid"))
        out.append(s)
    return out


def metric_events(run: RunDir) -> list[dict[str, Any]]:
    """The run's step, validation and epoch events in order; when a resumed run repeats a step or epoch (after a
    crash, events past the last checkpoint are written again), the later one wins."""
    kept: dict[tuple[str, Any], dict[str, Any]] = {}
    for e in run.events():
        kind = e.get("event")
        if kind in ("step", "validation"):
            key = (kind, e.get("step"))
        elif kind == "epoch":
            key = (kind, e.get("epoch"))
        else:
            continue
        kept.pop(key, None)
        kept[key] = e
    events = list(kept.values())
    order = {"step": 0, "validation": 1, "epoch": 2}
    events.sort(key=lambda e: (e.get("step") or 0, order[e["event"]]))
    return events
