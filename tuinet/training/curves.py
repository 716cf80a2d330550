"""Curves of a run read from its ``metrics.jsonl``, incrementally and downsampled.

A :class:`CurveReader` remembers its byte offset and keeps at most ``max_points`` points per series (when a series
fills up, every other point is dropped and the stride doubles, so the whole run keeps an even resolution); a
half-written last line (a live run, or one killed mid-write) is left for the next poll, a damaged line is skipped
and counted, and an event of another protocol version is read for the fields it shares, with one note.
"""

from __future__ import annotations

import json
import os
import re
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuinet.protocol import MAX_SETTING_CHANGES, PROTOCOL_VERSION, is_setting_change

#: the x axes a curve can be drawn against, in the order a key cycles them
X_AXES = ("epoch", "step", "samples", "time")
#: the series a run has: (event kind, field) for each
SERIES = {
    "train_loss": ("step", "loss"),
    "train_accuracy": ("step", "accuracy"),
    "val_loss": ("epoch", "val_loss"),
    "val_accuracy": ("epoch", "val_accuracy"),
}
METRICS_FILE = "metrics.jsonl"
_CHUNK = 1 << 20  # bytes read at a time
_MAX_LINE = 16 << 20  # a "line" longer than this without a newline is damage, not an event
#: events the reader keeps as raw lines (parsed only when :attr:`CurveReader.events` is asked): bulky or frequent,
#: and no curve needs them
_LAZY_KINDS = frozenset({"layer_stats", "confusion", "checkpoint_saved", "log", "compiling", "compiled",
                         "weights", "samples", "boundary", "evaluated"})
_NAN = float("nan")


def num(v: Any) -> float:
    """A finite float from a JSON value, NaN for anything else (null, a string, a bool)."""
    t = type(v)
    if t is float:
        return v if v - v == 0.0 else _NAN  # inf - inf and nan - nan are nan
    if t is int:
        return float(v) if -1e308 < v < 1e308 else _NAN
    return _NAN


def event_kind(line: bytes) -> str | None:
    """The ``event`` field of one JSON line without parsing it (None when the line does not start with it)."""
    if line.startswith(b'{"event":"'):
        end = line.find(b'"', 10)
        return line[10:end].decode("ascii", "replace") if 10 < end < 60 else None
    m = _KIND_RE.match(line)
    return m.group(1).decode("ascii") if m else None


_KIND_RE = re.compile(rb'\s*\{\s*"event"\s*:\s*"([A-Za-z_]{1,40})"')


