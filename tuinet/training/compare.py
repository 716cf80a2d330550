"""Many runs side by side: run records read from run folders, curves read downsampled and incrementally from
``metrics.jsonl``, filters, sorting and the settings that differ.

Nothing here imports Textual or click: the Compare screen of the app and ``tuinet compare --headless`` both use it.
A run folder is the unit (config.json, metrics.jsonl, status.json, checkpoints); nothing is stored anywhere else.

Reading is bounded for hundreds of runs: a :class:`CurveReader` remembers its byte offset in ``metrics.jsonl`` and
keeps at most ``max_points`` points per series (when a series fills up, every other point is dropped and the
stride doubles, so the whole run keeps an even resolution); a half-written last line (a live run, or one killed
mid-write) is left for the next poll, a damaged line is skipped and counted, and an event of another protocol
version is read for the fields it shares, with one note.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from array import array
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tuinet.errors import ConfigError
from tuinet.protocol import LIVE_STATUSES, PROTOCOL_VERSION
from tuinet.training.config import TrainConfig, default_runs_dir
from tuinet.training.procs import pid_alive

#: the x axes a curve can be drawn against, in the order a key cycles them
X_AXES = ("epoch", "step", "samples", "time")
#: the series a run has: (event kind, field) for each
SERIES = {
    "train_loss": ("step", "loss"),
    "train_accuracy": ("step", "accuracy"),
    "val_loss": ("epoch", "val_loss"),
    "val_accuracy": ("epoch", "val_accuracy"),
}
#: statuses a run record can show (``live``: a trainer holds the folder now; ``crashed``: status.json says it runs
#: but no trainer does)
STATUSES = ("live", "paused", "finished", "stopped", "early_stopped", "failed", "crashed", "unknown")
#: the table's columns: key -> (heading, what it is); every one is a valid sort key
COLUMNS = {
    "name": ("run", "the run's name"),
    "status": ("status", "live / finished / stopped / crashed ..."),
    "dataset": ("dataset", "the dataset"),
    "model": ("model", "the model spec"),
    "params": ("params", "trainable parameters"),
    "epochs": ("epochs", "epochs done / planned"),
    "best_val_loss": ("best val loss", "lowest validation loss"),
    "best_val_accuracy": ("best val acc", "validation accuracy at the epoch of the lowest validation loss"),
    "test_accuracy": ("test acc", "test accuracy at the end"),
    "train_seconds": ("train time", "seconds inside training steps"),
    "samples_per_second": ("samples/s", "training throughput"),
}
#: the settings compared between runs (config.json keys), in the order the diff lists them
SETTINGS = ("dataset", "model", "activation", "optimizer", "lr", "batch_size", "epochs", "schedule", "dropout", "l1",
            "l2", "weight_decay", "momentum", "betas", "clip_grad", "normalize", "val_split", "limit", "seed")
#: config.json keys the settings diff leaves out: they differ between any two runs and the table shows them already
NOT_SETTINGS = ("name", "runs_dir")
#: record fields that are keys for filters and sorting besides the columns and the settings
EXTRA_KEYS = ("epochs_done", "epochs_planned", "started", "parent")

#: the file a trainer holds a lock on while it trains (tuinet.training.rundir.LOCK_NAME; not imported from there,
#: since that module loads the Numba engine and reading runs should not)
_LOCK_NAME = "trainer.lock"
_METRICS = "metrics.jsonl"
_CHUNK = 1 << 20  # bytes read at a time
_MAX_LINE = 16 << 20  # a "line" longer than this without a newline is damage, not an event
_HEAD_BYTES = 256 << 10  # read at most this much from the start of metrics.jsonl to find the started event
_TAIL_BYTES = 4 << 20  # read at most this much from the end to find the last epoch and final events
#: events the reader keeps as raw lines (parsed only when :attr:`CurveReader.events` is asked): bulky or frequent,
#: and no curve needs them
_LAZY_KINDS = frozenset({"layer_stats", "confusion", "checkpoint_saved", "log", "compiling", "compiled",
                         "weights", "samples", "boundary", "evaluated"})
_NAN = float("nan")


def _num(v: Any) -> float:
    """A finite float from a JSON value, NaN for anything else (null, a string, a bool)."""
    t = type(v)
    if t is float:
        return v if v - v == 0.0 else _NAN  # inf - inf and nan - nan are nan
    if t is int:
        return float(v) if -1e308 < v < 1e308 else _NAN
    return _NAN


def _event_kind(line: bytes) -> str | None:
    """The ``event`` field of one JSON line without parsing it (None when the line does not start with it)."""
    if line.startswith(b'{"event":"'):
        end = line.find(b'"', 10)
        return line[10:end].decode("ascii", "replace") if 10 < end < 60 else None
    m = _KIND_RE.match(line)
    return m.group(1).decode("ascii") if m else None


_KIND_RE = re.compile(rb'\s*\{\s*"event"\s*:\s*"([A-Za-z_]{1,40})"')


# --- curves ---------------------------------------------------------------------------------------------------------


@dataclass
class Curve:
    """One series of one run, downsampled: x values for every axis of :data:`X_AXES`, and y."""

    epoch: list[float] = field(default_factory=list)
    step: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    def points(self, x_axis: str) -> tuple[list[float], list[float]]:
        """(x, y) against ``x_axis`` (one of :data:`X_AXES`)."""
        if x_axis not in X_AXES:
            raise ValueError(f"unknown x axis {x_axis!r}; one of {', '.join(X_AXES)}")
        xs, ys = [], []
        for x, y in zip(getattr(self, x_axis), self.y):
            if x == x and y == y:  # NaN: not known (a validation before the plan was read, a null loss)
                xs.append(x)
                ys.append(y)
        return xs, ys

    def __len__(self) -> int:
        return len(self.y)


class _Stream:
    """The points of one event stream (train: ``step`` events; validation: ``epoch`` and ``validation`` events),
    bounded: grid points at every ``stride``-th event, and the newest event as a tail when it is off the grid.

    Columns are float arrays: epoch, step, samples, time, then one y per series (NaN where an event lacks it).
    """

    __slots__ = ("cap", "cols", "stride", "seen", "tail")

    def __init__(self, n_series: int, cap: int):
        self.cap = cap
        self.cols = tuple(array("d") for _ in range(4 + n_series))
        self.stride = 1
        self.seen = 0  # events of the stream so far: grid points sit at seen % stride == 0
        self.tail: tuple[float, ...] | None = None

    def __len__(self) -> int:
        return len(self.cols[0])

    def take(self) -> bool:
        """Count one more event; True when it belongs on the grid (halving the grid first when it is full)."""
        i = self.seen
        self.seen += 1
        if i % self.stride:
            return False
        if len(self) >= self.cap:
            self.cols = tuple(array("d", c[::2]) for c in self.cols)
            self.stride *= 2
            return i % self.stride == 0
        return True

    def add(self, point: tuple[float, ...], on_grid: bool) -> None:
        """Store a point: on the grid, or as the tail (the newest event, kept until the next one)."""
        if on_grid:
            for i, c in enumerate(self.cols):
                c.append(point[i])
            self.tail = None
        else:
            self.tail = point

    def last_step(self) -> float | None:
        """The step of the newest point (the tail or the last grid point)."""
        if self.tail is not None:
            return self.tail[1]
        return self.cols[1][-1] if len(self) else None

    def replace_last(self, point: tuple[float, ...]) -> None:
        """Overwrite the newest point (a second event for the same step: the later one wins)."""
        if self.tail is not None:
            self.tail = point
        else:
            for c, v in zip(self.cols, point):
                c[-1] = v

    def truncate(self, step: float) -> int:
        """Drop every point past ``step`` (a resumed run logs those steps again); how many went."""
        dropped = 0
        if self.tail is not None and self.tail[1] > step:
            self.tail = None
            dropped += 1
        n = len(self)
        steps = self.cols[1]
        while n and steps[n - 1] > step:
            n -= 1
        if n < len(self):
            dropped += len(self) - n
            for c in self.cols:
                del c[n:]
            self.seen = n * self.stride  # the next event lands on the next grid position
        return dropped

    def curve(self, j: int) -> Curve:
        """The curve of series ``j`` (its y column), points where y is missing left out."""
        out = Curve()
        names = ("epoch", "step", "samples", "time")
        cols = [c.tolist() for c in self.cols[:4]] + [self.cols[4 + j].tolist()]
        if self.tail is not None:
            for c, v in zip(cols, self.tail[:4] + (self.tail[4 + j],)):
                c.append(v)
        keep = [i for i, y in enumerate(cols[4]) if y == y]
        if len(keep) < len(cols[4]):
            cols = [[c[i] for i in keep] for c in cols]
        for name, c in zip(names, cols):
            setattr(out, name, c)
        out.y = cols[4]
        return out


_TRAIN_SERIES = ("train_loss", "train_accuracy")
_VAL_SERIES = ("val_loss", "val_accuracy")


class CurveReader:
    """Follows one run's ``metrics.jsonl``: each :meth:`poll` reads what was appended since the last one.

    Args:
        path: the metrics file.
        max_points: the most points kept per series.
    """

    def __init__(self, path: str | Path, max_points: int = 400):
        if max_points < 2:
            raise ValueError(f"max_points must be at least 2, got {max_points}")
        self.path = Path(path)
        self.max_points = max_points
        self._reset()

    def _reset(self) -> None:
        cap = self.max_points - 1  # one place is kept for the newest point (the tail)
        self._train = _Stream(len(_TRAIN_SERIES), cap)
        self._val = _Stream(len(_VAL_SERIES), cap)
        self._offset = 0
        self._ino: int | None = None
        self._lineno = 0
        self._pending = b""  # a half-written last line (its bytes are read again next poll)
        self._train_tail: bytes | None = None  # the newest off-grid step line, parsed at the end of a poll
        self._last: dict[str, dict[str, Any]] = {}
        self._raw: dict[str, bytes] = {}  # newest line of each kind not parsed yet
        self._damaged = 0
        self._first_damaged: int | None = None
        self._versions: set[Any] = set()
        self._missing = False
        self._rewritten = False
        self._changes = 0  # counts every change to a series
        # x axes: the plan (from the started event, or config.json), wall time and samples across resumes
        self._batch_size: float | None = None
        self._steps_per_epoch: float | None = None
        self._t_base = 0.0  # seconds of earlier sessions of the run
        self._t0: float | None = None  # Unix time the current session started
        self._t_last = 0.0  # elapsed seconds at the newest event read
        self._samples_base = 0.0
        self._step0 = 0.0

    # --- reading --------------------------------------------------------------------------------------------------

    @property
    def offset(self) -> int:
        """Bytes of ``metrics.jsonl`` read so far (complete lines only)."""
        return self._offset

    @property
    def pending(self) -> int:
        """Bytes of a half-written last line waiting for its end (0 when the file ends with a newline)."""
        return len(self._pending)

    def poll(self) -> bool:
        """Read newly appended complete lines; True when any series changed."""
        try:
            st = os.stat(self.path)
        except OSError:
            self._missing = True
            return False
        self._missing = False
        reset = self._ino is not None and (st.st_ino != self._ino or st.st_size < self._offset + len(self._pending))
        if reset:
            self._reset()  # replaced or truncated: start over
            self._rewritten = True
        self._ino = st.st_ino
        if st.st_size == self._offset + len(self._pending):
            return reset
        before = self._changes
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = b""
                while True:
                    chunk = f.read(_CHUNK)
                    if not chunk:
                        break
                    data += chunk
                    end = data.rfind(b"\n")
                    if end < 0:
                        if len(data) > _MAX_LINE:
                            self._damage()
                            self._offset += len(data)
                            data = b""
                        continue
                    for line in data[:end].split(b"\n"):
                        self._line(line)
                    self._offset += end + 1
                    data = data[end + 1:]
                self._pending = data
        except OSError:
            return False
        self._finish_tail()
        return reset or self._changes != before

    def _damage(self) -> None:
        self._damaged += 1
        if self._first_damaged is None:
            self._first_damaged = self._lineno

    def _parse(self, line: bytes) -> dict[str, Any] | None:
        try:
            ev = json.loads(line)
        except (ValueError, RecursionError):
            ev = None
        if not isinstance(ev, dict) or not isinstance(ev.get("event"), str):
            self._damage()
            return None
        v = ev.get("v", PROTOCOL_VERSION)
        if v != PROTOCOL_VERSION:
            self._versions.add(v if isinstance(v, (int, float, str)) else str(v))
        return ev

    def _line(self, line: bytes) -> None:
        self._lineno += 1
        if line[:16] == b'{"event":"step",' and line[-1:] == b"}" and line.find(b'{"event"', 1) < 0:
            # the common case, kept short: a step event as a trainer writes it, parsed only when it is kept
            if self._train.take():
                try:
                    ev = json.loads(line)
                except (ValueError, RecursionError):
                    ev = None
                if type(ev) is dict and ev.get("v") == PROTOCOL_VERSION:
                    self._step(ev, True)
                else:
                    ev = self._parse(line)  # damaged, or of another version: counted, noted
                    if ev is not None:
                        self._step(ev, True)
                self._train_tail = None
            else:
                self._train_tail = line
            return
        if not line or line.isspace():
            return
        inner = line.find(b'{"event"', 1)
        if inner > 0:  # a line torn by a killed writer, then the next event appended to it: keep the next event
            self._damage()
            line = line[inner:]
        kind = _event_kind(line)
        if kind is None or kind not in _LAZY_KINDS and kind != "step":
            ev = self._parse(line)
            if ev is not None:
                self._event(ev)
            return
        if not line.rstrip().endswith(b"}"):
            self._damage()
            return
        if kind == "step":  # written with spaces, or with a \r
            ev = self._parse(line)
            if ev is not None:
                self._event(ev)
            return
        self._raw[kind] = line
        self._last.pop(kind, None)

    def _finish_tail(self) -> None:
        line, self._train_tail = self._train_tail, None
        if line is not None:
            ev = self._parse(line)
            if ev is not None:
                self._step(ev, False)

    def _elapsed(self, time: Any) -> float:
        t = _num(time)
        if t != t:
            return _NAN
        if self._t0 is None:
            self._t0 = t
        self._t_last = self._t_base + max(0.0, t - self._t0)
        return self._t_last

    def _samples(self, step: float) -> float:
        if self._batch_size is None:
            self._batch_size = _num(_read_json(self.path.parent / "config.json")[0].get("batch_size"))
        return self._samples_base + (step - self._step0) * self._batch_size

    def _event(self, ev: dict[str, Any]) -> None:
        kind = ev["event"]
        self._raw.pop(kind, None)
        self._last[kind] = ev
        if kind == "step":
            self._step(ev, self._train.take())  # only a step line the fast path could not read comes here
        elif kind in ("epoch", "validation"):
            step = _num(ev.get("step"))
            if kind == "epoch":
                epoch = _num(ev.get("epoch"))
            else:
                spe = self._steps_per_epoch
                epoch = step / spe if spe else _NAN
            point = (epoch, step, self._samples(step), self._elapsed(ev.get("time")), _num(ev.get("val_loss")),
                     _num(ev.get("val_accuracy")))
            if self._val.last_step() == step:
                self._val.replace_last(point)
            else:
                self._val.add(point, self._val.take())
            self._changes += 1
        elif kind == "started":
            self._started(ev)

    def _step(self, ev: dict[str, Any], on_grid: bool) -> None:
        self._last["step"] = ev
        get = ev.get
        step = _num(get("step"))
        self._train.add((_num(get("epoch")), step, self._samples(step), self._elapsed(get("time")),
                         _num(get("loss")), _num(get("accuracy"))), on_grid)
        self._changes += 1

    def _started(self, ev: dict[str, Any]) -> None:
        self._finish_tail()
        step = _num(ev.get("step"))
        step = 0.0 if step != step else step
        bs = _num(ev.get("batch_size"))
        if bs != bs:
            bs = _num((ev.get("config") or {}).get("batch_size")) if isinstance(ev.get("config"), dict) else _NAN
        if self._t0 is not None:  # a resume: wall time and samples continue from where the last session was
            self._t_base = self._t_last
            if self._batch_size is not None:
                self._samples_base = self._samples(step)
        else:
            self._samples_base = step * bs if bs == bs else 0.0
        self._t0 = _num(ev.get("time"))
        self._t0 = None if self._t0 != self._t0 else self._t0
        self._step0 = step
        if bs == bs:
            self._batch_size = bs
        spe = _num(ev.get("steps_per_epoch"))
        self._steps_per_epoch = spe if spe == spe and spe > 0 else self._steps_per_epoch
        # a run killed past its last checkpoint logs those steps again after the resume: the later copy wins
        if self._train.truncate(step) + self._val.truncate(step):
            self._changes += 1

    # --- what was read --------------------------------------------------------------------------------------------

    def curve(self, series: str) -> Curve:
        """The curve of one of :data:`SERIES`."""
        if series in _TRAIN_SERIES:
            return self._train.curve(_TRAIN_SERIES.index(series))
        if series in _VAL_SERIES:
            return self._val.curve(_VAL_SERIES.index(series))
        raise ValueError(f"unknown series {series!r}; one of {', '.join(SERIES)}")

    def curves(self) -> dict[str, Curve]:
        """Every series of :data:`SERIES` by name."""
        return {s: self.curve(s) for s in SERIES}

    @property
    def stride(self) -> dict[str, int]:
        """How many events each grid point of a stream stands for (``train``: step events, ``val``: validations)."""
        return {"train": self._train.stride, "val": self._val.stride}

    @property
    def damaged(self) -> int:
        """Damaged lines skipped so far."""
        return self._damaged

    @property
    def notes(self) -> list[str]:
        """What could not be read, one short line each (damaged lines skipped, another protocol version ...)."""
        out = []
        if self._missing:
            out.append(f"{_METRICS} is missing")
        if self._rewritten:
            out.append(f"{_METRICS} was replaced or truncated: read again from the start")
        if self._damaged:
            s = "s" if self._damaged > 1 else ""
            out.append(f"{self._damaged} damaged line{s} skipped in {_METRICS} (first at line {self._first_damaged})")
        if self._versions:
            vs = ", ".join(str(v) for v in sorted(self._versions, key=str))
            out.append(f"{_METRICS} has events of protocol version {vs} (this tuinet reads version "
                       f"{PROTOCOL_VERSION}): read for the fields they share")
        return out

    @property
    def events(self) -> dict[str, dict[str, Any]]:
        """The newest event of each kind read so far (``started``, ``epoch``, ``finished`` ...)."""
        for kind, line in list(self._raw.items()):
            try:
                ev = json.loads(line)
            except (ValueError, RecursionError):
                ev = None
            del self._raw[kind]
            if isinstance(ev, dict):
                self._last[kind] = ev
        return dict(self._last)


# --- run records ----------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> tuple[dict[str, Any], str | None]:
    """A JSON object from a file and a note when it is missing or damaged (({}, note) then)."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return {}, f"{path.name} is missing"
    except OSError as e:
        return {}, f"{path.name} cannot be read ({e.strerror or e})"
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return {}, f"{path.name} is damaged (not JSON)"
    if not isinstance(data, dict):
        return {}, f"{path.name} is damaged (not a JSON object)"
    return data, None


