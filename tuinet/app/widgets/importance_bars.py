"""Optuna's parameter importances as horizontal bars: the parameter, a bar of block characters (eighths for the
last cell) and the share written as a percentage, so the figures read without colour."""

from __future__ import annotations

from typing import Mapping

from rich.text import Text

#: partial blocks: eighths of a cell, from one eighth to a full cell
EIGHTHS = "▏▎▍▌▋▊▉█"


def bar(fraction: float, width: int) -> str:
    """A bar ``fraction`` (0..1) of ``width`` cells long, in eighths of a cell."""
    eighths = int(round(max(0.0, min(1.0, fraction)) * width * 8))
    full, rest = divmod(eighths, 8)
    return "█" * full + (EIGHTHS[rest - 1] if rest else "")


def importance_text(importances: Mapping[str, float], width: int) -> Text:
    """One line per parameter, most important first; a note when Optuna has not computed them yet."""
    t = Text(no_wrap=True, overflow="ellipsis")
    if not importances:
        t.append("none yet: Optuna needs a few finished trials", style="dim")
        return t
    total = sum(v for v in importances.values() if v > 0) or 1.0
    items = sorted(importances.items(), key=lambda kv: -kv[1])
    name_w = min(max(len(k) for k in importances), 14)
    bar_w = max(4, width - name_w - 7)
    for i, (name, v) in enumerate(items):
        share = max(v, 0.0) / total
        if i:
            t.append("\n")
        t.append(name[:name_w].ljust(name_w) + " ", style="bold")
        t.append(bar(share, bar_w).ljust(bar_w), style="cyan")
        t.append(f" {share:4.0%}")
    return t
