"""The Compare screen's runs table: one row per run (the columns of :data:`tuinet.training.compare.COLUMNS`), the
run's chart glyph in the first column, a status word with a symbol (never colour alone), the sorted column marked
▲ / ▼ in its heading."""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from tuinet.app.compare_state import CompareState, short_name
from tuinet.formatting import cut, fmt_duration, fmt_num
from tuinet.training.compare import COLUMNS, RunRecord

#: status -> (symbol, style): the word is always written too
STATUS_LOOK = {
    "live": ("●", "green"), "paused": ("❚❚", "yellow"), "finished": ("✓", "green"), "stopped": ("■", "cyan"),
    "pruned": ("✂", "yellow"),
    "early_stopped": ("✓", "green"), "failed": ("✗", "red"), "crashed": ("✗", "red"), "unknown": ("?", "dim"),
}
#: columns a narrow table leaves out (80 columns): the run, its status and its results stay
COMPACT_HIDE = {"dataset", "model", "params", "train_seconds", "samples_per_second"}
#: headings on two lines (the table's header is two rows high, so the columns stay narrow)
HEADINGS = {"best_val_loss": "best val\nloss", "best_val_accuracy": "best val\nacc", "test_accuracy": "test\nacc",
            "train_seconds": "train\ntime", "samples_per_second": "samples\n/s"}
#: right-aligned columns (numbers)
NUMERIC = {"params", "epochs", "best_val_loss", "best_val_accuracy", "test_accuracy", "train_seconds",
           "samples_per_second"}


def _pct(v: Any) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.1%}"


def cell(rec: RunRecord, key: str, compact: bool = False, this_run: str | None = None) -> Text | str:
    """The text of one cell of the table."""
    if key == "name":
        t = Text(short_name(rec.name, 20 if compact else 26))
        if rec.name == this_run:
            t.append(" ◂ this run", style="bold")
        if rec.notes:
            t.append(" !", style="bold yellow")
        return t
    if key == "status":
        sym, style = STATUS_LOOK.get(rec.status, ("?", ""))
        word = "early stop" if rec.status == "early_stopped" else rec.status
        return Text(f"{sym} {word}", style=style)
    if key == "dataset":
        return cut(rec.dataset or "-", 14)
    if key == "model":
        return cut(rec.model or "-", 18)
    if key == "params":
        return "-" if rec.params is None else f"{rec.params:,}"
    if key == "epochs":
        done = "-" if rec.epochs_done is None else str(rec.epochs_done)
        return done if rec.epochs_planned is None else f"{done}/{rec.epochs_planned}"
    if key == "best_val_loss":
        return fmt_num(rec.best_val_loss)
    if key in ("best_val_accuracy", "test_accuracy"):
        return _pct(rec.value(key))
    if key == "train_seconds":
        return "-" if rec.train_seconds is None else fmt_duration(rec.train_seconds, tenths=True)
    if key == "samples_per_second":
        v = rec.samples_per_second
        return "-" if v is None or not math.isfinite(v) else f"{v:,.0f}"
    v = rec.value(key)
    return "-" if v is None else str(v)


class RunsTable(DataTable):
    """The runs, one row each, keyed by run name.

    Enter is left to the Compare view (``open_run``), so a mouse click only highlights a row.
    """

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id, cursor_type="row", zebra_stripes=True, header_height=2)
        self.compact = False
        self._order: list[str] = []
        self._columns: list[str] = []

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "select_cursor":
            return False  # enter goes on to the view's open_run
        return super().check_action(action, parameters)

    @property
    def highlighted(self) -> str | None:
        """The name of the highlighted run (None with no rows)."""
        if not self.row_count:
            return None
        row = min(max(self.cursor_row, 0), self.row_count - 1)
        return str(self.coordinate_to_cell_key((row, 0)).row_key.value)

    def keys(self) -> list[str]:
        """The table's columns: the chart glyph, then the run's columns (fewer when compact)."""
        return ["chart", *(k for k in COLUMNS if not (self.compact and k in COMPACT_HIDE))]

    def _label(self, key: str, state: CompareState) -> Text:
        if key == "chart":
            return Text("")
        label = HEADINGS.get(key, COLUMNS[key][0])
        if state.sort_key == key:
            label += " ▼" if state.descending else " ▲"
        return Text(label, justify="right" if key in NUMERIC else "left", style="bold")

    def _cells(self, rec: RunRecord, state: CompareState) -> list[Text | str]:
        out: list[Text | str] = []
        for k in self._columns:
            if k == "chart":
                st = state.style(rec.name)
                out.append(Text(st.glyph, style=f"bold color({st.color})") if st else Text("·", style="dim"))
                continue
            c = cell(rec, k, self.compact, state.this_run)
            if k in NUMERIC:
                c = Text(c, justify="right") if isinstance(c, str) else c
            out.append(c)
        return out

    def show(self, state: CompareState) -> None:
        """Rebuild the table from the state (rows, order, headings), keeping the highlighted run highlighted."""
        keep = self.highlighted
        self.clear(columns=True)
        self._columns = self.keys()
        for k in self._columns:
            self.add_column(self._label(k, state), key=k)
        rows = state.visible()
        self._order = [r.name for r in rows]
        for rec in rows:
            self.add_row(*self._cells(rec, state), key=rec.name)
        state.changed_rows.clear()
        if keep in self._order:
            self.move_cursor(row=self._order.index(keep), animate=False)

    def update_rows(self, state: CompareState) -> None:
        """Rewrite the cells of the rows the state marked changed (a live run, a run put in or out of the chart)."""
        for name in list(state.changed_rows):
            rec = state.record(name)
            if rec is None or name not in self._order:
                continue
            for k, c in zip(self._columns, self._cells(rec, state)):
                self.update_cell(name, k, c)
        state.changed_rows.clear()