@dataclass
class RunRecord:
    """What the runs table shows of one run, read from its folder (status.json, config.json, metrics.jsonl)."""

    name: str
    path: Path
    status: str
    dataset: str | None = None
    model: str | None = None
    params: int | None = None
    epochs_done: int | None = None
    epochs_planned: int | None = None
    best_val_loss: float | None = None
    best_val_accuracy: float | None = None
    test_accuracy: float | None = None
    train_seconds: float | None = None
    samples_per_second: float | None = None
    started: float | None = None  # Unix time
    config: dict[str, Any] = field(default_factory=dict)
    parent: dict[str, Any] | None = None  # a branched run's origin: {"run": name, "epoch": n, "step": n}
    notes: list[str] = field(default_factory=list)  # what could not be read
    pid: int | None = None  # the trainer's process while the run is live or paused

    @property
    def live(self) -> bool:
        """True while a trainer process holds the run (``live`` or ``paused``)."""
        return self.status in ("live", "paused")

    @property
    def metrics_path(self) -> Path:
        """The run's ``metrics.jsonl``."""
        return self.path / _METRICS

    def value(self, key: str) -> Any:
        """The value of a column (:data:`COLUMNS`) or a setting (a config.json key), for sorting and filtering."""
        if key == "epochs":
            return self.epochs_done
        if key == "parent":
            return self.parent.get("run") if isinstance(self.parent, dict) else self.parent
        if key in COLUMNS or key in EXTRA_KEYS:
            return getattr(self, key)
        return self.config.get(key)

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-ready values (path as text)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["path"] = str(self.path)
        return out


