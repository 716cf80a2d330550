"""The settings that differ between the runs in the chart, side by side: one row per setting, one column per run,
headed by the run's glyph (the same as in the chart and the table) and its name."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from tuinet.app.compare_state import CompareState, short_name
from tuinet.formatting import fmt_num


def fmt_setting(v: Any) -> str:
    """A setting's value as the diff writes it (``-`` for a missing or null one)."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return fmt_num(v)
    if isinstance(v, (list, tuple)):
        return ",".join(fmt_setting(x) for x in v)
    if isinstance(v, dict):
        return ",".join(f"{k}={fmt_setting(x)}" for k, x in v.items())
    return str(v)


def diff_renderable(state: CompareState, name_width: int = 18) -> Table | Text:
    """The diff as a Rich table (or a line saying why there is none)."""
    runs = state.charted()
    if len(runs) < 2:
        return Text("put two or more runs in the chart (space on a row) to see the settings that differ",
                    style="dim")
    rows = state.diff()
    if not rows:
        return Text("the runs in the chart have the same settings", style="dim")
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    head: list[Text] = [Text("setting", style="dim")]
    for rec in runs:
        st = state.style(rec.name)
        t.add_column(no_wrap=True, overflow="ellipsis", max_width=name_width + 2)
        name = short_name(rec.name, name_width)
        head.append(Text.assemble((st.glyph, f"bold color({st.color})"), " ", (name, f"color({st.color})")))
    t.add_row(*head)
    for key, values in rows:
        t.add_row(key, *[fmt_setting(v) for v in values])
    return t


class SettingsDiff(Static):
    """The settings diff panel; redrawn when the charted runs change. It can take the focus only while it stands in
    the runs table's place (80x24), so the Compare keys stay active then (the view sets ``can_focus``)."""

    def show(self, state: CompareState) -> None:
        """Draw the diff of the state's charted runs."""
        self.update(diff_renderable(state, 14 if self.size.width and self.size.width < 100 else 22))
