"""The Sweep screen's best-trial panel: the best trial so far, its objective, its parameters, its epochs and where it
ran, and its run folder (what `tuinet attach` or `tuinet train --from` takes)."""

from __future__ import annotations

from rich.text import Text

from tuinet.app.sweep_state import STATE_LOOK, SweepState, fmt_param, fmt_value, objective_name


def best_text(state: SweepState, compact: bool = False) -> Text:
    """The panel's lines (a note while no trial has a value)."""
    t = Text(no_wrap=True, overflow="ellipsis")
    snap = state.snapshot
    best = snap.best if snap is not None else None
    if best is None:
        t.append("no trial has a value yet", style="dim")
        return t
    sym, style = STATE_LOOK.get(best.state, ("?", ""))
    t.append(f"★ trial #{best.number}", style="bold")
    t.append(f"  {sym} {best.state}", style=style)
    t.append("\n")
    t.append(f"{objective_name(state.objective)} ", style="dim")
    t.append(fmt_value(best.value, state.objective), style="bold")
    t.append(f" · {best.epochs}/{best.budget}" + ("" if compact else " epochs"), style="dim")
    for name, v in best.params.items():
        t.append("\n")
        t.append(f"{name} ", style="dim")
        t.append(fmt_param(v))
    if best.run_dir is not None and not compact:
        t.append("\n")
        t.append("run ", style="dim")
        t.append(best.run_dir.name if hasattr(best.run_dir, "name") else str(best.run_dir))
    if not compact:
        t.append("\n")
        t.append("on ", style="dim")
        t.append(best.where or "-")
    return t