def _lock_holder(path: Path) -> tuple[int | None, float | None]:
    """The live pid recorded in the run's lock file (None when none or dead), and the file's modification time."""
    try:
        p = path / _LOCK_NAME
        st = p.stat()
        pid = int(p.read_text().strip())
    except (OSError, ValueError):
        return None, None
    return (pid if pid_alive(pid) else None), st.st_mtime


def _find_event(data: bytes, kind: str, end: int | None = None) -> tuple[dict[str, Any] | None, int]:
    """The last well-formed ``kind`` event in ``data`` before ``end`` (as a trainer writes it, or with spaces), and
    where its line starts (-1 when there is none)."""
    end = len(data) if end is None else end
    while end > 0:
        pos = max(data.rfind(b'"event":"' + kind.encode() + b'"', 0, end),
                  data.rfind(b'"event": "' + kind.encode() + b'"', 0, end))
        if pos < 0:
            return None, -1
        start = data.rfind(b"\n", 0, pos) + 1
        stop = data.find(b"\n", pos)
        try:
            ev = json.loads(data[start:stop if stop >= 0 else len(data)])
        except (ValueError, RecursionError):
            ev = None
        if isinstance(ev, dict) and ev.get("event") == kind:
            return ev, start
        end = start  # a damaged line: look further back
    return None, -1


