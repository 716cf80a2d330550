"""The Sweep screen's trials table: one row per trial (its number, its glyph when its curve is in the chart, its state
as a symbol and a word, each parameter, the objective, epochs run against the budget, where it runs), sorted like
the Compare screen's runs table (the sorted column marked ▲ / ▼ in its heading)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import DataTable

from tuinet.app.compare_state import short_name
from tuinet.app.sweep_state import STATE_LOOK, SweepState, fmt_param, fmt_value, objective_name, trial_name

if TYPE_CHECKING:
    from tuinet.sweep.state import TrialRow

#: columns a narrow table leaves out (80 columns)
COMPACT_HIDE = {"where"}
#: right-aligned columns
NUMERIC = {"number", "value", "epochs"}


def heading(key: str, state: SweepState) -> str:
    """A column's heading (parameters by their name)."""
    if key.startswith("param:"):
        return key.removeprefix("param:")
    return {"number": "#", "chart": "", "state": "state", "value": objective_name(state.objective),
            "epochs": "epochs", "where": "where"}[key]


def trial_cell(trial: TrialRow, key: str, state: SweepState, compact: bool = False) -> Text:
    """The text of one cell of the table."""
    if key == "number":
        return Text(str(trial.number), justify="right")
    if key == "chart":
        st = state.curves.style(trial_name(trial.number))
        return Text(st.glyph, style=f"bold color({st.color})") if st else Text("·", style="dim")
    if key == "state":
        sym, style = STATE_LOOK.get(trial.state, ("?", ""))
        return Text(f"{sym} {trial.state}", style=style)
    if key == "value":
        best = state.snapshot is not None and state.snapshot.best is not None \
            and state.snapshot.best.number == trial.number
        t = Text(fmt_value(trial.value, state.objective), justify="right")
        if best:
            t.append(" ★", style="bold")
        return t
    if key == "epochs":
        text = f"{trial.epochs}/{trial.budget}"
        if getattr(trial, "promoted", False) or trial.epochs > trial.budget:
            text += "+"  # promoted: it may run past its budget
        return Text(text, justify="right")
    if key == "where":
        return Text(short_name(trial.where or "-", 16))
    v = trial.params.get(key.removeprefix("param:"))
    return Text(short_name("-" if v is None else fmt_param(v), 12 if compact else 18))


class TrialsTable(DataTable):
    """The trials, one row each, keyed by trial number.

    Enter is left to the Sweep view (``open_trial``), so a mouse click only highlights a row.
    """

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.compact = False
        self._order: list[int] = []
        self._columns: list[str] = []
        self._drawn: dict[int, tuple] = {}  # trial number -> what its row was drawn from

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "select_cursor":
            return False  # enter goes on to the view's open_trial
        return super().check_action(action, parameters)

    @property
    def order(self) -> list[int]:
        """The trial numbers of the rows, top to bottom."""
        return list(self._order)

    @staticmethod
    def _row_key(trial: TrialRow, state: SweepState) -> tuple:
        """What a row's cells depend on: the trial, its chart glyph, whether it is the best."""
        best = state.snapshot.best if state.snapshot is not None else None
        return trial, state.curves.style(trial_name(trial.number)), best is not None and best.number == trial.number

    @property
    def highlighted(self) -> int | None:
        """The number of the highlighted trial (None with no rows)."""
        if not self.row_count:
            return None
        row = min(max(self.cursor_row, 0), self.row_count - 1)
        return int(self.coordinate_to_cell_key((row, 0)).row_key.value)

    def keys(self, state: SweepState) -> list[str]:
        """The table's columns (fewer when compact; ``where`` only once a trial runs elsewhere than here)."""
        remote = any(t.where not in ("local", "", None) for t in state.trials)
        return [k for k in state.columns() if not (self.compact and k in COMPACT_HIDE)
                and not (k == "where" and not remote)]

    def _label(self, key: str, state: SweepState) -> Text:
        label = heading(key, state)
        if state.sort_key == key:
            label += " ▼" if state.descending else " ▲"
        return Text(label, justify="right" if key in NUMERIC else "left", style="bold")

    def show(self, state: SweepState) -> None:
        """Rebuild the table from the state (columns, rows, order), keeping the highlighted trial highlighted."""
        keep = self.highlighted
        self.clear(columns=True)
        self._columns = self.keys(state)
        for k in self._columns:
            self.add_column(self._label(k, state), key=k)
        rows = state.rows()
        self._order = [t.number for t in rows]
        self._drawn = {}
        for t in rows:
            self.add_row(*(trial_cell(t, k, state, self.compact) for k in self._columns), key=str(t.number))
            self._drawn[t.number] = self._row_key(t, state)
        if keep in self._order:
            self.move_cursor(row=self._order.index(keep), animate=False)

    def update_cells(self, state: SweepState) -> None:
        """Rewrite the rows whose trial changed (same rows, same order: a trial ran an epoch or changed state, or its
        curve went in or out of the chart)."""
        for number in self._order:
            trial = state.trial(number)
            if trial is None:
                continue
            key = self._row_key(trial, state)
            if key == self._drawn.get(number):
                continue
            self._drawn[number] = key
            for k in self._columns:
                new = trial_cell(trial, k, state, self.compact)
                if self.get_cell(str(number), k) != new:
                    self.update_cell(str(number), k, new)
