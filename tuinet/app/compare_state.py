"""What the Compare screen shows, without Textual: the runs, which are in the chart and how each is drawn, the x
axis, smoothing, log scale, which curves, sorting, the filter, and the curve readers that keep live runs current.

The records and curves come from :mod:`tuinet.training.compare`; this module only decides what is shown. Reading is
bounded: a :class:`~tuinet.training.curves.CurveReader` exists only for runs in the chart and live runs, and each
keeps a fixed number of points.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from tuinet.training.compare import COLUMNS, RunRecord, load_runs, parse_filter, settings_diff, sort_runs
from tuinet.training.curves import X_AXES, CurveReader

#: the most runs drawn at once (more curves than this are unreadable, and each has its own glyph)
MAX_CHARTED = 8
#: each charted run's glyph: filled on its validation curve, hollow on its train curve
GLYPHS = (("●", "○"), ("▲", "△"), ("■", "□"), ("◆", "◇"), ("▼", "▽"), ("★", "☆"), ("▶", "▷"), ("◀", "◁"))
#: each charted run's colour (256-colour indices; the glyphs tell runs apart where colours collapse)
COLORS = (45, 214, 120, 204, 141, 227, 203, 39)
#: which curves the charts show, in the order a key cycles them
SPLITS = ("val", "train", "both")
SPLIT_NAMES = {"val": "validation", "train": "train", "both": "train and validation"}
#: x axes as the screen names them
X_NAMES = {"epoch": "epoch", "step": "step", "samples": "samples seen", "time": "wall time (s)"}
#: columns sorted high-to-low when first chosen (bigger is better, or newest first)
DESCENDING_FIRST = {"best_val_accuracy", "test_accuracy", "samples_per_second", "params", "epochs"}
#: exponential smoothing weight of the newest point when smoothing is on
SMOOTH_ALPHA = 0.3
#: every this many polls a live run's record is read again in full (a trainer that died shows as crashed)
RELOAD_EVERY = 10


def short_name(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters, cut in the middle (run names differ at their ends: the time)."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head):]


@dataclass(frozen=True)
class RunStyle:
    """How one charted run is drawn."""

    index: int
    glyph: str  # validation curve marker
    hollow: str  # train curve marker
    color: int


def run_style(index: int) -> RunStyle:
    """The style of the ``index``-th chart slot."""
    filled, hollow = GLYPHS[index % len(GLYPHS)]
    return RunStyle(index, filled, hollow, COLORS[index % len(COLORS)])


class CompareState:
    """The Compare screen's state.

    Args:
        records: the runs, in the order they were given (the table shows them so until a sort is chosen).
        this_run: the name of the run trained in this app (its row is marked), if any.
        charted: names of the runs to draw at first (default: the first few records).
        max_points: points kept per curve.
    """

    def __init__(self, records: Sequence[RunRecord], *, this_run: str | None = None,
                 charted: Iterable[str] | None = None, max_points: int = 400):
        self.records: list[RunRecord] = list(records)
        self.this_run = this_run
        self.max_points = max_points
        self.x_axis = X_AXES[0]
        self.smooth = False
        self.log_y = False
        self.split = SPLITS[0]
        self.sort_key: str | None = None
        self.descending = False
        self.filter_text = ""
        self._keep = None
        self.slots: dict[str, int] = {}  # charted run -> its style slot
        self.readers: dict[str, CurveReader] = {}
        self.version = 0  # bumps whenever the charts or the diff would draw differently
        self.rows_version = 0  # bumps whenever the table's rows or their order changed
        self.changed_rows: set[str] = set()  # rows whose cells changed since the table last took them
        self._polls = 0
        if charted is None:
            charted = [r.name for r in self.records[:min(4, MAX_CHARTED)]]
        for name in charted:
            if len(self.slots) < MAX_CHARTED and self.record(name) is not None:
                self.slots[name] = self._free_slot()

    # --- the runs --------------------------------------------------------------------------------------------------

    def record(self, name: str) -> RunRecord | None:
        """The record of run ``name`` (None when unknown)."""
        return next((r for r in self.records if r.name == name), None)

    def visible(self) -> list[RunRecord]:
        """The table's rows: the records the filter keeps, in the chosen order."""
        rows = [r for r in self.records if self._keep is None or self._keep(r)]
        if self.sort_key:
            rows = sort_runs(rows, ("-" if self.descending else "") + self.sort_key)
        return rows

    def charted(self) -> list[RunRecord]:
        """The runs drawn, in the order of their slots (runs the filter hides are not drawn)."""
        shown = {r.name for r in self.visible()}
        names = sorted((n for n in self.slots if n in shown), key=self.slots.__getitem__)
        return [r for r in (self.record(n) for n in names) if r is not None]

    def style(self, name: str) -> RunStyle | None:
        """How run ``name`` is drawn (None when it is not in the chart)."""
        slot = self.slots.get(name)
        return None if slot is None else run_style(slot)

    def _free_slot(self) -> int:
        used = set(self.slots.values())
        return next(i for i in range(MAX_CHARTED + 1) if i not in used)

    def add(self, record: RunRecord) -> None:
        """A run that appeared while the screen is open (a branch started from it): a row, and in the chart if a
        slot is free."""
        self.records.insert(0, record)
        self.rows_version += 1
        if len(self.slots) < MAX_CHARTED:
            self.toggle(record.name)

    def toggle(self, name: str) -> str | None:
        """Put run ``name`` in the chart or take it out; returns why not when it cannot go in."""
        if name in self.slots:
            del self.slots[name]
        elif len(self.slots) >= MAX_CHARTED:
            return f"at most {MAX_CHARTED} runs in the chart: take one out first (space on its row)"
        elif self.record(name) is None:
            return f"no run {name}"
        else:
            self.slots[name] = self._free_slot()
            self.reader(name)
        self.changed_rows.add(name)
        self.version += 1
        return None

    def toggle_all(self) -> str | None:
        """Every shown run out of the chart when all that fit are in; otherwise as many shown runs in as fit."""
        shown = [r.name for r in self.visible()]
        fit = shown[:MAX_CHARTED]
        if fit and all(n in self.slots for n in fit):
            for n in shown:
                self.slots.pop(n, None)
            note = None
        else:
            for n in list(self.slots):
                if n not in shown[:MAX_CHARTED]:
                    del self.slots[n]
            for n in fit:
                if n not in self.slots:
                    self.slots[n] = self._free_slot()
                    self.reader(n)
            note = f"the first {MAX_CHARTED} shown runs are in the chart" if len(shown) > MAX_CHARTED else None
        self.changed_rows.update(shown)
        self.version += 1
        return note

    # --- what the charts show --------------------------------------------------------------------------------------

    def cycle_x(self) -> str:
        """The next x axis (epoch → step → samples → wall time); returns it."""
        self.x_axis = X_AXES[(X_AXES.index(self.x_axis) + 1) % len(X_AXES)]
        self.version += 1
        return self.x_axis

    def toggle_smooth(self) -> bool:
        """Smoothing on / off; returns the new setting."""
        self.smooth = not self.smooth
        self.version += 1
        return self.smooth

    def toggle_log(self) -> bool:
        """Loss on a log / linear scale; returns True for log."""
        self.log_y = not self.log_y
        self.version += 1
        return self.log_y

    def cycle_split(self) -> str:
        """The next choice of curves (validation → train → both); returns it."""
        self.split = SPLITS[(SPLITS.index(self.split) + 1) % len(SPLITS)]
        self.version += 1
        return self.split

    def curve_points(self, name: str, series: str) -> tuple[list[float], list[float]]:
        """(x, y) of one series of a run against the current x axis, smoothed when smoothing is on."""
        x, y = self.reader(name).curve(series).points(self.x_axis)
        if self.smooth and y:
            out, acc, w = [], 0.0, 0.0
            for v in y:
                acc = (1 - SMOOTH_ALPHA) * acc + SMOOTH_ALPHA * v
                w = (1 - SMOOTH_ALPHA) * w + SMOOTH_ALPHA
                out.append(acc / w)
            y = out
        return x, y

    def diff(self) -> list[tuple[str, list[Any]]]:
        """The settings that differ between the charted runs (their order)."""
        return settings_diff(self.charted())

    # --- sorting and filtering -------------------------------------------------------------------------------------

    def sort_by(self, key: str) -> None:
        """Sort by a column; the same column again reverses the order."""
        if key not in COLUMNS:
            return
        if key == self.sort_key:
            self.descending = not self.descending
        else:
            self.sort_key = key
            self.descending = key in DESCENDING_FIRST
        self.rows_version += 1

    def next_sort(self) -> str:
        """Sort by the next column of the table (after the last: back to the given order); returns its key or ''."""
        keys = list(COLUMNS)
        if self.sort_key is None:
            self.sort_key = keys[0]
        elif self.sort_key == keys[-1]:
            self.sort_key = None
        else:
            self.sort_key = keys[keys.index(self.sort_key) + 1]
        self.descending = self.sort_key in DESCENDING_FIRST
        self.rows_version += 1
        return self.sort_key or ""

    def reverse(self) -> None:
        """Reverse the order (the given order reversed when no column is chosen)."""
        if self.sort_key is None:
            self.records.reverse()
        else:
            self.descending = not self.descending
        self.rows_version += 1

    def set_filter(self, text: str) -> None:
        """Keep the runs ``text`` matches (:func:`~tuinet.training.compare.parse_filter`; empty keeps all).
        A malformed expression raises ConfigError and leaves the filter as it was."""
        keep = parse_filter(text) if text.strip() else None
        self.filter_text = text.strip()
        self._keep = keep
        self.rows_version += 1
        self.version += 1

    # --- reading ---------------------------------------------------------------------------------------------------

    def reader(self, name: str) -> CurveReader:
        """The curve reader of run ``name``, made (and read up to now) on first use."""
        r = self.readers.get(name)
        if r is None:
            rec = self.record(name)
            r = self.readers[name] = CurveReader(rec.path / "metrics.jsonl", max_points=self.max_points)
            r.poll()
        return r

    def poll(self) -> bool:
        """Read what the charted and live runs appended; refresh live records. True when anything shown changed."""
        self._polls += 1
        changed = False
        charted = set(self.slots)
        for rec in self.records:
            if rec.name not in charted and not _is_live(rec):
                continue
            if self.reader(rec.name).poll() and rec.name in charted:
                self.version += 1
                changed = True
            if _is_live(rec) and self._refresh_live(rec):
                self.changed_rows.add(rec.name)
                changed = True
        # readers of runs that left the chart and are no longer live are dropped (memory stays bounded)
        for name in [n for n in self.readers if n not in charted]:
            rec = self.record(name)
            if rec is None or not _is_live(rec):
                del self.readers[name]
        return changed

    def _refresh_live(self, rec: RunRecord) -> bool:
        """Update a live run's record from status.json and its newest events; read it again in full when it ended
        (or every :data:`RELOAD_EVERY` polls, which notices a trainer that died). True when a cell changed."""
        before = _cells(rec)
        reader = self.readers.get(rec.name)
        events = reader.events if reader is not None else {}
        ended = any(k in events for k in ("finished", "stopped", "failed"))
        try:
            status = json.loads((rec.path / "status.json").read_text())
        except (OSError, ValueError):
            status = {}
        if not isinstance(status, dict):
            status = {}
        if ended or status.get("status") in ("finished", "stopped", "failed") or self._polls % RELOAD_EVERY == 0:
            try:
                fresh = load_runs(rec.path.parent, [str(rec.path)])[0]
            except Exception:  # noqa: BLE001 - a run folder that vanished: keep what we had
                fresh = None
            if fresh is not None:
                for f in ("status", "epochs_done", "epochs_planned", "best_val_loss", "best_val_accuracy",
                          "test_accuracy", "train_seconds", "samples_per_second", "params", "notes"):
                    setattr(rec, f, getattr(fresh, f))
                if hasattr(fresh, "pid"):
                    rec.pid = fresh.pid
        else:
            if status.get("status") == "paused":
                rec.status = "paused"
            elif status.get("status") in ("running", "testing", "compiling", "loading"):
                rec.status = "live"
            for f, k in (("epochs_done", "epoch"), ("epochs_planned", "epochs")):
                if isinstance(status.get(k), (int, float)):
                    setattr(rec, f, int(status[k]))
            for f in ("best_val_loss", "best_val_accuracy", "test_accuracy", "train_seconds"):
                if isinstance(status.get(f), (int, float)):
                    setattr(rec, f, float(status[f]))
            epoch = events.get("epoch") or {}
            if isinstance(epoch.get("samples_per_second"), (int, float)):
                rec.samples_per_second = float(epoch["samples_per_second"])
            if rec.params is None and isinstance((events.get("started") or {}).get("num_params"), int):
                rec.params = events["started"]["num_params"]
        if _cells(rec) != before:
            if rec.name in self.slots:
                self.version += 1
            return True
        return False


def _is_live(rec: RunRecord) -> bool:
    """True while a trainer holds the run (live or paused)."""
    return rec.status in ("live", "paused")


def _cells(rec: RunRecord) -> tuple:
    return tuple(rec.value(k) for k in COLUMNS) + (rec.epochs_planned,)