def _scan_metrics(path: Path, everything: bool) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[str],
                                                         bool]:
    """The first ``started`` event, the newest events of the kinds a record needs, and the epoch events read.

    Reads the head of the file and its tail back to the last ``epoch`` event only, unless ``everything`` (a run
    without status.json: its best epoch has to be found among all of them). Returns (events by kind, epoch events
    read, notes, whether it ends with a half-written line).
    """
    notes: list[str] = []
    found: dict[str, dict[str, Any]] = {}
    epochs: list[dict[str, Any]] = []
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(16 << 10)
            started, _ = _find_event(head, "started")
            if started is None and size > len(head):  # a long model summary, or log notes before it
                head += f.read(_HEAD_BYTES - len(head))
                started, _ = _find_event(head, "started")
            torn = size > 0 and not head.endswith(b"\n") if size <= len(head) else None
            if everything:
                f.seek(0)
                lines = list(f)
            else:
                window, tail = 16 << 10, b""
                while True:  # the tail, back to the last epoch event (the final events come after it)
                    start = max(0, size - window)
                    f.seek(start)
                    tail = f.read(size - start)
                    if start == 0 or _find_event(tail, "epoch")[0] is not None or window >= _TAIL_BYTES:
                        break
                    window *= 4
                lines = []
            if torn is None:
                f.seek(size - 1)
                torn = f.read(1) != b"\n"
    except FileNotFoundError:
        return found, epochs, [f"{_METRICS} is missing"], False
    except OSError as e:
        return found, epochs, [f"{_METRICS} cannot be read ({e.strerror or e})"], False
    if started is not None:
        found["started"] = started
        v = started.get("v", PROTOCOL_VERSION)
        if v != PROTOCOL_VERSION:
            notes.append(f"{_METRICS} is of protocol version {v} (this tuinet reads version {PROTOCOL_VERSION}): "
                         f"read for the fields it shares")
    wanted = ("epoch", "finished", "stopped", "failed", "early_stopped")
    if not everything:
        for kind in wanted:
            ev, _ = _find_event(tail, kind)
            if ev is not None:
                found[kind] = ev
        return found, epochs, notes, torn
    for line in lines:
        kind = _event_kind(line)
        if kind not in wanted:
            continue
        try:
            ev = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(ev, dict):
            found[kind] = ev
            if kind == "epoch":
                epochs.append(ev)
    return found, epochs, notes, torn


