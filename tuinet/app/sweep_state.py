"""What the Sweep screen shows, without Textual: the newest snapshot of the sweep, the table's columns and order,
the summary line, and which trials are in the overlaid chart.

The sweep is read only through :func:`tuinet.sweep.state.read_sweep` (a :class:`~tuinet.sweep.state.SweepSnapshot`
of :class:`~tuinet.sweep.state.TrialRow`); the screen's worker thread reads it and hands each snapshot to
:meth:`SweepState.update`. The curves of the top trials are the Compare screen's: a
:class:`~tuinet.app.compare_state.CompareState` over the trials' run folders, its records named ``#N`` after their
trial, so the chart, its legend and the table's glyph column all say which trial a curve is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuinet.app.compare_state import MAX_CHARTED, CompareState
from tuinet.training.curves import Curve

if TYPE_CHECKING:
    from tuinet.sweep.state import SweepSnapshot, TrialRow

#: trial state -> (symbol, style); the word is always written too (colour is never the only carrier)
STATE_LOOK = {
    "running": ("◐", "green"), "waiting": ("…", "dim"), "complete": ("✓", "green"), "pruned": ("✂", "yellow"),
    "failed": ("✗", "red"),
}
#: the order the summary line counts states in
STATE_ORDER = ("complete", "pruned", "failed", "running", "waiting")
#: objectives as the screen names them
OBJECTIVE_NAMES = {"val_loss": "val loss", "val_accuracy": "val acc"}
#: the chart of each objective (a chart of :mod:`tuinet.app.widgets.overlay_chart`)
OBJECTIVE_CHARTS = {"val_loss": "loss", "val_accuracy": "accuracy"}
#: the most trials drawn in the overlaid chart (the best ones)
TOP_CHARTED = min(5, MAX_CHARTED)
#: the table's fixed columns (parameters go between ``state`` and ``value``, as ``param:NAME``)
FIXED_HEAD = ("number", "chart", "state")
FIXED_TAIL = ("value", "epochs", "where")


def trial_name(number: int) -> str:
    """How the chart and its legend name trial ``number``."""
    return f"#{number}"


def objective_name(objective: str) -> str:
    """The objective as the screen writes it ('val loss')."""
    return OBJECTIVE_NAMES.get(objective, objective.replace("_", " "))


def fmt_param(v: Any) -> str:
    """A parameter's value: floats with 3 significant digits, the rest as written."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.3g}" if math.isfinite(v) else str(v)
    return str(v)


def fmt_value(v: float | None, objective: str) -> str:
    """An objective's value: accuracy as a percentage, loss with 4 significant digits."""
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.2%}" if objective == "val_accuracy" else f"{v:.4g}"


def has_folder(trial: TrialRow) -> bool:
    """Whether trial ``trial``'s run folder is on this machine."""
    return trial.run_dir is not None and Path(trial.run_dir).is_dir()


class ObjectiveCurve:
    """Stands in for a :class:`~tuinet.training.curves.CurveReader` where a trial's run folder is not on this
    machine: its objective after each epoch, as the snapshot carries it (the only series it has)."""

    def __init__(self, objective: str, values: tuple[float, ...]):
        self.objective = objective
        self.values = values
        self.events: dict[str, Any] = {}

    def poll(self) -> bool:
        """Nothing to read: a new snapshot brings a new curve."""
        return False

    def curve(self, series: str) -> Curve:
        """The objective against the epoch (on every x axis); other series are empty."""
        if series != self.objective:
            return Curve()
        epochs = [float(i + 1) for i in range(len(self.values))]
        return Curve(epoch=epochs, step=list(epochs), samples=list(epochs), time=list(epochs), y=list(self.values))


def read_space(folder: Path) -> dict[str, dict[str, Any]]:
    """The searched space as the sweep folder's spec file records it: each parameter's ``kind`` (log_uniform,
    uniform, int, choice, grid), ``low``, ``high`` and ``values`` ({} while the file is missing or damaged)."""
    from tuinet.sweep.files import SPEC_NAME, read_json

    search = read_json(Path(folder) / SPEC_NAME).get("search")
    if not isinstance(search, dict):
        return {}
    return {str(k): v for k, v in search.items() if isinstance(v, dict)}