def read_json_object(path: Path) -> tuple[dict[str, Any], str | None]:
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
        self._setting_changes: list[tuple[float, float, float, float]] = []  # (epoch, step, samples, time) of each
        # x axes: the plan (from the started event, or config.json), wall time and samples across resumes
        self._batch_size: float | None = None
        self._steps_per_epoch: float | None = None
        self._t_base = 0.0  # seconds of earlier sessions of the run
        self._t0: float | None = None  # Unix time the current session started
        self._t_last = 0.0  # elapsed seconds at the newest event read
        self._samples_base = 0.0
        self._step0 = 0.0
        self._epoch0 = 0.0  # the epoch at step _step0 (its steps per epoch hold from there: a batch size changes them)

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
        kind = event_kind(line)
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
        t = num(time)
        if t != t:
            return _NAN
        if self._t0 is None:
            self._t0 = t
        self._t_last = self._t_base + max(0.0, t - self._t0)
        return self._t_last

    def _samples(self, step: float) -> float:
        if self._batch_size is None:
            self._batch_size = num(read_json_object(self.path.parent / "config.json")[0].get("batch_size"))
        return self._samples_base + (step - self._step0) * self._batch_size

    def _event(self, ev: dict[str, Any]) -> None:
        kind = ev["event"]
        self._raw.pop(kind, None)
        self._last[kind] = ev
        if kind == "step":
            self._step(ev, self._train.take())  # only a step line the fast path could not read comes here
        elif kind in ("epoch", "validation"):
            step = num(ev.get("step"))
            epoch = num(ev.get("epoch")) if kind == "epoch" else self._epoch_of(step)
            point = (epoch, step, self._samples(step), self._elapsed(ev.get("time")), num(ev.get("val_loss")),
                     num(ev.get("val_accuracy")))
            if self._val.last_step() == step:
                self._val.replace_last(point)
            else:
                self._val.add(point, self._val.take())
            self._changes += 1
        elif kind == "started":
            self._started(ev)
        if kind == "batch_size_changed" and is_setting_change(ev):
            self._new_batch_size(ev)
        if is_setting_change(ev):
            step = num(ev.get("step"))
            if step == step and (not self._setting_changes or self._setting_changes[-1][1] != step):
                point = (self._epoch_of(step), step, self._samples(step), self._elapsed(ev.get("time")))
                self._setting_changes = (self._setting_changes + [point])[-MAX_SETTING_CHANGES:]
                self._changes += 1

    def _epoch_of(self, step: float) -> float:
        spe = self._steps_per_epoch
        return self._epoch0 + (step - self._step0) / spe if spe else _NAN

    def _new_batch_size(self, ev: dict[str, Any]) -> None:
        """Batches of another size from the event's step (the start of its epoch): the samples and epochs of the
        steps after it count in the new size."""
        step, bs, spe = num(ev.get("step")), num(ev.get("batch_size")), num(ev.get("steps_per_epoch"))
        if step != step or bs != bs or not bs > 0:
            return
        self._samples_base = self._samples(step)
        epoch = num(ev.get("epoch"))
        self._epoch0 = epoch if epoch == epoch else self._epoch_of(step)
        self._step0, self._batch_size = step, bs
        if spe == spe and spe > 0:
            self._steps_per_epoch = spe

    def _step(self, ev: dict[str, Any], on_grid: bool) -> None:
        self._last["step"] = ev
        get = ev.get
        step = num(get("step"))
        self._train.add((num(get("epoch")), step, self._samples(step), self._elapsed(get("time")),
                         num(get("loss")), num(get("accuracy"))), on_grid)
        self._changes += 1

    def _started(self, ev: dict[str, Any]) -> None:
        self._finish_tail()
        step = num(ev.get("step"))
        step = 0.0 if step != step else step
        bs = num(ev.get("batch_size"))
        if bs != bs:
            bs = num((ev.get("config") or {}).get("batch_size")) if isinstance(ev.get("config"), dict) else _NAN
        if self._t0 is not None:  # a resume: wall time and samples continue from where the last session was
            self._t_base = self._t_last
            if self._batch_size is not None:
                self._samples_base = self._samples(step)
        else:
            self._samples_base = step * bs if bs == bs else 0.0
        self._t0 = num(ev.get("time"))
        self._t0 = None if self._t0 != self._t0 else self._t0
        self._step0 = step
        if bs == bs:
            self._batch_size = bs
        spe = num(ev.get("steps_per_epoch"))
        self._steps_per_epoch = spe = spe if spe == spe and spe > 0 else self._steps_per_epoch
        epoch, into = num(ev.get("epoch")), num(ev.get("step_in_epoch"))
        if epoch == epoch and into == into and spe:
            self._epoch0 = epoch + into / spe
        else:  # (a run from before the field: its batch size never changed)
            self._epoch0 = step / spe if spe else 0.0
        # a run killed past its last checkpoint logs those steps again after the resume: the later copy wins
        kept = [c for c in self._setting_changes if c[1] <= step]
        if self._train.truncate(step) + self._val.truncate(step) + len(self._setting_changes) - len(kept):
            self._changes += 1
        self._setting_changes = kept

    # --- what was read --------------------------------------------------------------------------------------------

    def curve(self, series: str) -> Curve:
        """The curve of one of :data:`SERIES`."""
        if series in _TRAIN_SERIES:
            return self._train.curve(_TRAIN_SERIES.index(series))
        if series in _VAL_SERIES:
            return self._val.curve(_VAL_SERIES.index(series))
        raise ValueError(f"unknown series {series!r}; one of {', '.join(SERIES)}")

    def setting_changes(self, x_axis: str) -> list[float]:
        """Where a setting changed while the run trained (an lr not set by the schedule, the optimizer,
        regularization), against ``x_axis`` (one of :data:`X_AXES`)."""
        if x_axis not in X_AXES:
            raise ValueError(f"unknown x axis {x_axis!r}; one of {', '.join(X_AXES)}")
        j = X_AXES.index(x_axis)
        return [c[j] for c in self._setting_changes if c[j] == c[j]]

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
            out.append(f"{METRICS_FILE} is missing")
        if self._rewritten:
            out.append(f"{METRICS_FILE} was replaced or truncated: read again from the start")
        if self._damaged:
            s = "s" if self._damaged > 1 else ""
            out.append(f"{self._damaged} damaged line{s} skipped in {METRICS_FILE} (first at line {self._first_damaged})")
        if self._versions:
            vs = ", ".join(str(v) for v in sorted(self._versions, key=str))
            out.append(f"{METRICS_FILE} has events of protocol version {vs} (this tuinet reads version "
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