def _opt_float(v: Any) -> float | None:
    v = _num(v)
    return None if v != v else v


def _opt_int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def load_run(path: str | Path) -> RunRecord:
    """One run folder as a record; a folder with missing or damaged files gives what can be read, with notes."""
    path = Path(path)
    status, status_note = _read_json(path / "status.json")
    config, config_note = _read_json(path / "config.json")
    notes = [n for n in (status_note, config_note) if n]
    events, epochs, metric_notes, torn = _scan_metrics(path / _METRICS, everything=not status)
    notes += metric_notes
    started_ev = events.get("started", {})
    if not config and isinstance(started_ev.get("config"), dict):
        config = started_ev["config"]
        notes.append("settings read from the started event in metrics.jsonl")
    final = max((events[k] for k in ("finished", "stopped", "failed") if k in events),
                key=lambda e: _num(e.get("time")) if _num(e.get("time")) == _num(e.get("time")) else 0.0,
                default=None)

    # status: what status.json says, checked against the trainer process
    raw = status.get("status") if isinstance(status.get("status"), str) else None
    holder, lock_mtime = _lock_holder(path)
    pid = status.get("pid") if pid_alive(status.get("pid")) else None
    if raw in LIVE_STATUSES:
        alive = holder or pid
        kind = ("paused" if raw == "paused" else "live") if alive else "crashed"
        if not alive:
            notes.append(f"status.json says {raw} but no trainer process holds the run: it crashed or was killed")
    elif holder and (lock_mtime or 0) > (_num(status.get("updated")) if status.get("updated") else 0):
        kind, alive = "live", holder  # a resume that is starting: the lock is newer than the last status
    elif raw in ("finished", "stopped", "failed"):
        kind, alive = raw, None
    elif final is not None:
        kind, alive = final["event"], None
    elif holder:
        kind, alive = "live", holder
    elif started_ev:
        kind, alive = "crashed", None
        notes.append("no trainer holds the run and metrics.jsonl has no final event: it crashed or was killed")
    else:
        kind, alive = "unknown", None
    if kind == "finished" and "early_stopped" in events:
        kind = "early_stopped"
    if torn and not alive:
        notes.append(f"{_METRICS} ends with a half-written line (the trainer was killed mid-write)")

    last_epoch = events.get("epoch", {})
    fin = events.get("finished", {})
    best = None
    if not status and epochs:
        finite = [e for e in epochs if _num(e.get("val_loss")) == _num(e.get("val_loss"))]
        best = min(finite, key=lambda e: e["val_loss"], default=None)
    parent = config.get("parent")
    started = _opt_float(status.get("started"))
    if started is None:
        started = _opt_float(started_ev.get("time"))
    if started is None:
        try:
            started = path.stat().st_mtime
        except OSError:
            started = None
    sps = _opt_float(fin.get("samples_per_second"))
    if sps is None:
        sps = _opt_float(last_epoch.get("samples_per_second"))
    return RunRecord(
        name=path.name, path=path, status=kind,
        dataset=_text(status.get("dataset")) or _text(config.get("dataset")),
        model=_text(status.get("model")) or _text(config.get("model")),
        params=_opt_int(started_ev.get("num_params")),
        epochs_done=_first_int(status.get("epoch"), fin.get("epochs"), last_epoch.get("epoch"),
                               final.get("epoch") if final else None),
        epochs_planned=_first_int(status.get("epochs"), config.get("epochs"), started_ev.get("epochs")),
        best_val_loss=_opt_float(status.get("best_val_loss")) if status else _opt_float((best or {}).get("val_loss")),
        best_val_accuracy=(_opt_float(status.get("best_val_accuracy")) if status
                           else _opt_float((best or {}).get("val_accuracy"))),
        test_accuracy=_first_float(status.get("test_accuracy"), fin.get("test_accuracy")),
        train_seconds=_first_float(status.get("train_seconds"), fin.get("train_seconds")),
        samples_per_second=sps, started=started, config=config,
        parent=parent if isinstance(parent, dict) else None, notes=notes, pid=alive or None)


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _first_int(*values: Any) -> int | None:
    return next((i for i in map(_opt_int, values) if i is not None), None)