class SweepState:
    """The Sweep screen's state.

    Args:
        folder: the sweep's folder (said in the title and the messages).
        max_points: points kept per curve of the overlaid chart.
    """

    def __init__(self, folder: Path, *, max_points: int = 400):
        self.folder = Path(folder)
        self.snapshot: SweepSnapshot | None = None
        self.error: str | None = None  # why the last read failed (the newest good snapshot stays shown)
        self.sort_key: str | None = None  # a column of :meth:`columns`; None: trial number
        self.descending = False
        self.curves = CompareState([], charted=[], max_points=max_points)
        self.space: dict[str, dict[str, Any]] = {}  # the searched space (:func:`read_space`), once known
        self.version = 0  # bumps whenever a new snapshot or error arrived
        self.rows_version = 0  # bumps whenever the table's rows, columns or order changed
        self._row_keys: tuple = ()
        self._by_number: dict[int, TrialRow] = {}
        self._standins: set[str] = set()  # charted trials drawn from the snapshot's curve (no run folder here)

    # --- reading -----------------------------------------------------------------------------------------------------

    def update(self, snapshot: SweepSnapshot) -> bool:
        """Take a freshly read snapshot; True when anything shown changed."""
        if snapshot == self.snapshot and self.error is None:
            return False
        self.snapshot = snapshot
        self._by_number = {t.number: t for t in snapshot.trials}
        self.error = None
        self.version += 1
        keys = (tuple(t.number for t in snapshot.trials), tuple(self.params()))
        if keys != self._row_keys:
            self._row_keys = keys
            self.rows_version += 1
        self.sync_curves()
        return True

    def fail(self, message: str) -> bool:
        """The sweep could not be read; True when this is news."""
        if message == self.error:
            return False
        self.error = message
        self.version += 1
        return True

    # --- the trials --------------------------------------------------------------------------------------------------

    @property
    def trials(self) -> tuple[TrialRow, ...]:
        """Every trial of the newest snapshot (none before the first)."""
        return self.snapshot.trials if self.snapshot is not None else ()

    @property
    def objective(self) -> str:
        """What the sweep optimizes (``val_loss`` before the first snapshot)."""
        return self.snapshot.objective if self.snapshot is not None else "val_loss"

    @property
    def minimize(self) -> bool:
        """True when lower objective values are better."""
        return self.snapshot is None or self.snapshot.direction != "maximize"

    def trial(self, number: int) -> TrialRow | None:
        """Trial ``number`` (None when unknown)."""
        return self._by_number.get(number)

    def params(self) -> list[str]:
        """The searched parameters: the space's order, then any other a trial has, in the order they appear."""
        return list(dict.fromkeys([*self.space, *(k for t in self.trials for k in t.params)]))

    def counts(self) -> dict[str, int]:
        """How many trials are in each state."""
        out = dict.fromkeys(STATE_ORDER, 0)
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out

    def ranked(self) -> list[TrialRow]:
        """The trials with a value, best first."""
        scored = [t for t in self.trials if t.value is not None and math.isfinite(t.value)]
        return sorted(scored, key=lambda t: (t.value if self.minimize else -t.value, t.number))

    def top(self, k: int = TOP_CHARTED) -> list[TrialRow]:
        """The best ``k`` trials that have a curve to draw: a run folder here, or the per-epoch objective the
        snapshot carries (a trial on another host)."""
        out: list[TrialRow] = []
        for t in self.ranked():
            if len(out) == k:
                break
            if has_folder(t) or getattr(t, "curve", ()):
                out.append(t)
        return out

    # --- the table ---------------------------------------------------------------------------------------------------

    def columns(self) -> list[str]:
        """The table's columns: trial number, chart glyph, state, one per parameter, objective, epochs, where."""
        return [*FIXED_HEAD, *(f"param:{p}" for p in self.params()), *FIXED_TAIL]

    def sortable(self) -> list[str]:
        """The columns a sort can choose, in the order ``S`` cycles them."""
        return [c for c in self.columns() if c != "chart"]

    def sort_value(self, trial: TrialRow, key: str) -> tuple[int, Any]:
        """(missing last, value) of one trial in one column, for sorting; numbers before text."""
        if key == "number":
            v: Any = trial.number
        elif key == "state":
            v = STATE_ORDER.index(trial.state) if trial.state in STATE_ORDER else len(STATE_ORDER)
        elif key == "value":
            v = trial.value if trial.value is not None and math.isfinite(trial.value) else None
        elif key == "epochs":
            v = trial.epochs
        elif key == "where":
            v = trial.where
        else:
            v = trial.params.get(key.removeprefix("param:"))
        if v is None:
            return (2, 0)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return (0, v)
        return (1, str(v))

    def rows(self) -> list[TrialRow]:
        """The table's rows in the chosen order (trials without a value in the column last, either way)."""
        trials = list(self.trials)
        key = self.sort_key or "number"
        present = [t for t in trials if self.sort_value(t, key)[0] < 2]
        missing = [t for t in trials if self.sort_value(t, key)[0] == 2]
        present.sort(key=lambda t: (self.sort_value(t, key), t.number), reverse=self.descending)
        return present + missing

    def _best_first(self, key: str) -> bool:
        """Whether a column sorts high-to-low when first chosen (a maximized objective, epochs run)."""
        return key == "epochs" or (key == "value" and not self.minimize)

    def sort_by(self, key: str) -> None:
        """Sort by a column; the same column again reverses the order."""
        if key not in self.sortable():
            return
        if key == self.sort_key:
            self.descending = not self.descending
        else:
            self.sort_key = key
            self.descending = self._best_first(key)
        self.rows_version += 1

    def next_sort(self) -> str:
        """Sort by the next column (after the last: back to trial number); returns its key or ''."""
        keys = self.sortable()
        if self.sort_key is None:
            self.sort_key = keys[0]
        elif self.sort_key not in keys or self.sort_key == keys[-1]:
            self.sort_key = None
        else:
            self.sort_key = keys[keys.index(self.sort_key) + 1]
        self.descending = self.sort_key is not None and self._best_first(self.sort_key)
        self.rows_version += 1
        return self.sort_key or ""

    def reverse(self) -> None:
        """Reverse the order of the table."""
        if self.sort_key is None:
            self.sort_key = "number"
        self.descending = not self.descending
        self.rows_version += 1

    # --- the chart ---------------------------------------------------------------------------------------------------

    def sync_curves(self) -> None:
        """Put the top trials in the overlaid chart and take out the ones that left the top (their records stay, so
        a trial that comes back keeps its reader's position). A trial without a run folder here is drawn from the
        objective per epoch that the snapshot carries, through an :class:`ObjectiveCurve`."""
        from tuinet.training.compare import RunRecord, load_run

        curves = self.curves
        top = self.top()
        want = [trial_name(t.number) for t in top]
        for name in [n for n in curves.slots if n not in want]:
            curves.toggle(name)
        for t in top:
            name = trial_name(t.number)
            local = has_folder(t)
            if name in self._standins and local:  # its run folder arrived: read it from now on
                self._standins.discard(name)
                curves.records = [r for r in curves.records if r.name != name]
                curves.readers.pop(name, None)
            if curves.record(name) is None:
                if local:
                    rec = load_run(t.run_dir)
                    rec.name = name
                else:
                    rec = RunRecord(name=name, path=self.folder / name, status="finished")
                    self._standins.add(name)
                curves.records.append(rec)
            if name in self._standins:
                stand_in = curves.readers.get(name)
                if not isinstance(stand_in, ObjectiveCurve) or stand_in.values != tuple(t.curve):
                    curves.readers[name] = ObjectiveCurve(self.objective, tuple(t.curve))
                    curves.version += 1
            if name not in curves.slots:
                curves.toggle(name)

    # --- the summary -------------------------------------------------------------------------------------------------

    def summary(self, compact: bool = False) -> str:
        """'9 trials: 4 complete, 2 pruned, … · 62 epochs run · pruning saved 17 (22%)'; compact: the states as their
        symbols ('4✓ 2✂ 1✗ 1● 1…')."""
        snap = self.snapshot
        if snap is None:
            return ""
        counts = self.counts()
        n = len(snap.trials)
        planned = getattr(snap, "planned", 0)
        text = f"{n} of {planned} trials" if planned > n else f"{n} trial{'s' if n != 1 else ''}"
        if compact:
            parts = [f"{counts[s]}{STATE_LOOK[s][0]}" for s in STATE_ORDER if counts.get(s)]
            text += (" " + " ".join(parts) if parts else "") + f" · {snap.epochs_run} epochs"
        else:
            parts = [f"{counts[s]} {s}" for s in STATE_ORDER if counts.get(s)]
            text += (": " + ", ".join(parts) if parts else "") + f" · {snap.epochs_run} epochs run"
        if snap.epochs_saved:
            whole = snap.epochs_run + snap.epochs_saved
            text += f" · pruning saved {snap.epochs_saved} ({snap.epochs_saved / whole:.0%})"
        return text