def _first_float(*values: Any) -> float | None:
    return next((f for f in map(_opt_float, values) if f is not None), None)


def _is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("config.json", "status.json", _METRICS, _LOCK_NAME))


def load_runs(runs_dir: str | Path | None = None, names: Sequence[str] = (), *, filter: str | None = None,
              sort: str | None = None, limit: int | None = None) -> list[RunRecord]:
    """The runs of ``runs_dir`` (default: $TUINET_RUNS_DIR or ./runs) as records.

    ``names`` picks runs by name or path (an unknown one is a ConfigError naming it); with none, every run, newest
    first. ``filter`` and ``sort`` as :func:`parse_filter` and :func:`sort_runs` take them; ``limit`` keeps the
    first that many after sorting. A folder with missing or damaged files gives a record with what can be read and a
    note, never an exception.
    """
    runs = Path(runs_dir or default_runs_dir())
    keep = parse_filter(filter) if filter else None
    if sort:
        _check_key(sort.lstrip("+-"), "sort key")
    if names:
        folders, seen = [], set()
        for ref in names:
            as_path = Path(ref).expanduser()
            candidates = (as_path, runs / ref) if os.sep in ref or as_path.is_absolute() else (runs / ref, as_path)
            folder = next((c for c in candidates if _is_run_folder(c)), None)
            if folder is None:
                raise ConfigError(f"no run '{ref}' in {runs} (see `tuinet runs`)")
            key = os.path.realpath(folder)
            if key not in seen:
                seen.add(key)
                folders.append(folder)
        records = [load_run(f) for f in folders]
    else:
        try:
            entries = sorted(runs.iterdir()) if runs.is_dir() else []
        except OSError as e:
            raise ConfigError(f"{runs}: cannot list the runs folder ({e.strerror or e})") from None
        records = [load_run(d) for d in entries if not d.name.startswith(".") and _is_run_folder(d)]
        records.sort(key=lambda r: r.started or 0.0, reverse=True)
    if keep is not None:
        records = [r for r in records if keep(r)]
    if sort:
        records = sort_runs(records, sort)
    return records[:limit] if limit is not None else records


# --- filters, sorting, the settings diff -------------------------------------------------------------------------

_CONFIG_KEYS = tuple(f.name for f in fields(TrainConfig))
_OPS = ("<=", ">=", "!=", "==", "=", "<", ">", "~")
_TERM = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|!=|==|=|<|>|~)\s*(.*?)\s*$", re.S)
_NONE_WORDS = ("none", "null", "-", "")


def filter_keys() -> tuple[str, ...]:
    """Every key a filter or a sort may name: the columns, the settings, the other config.json keys, and
    ``epochs_done``, ``epochs_planned``, ``started``, ``parent``."""
    out = dict.fromkeys((*COLUMNS, *SETTINGS, *EXTRA_KEYS, *_CONFIG_KEYS))
    return tuple(out)


def _check_key(key: str, what: str) -> None:
    if key in filter_keys():
        return
    close = difflib.get_close_matches(key, filter_keys(), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"unknown {what} {key!r}{hint}; use a column ({', '.join(COLUMNS)}) or a setting such as lr, "
                      f"dropout, optimizer")


def _split_terms(expr: str) -> list[str]:
    """Terms separated by commas or the word ``and``, outside quotes."""
    terms, cur, quote, i = [], [], None, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c == ",":
            terms.append("".join(cur))
            cur = []
            i += 1
            continue
        elif expr[i:i + 5].lower() == " and " and not quote:
            terms.append("".join(cur))
            cur = []
            i += 5
            continue
        cur.append(c)
        i += 1
    if quote:
        raise ConfigError(f"filter {expr!r}: a quote ({quote}) is not closed")
    terms.append("".join(cur))
    return terms


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _as_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(_as_text(x) for x in v)
    return str(v).lower()


def _term(key: str, op: str, want: str) -> Callable[[RunRecord], bool]:
    want_num = _as_number(want)
    want_text = want.lower()

    def test(r: RunRecord) -> bool:
        v = r.value(key)
        if v is None:
            missing = want_text in _NONE_WORDS
            return missing if op in ("=", "==") else (not missing if op == "!=" else False)
        if op == "~":
            return want_text in _as_text(v)
        have = _as_number(v)
        if have is not None and want_num is not None:
            a, b = have, want_num
        else:
            a, b = _as_text(v), want_text
            if (have is None) != (want_num is None) and op not in ("=", "==", "!="):
                return False  # a number against text has no order
        return {"=": a == b, "==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]

    return test


def parse_filter(expr: str) -> Callable[[RunRecord], bool]:
    """A predicate from a filter expression: comma- or ``and``-separated terms ``KEY OP VALUE`` where KEY is a column
    or a setting, OP one of ``= != < <= > >= ~`` (``~``: contains), e.g. ``dataset=mnist, lr<0.01, model~cnn,
    status=finished``. A malformed expression is a ConfigError with one line that says what is wrong."""
    if not isinstance(expr, str):
        raise ConfigError(f"a filter must be text, got {type(expr).__name__}")
    if not expr.strip():
        return lambda r: True
    tests = []
    for term in _split_terms(expr):
        if not term.strip():
            raise ConfigError(f"filter {expr!r}: an empty term (two separators in a row, or one at an end)")
        m = _TERM.match(term)
        if not m:
            raise ConfigError(f"filter term {term.strip()!r}: expected KEY OP VALUE with OP one of "
                              f"{' '.join(o for o in _OPS if o != '==')} (e.g. lr<0.01, model~cnn)")
        key, op, value = m.groups()
        _check_key(key, "filter key")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif not value:
            raise ConfigError(f"filter term {term.strip()!r}: no value after {op!r} (write {key}{op}none to match "
                              f"a missing value)")
        elif value[0] in "<>=!~":
            raise ConfigError(f"filter term {term.strip()!r}: {op + value[0]!r} is not an operator; use one of "
                              f"{' '.join(o for o in _OPS if o != '==')}")
        tests.append(_term(key, op, value))
    return lambda r: all(t(r) for t in tests)


def sort_runs(records: Iterable[RunRecord], key: str) -> list[RunRecord]:
    """Records sorted by a column or setting; ``-KEY`` sorts descending; missing values go last either way."""
    descending = key.startswith("-")
    key = key.lstrip("+-")
    _check_key(key, "sort key")
    present, missing = [], []
    for r in records:
        (missing if r.value(key) is None else present).append(r)

    def order(r: RunRecord) -> tuple[int, Any]:
        v = r.value(key)
        n = _as_number(v) if not isinstance(v, str) else None
        return (0, n) if n is not None else (1, _as_text(v))

    present.sort(key=order, reverse=descending)
    return present + missing


def _norm(v: Any) -> Any:
    """A value in a form where equal settings compare equal (1 and 1.0, a list and a tuple)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return tuple(_norm(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((str(k), _norm(x)) for k, x in v.items()))
    return repr(v)


def settings_diff(records: Sequence[RunRecord]) -> list[tuple[str, list[Any]]]:
    """The settings (:data:`SETTINGS` first, then any other config key) whose values differ between ``records``:
    ``[(key, [value of each record, None where missing]), ...]``. Empty for fewer than two records."""
    if len(records) < 2:
        return []
    keys = dict.fromkeys(SETTINGS)
    for r in records:
        keys.update(dict.fromkeys(k for k in r.config if k not in NOT_SETTINGS))
    out = []
    for k in keys:
        values = [r.config.get(k) for r in records]
        if len({_norm(v) for v in values}) > 1:
            out.append((k, values))
    return out
