"""The learning-rate finder screen (``f``): the range test's curve, loss against lr on a log axis, with the three
rules' suggestions marked and a cursor to choose any point; enter applies the chosen lr to the live run.

The screen only shows what the trainer's ``lr_find`` events carry (the test runs in the trainer, on copies of the
weights and optimizer state); :func:`chart_data` and :func:`legend` also draw the curve for ``tuinet lr-find``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from tuinet.app.widgets.charts import ChartData, Line, LineChart
from tuinet.formatting import fmt_num

#: rule -> (glyph, 256-colour index, name shown); colour never carries the meaning alone: each has its glyph
RULE_STYLE: dict[str, tuple[str, int, str]] = {
    "valley": ("●", 120, "valley"),
    "steepest": ("▼", 214, "steepest"),
    "minimum": ("◆", 204, "min/10"),
}
CURVE_COLOR, RAW_COLOR, CURSOR_COLOR = 45, 244, 231
#: points the cursor jumps with shift+arrows
BIG_MOVE = 10


@dataclass
class LrChoice:
    """What the finder screen was closed with: the lr to apply (None: leave it), and whether the trainer paused
    for the test (the app then resumes it)."""

    lr: float | None
    resume: bool


def nearest_index(lrs: list[float], lr: float) -> int:
    """The index of the curve point closest to ``lr`` on a log scale."""
    return min(range(len(lrs)), key=lambda i: abs(math.log(lrs[i]) - math.log(lr)))


def _y_range(smoothed: list[float]) -> tuple[float, float] | None:
    """From a little under the curve's lowest point to a little over its highest point before that lowest point
    (at least up to 1.5 times the lowest, where the curve goes that high): the explosion at the end runs off the top
    instead of flattening the part that matters."""
    vals = [v for v in smoothed if v is not None and math.isfinite(v)]
    if not vals:
        return None
    lo, top = min(vals), max(vals)
    low_at = smoothed.index(lo)
    hi = max(v for v in smoothed[:low_at + 1] if v is not None)
    hi = max(hi, min(top, lo * 1.5 if lo > 0 else lo + 1.0))
    if hi - lo <= 1e-9 * max(abs(lo), 1.0):  # a flat curve: a band around it
        hi = lo + max(abs(lo) * 0.1, 1e-6)
    pad = (hi - lo) * 0.08
    return lo - pad, hi + pad


def chart_data(result: dict[str, Any], cursor: int | None = None) -> ChartData:
    """The range test's curve (smoothed loss, the raw losses as dots) against lr on a log axis, with a glyph at each
    rule's suggestion and, when ``cursor`` is a curve index, a dotted vertical line there."""
    lrs = result.get("lrs") or []
    smoothed = [v if v is not None else math.nan for v in result.get("smoothed") or []]
    raw = [v if v is not None else math.nan for v in result.get("losses") or []]
    lines = [Line("loss", list(lrs), raw, color=RAW_COLOR, points_only=True),
             Line("smoothed loss", list(lrs), smoothed, color=CURVE_COLOR)]
    ylim = _y_range(result.get("smoothed") or [])
    for rule, (glyph, color, name) in RULE_STYLE.items():
        lr = (result.get("suggestions") or {}).get(rule)
        if lr is None or not lrs:
            continue
        i = nearest_index(lrs, lr)
        lines.append(Line(name, [lr], [smoothed[i]], color=color, points_only=True, marker=glyph))
    if cursor is not None and lrs and ylim is not None:
        x = lrs[cursor]
        lines.append(Line("cursor", [x, x], [ylim[0], ylim[1]], color=CURSOR_COLOR, dotted=True))
    return ChartData(lines=lines, key=(id(result), len(lrs), cursor), log_x=True, ylim=ylim,
                     empty="waiting for the range test…")


def legend(result: dict[str, Any]) -> Text:
    """The rules' suggestions with their glyphs, the suggested one first and said so."""
    t = Text()
    chosen = result.get("suggested_rule")
    rules = sorted(RULE_STYLE, key=lambda r: r != chosen)
    for rule in rules:
        glyph, color, name = RULE_STYLE[rule]
        lr = (result.get("suggestions") or {}).get(rule)
        if t:
            t.append("   ")
        t.append(glyph, style=f"color({color})")
        t.append(f" {name} {fmt_num(lr) if lr is not None else '-'}" + (" (suggested)" if rule == chosen else ""))
    return t


def stop_text(result: dict[str, Any]) -> str:
    """How the test ended, in a few words."""
    n, planned = len(result.get("lrs") or []), result.get("steps")
    why = {"exploded": "the loss exploded", "non-finite": "the loss became non-finite",
           "cancelled": "cancelled"}.get(result.get("stop_reason") or "", "every step ran")
    return f"{n}/{planned} steps ({why})"


class LrFindScreen(ModalScreen[LrChoice]):
    """The finder: waits for the trainer's ``lr_find`` events (:meth:`update`), then shows the curve with a cursor.

    Args:
        current_lr: the run's lr now (shown for reference).
    """

    DEFAULT_CSS = """
    LrFindScreen { align: center middle; background: $background 60%; }
    LrFindScreen > #lrf { width: 100%; max-width: 120; height: 100%; max-height: 36; border: thick $primary;
                          border-title-style: bold; background: $surface; padding: 0 1; }
    LrFindScreen #lrf-chart { height: 1fr; min-height: 6; }
    LrFindScreen #lrf-status, LrFindScreen #lrf-legend, LrFindScreen #lrf-cursor { height: auto; }
    LrFindScreen #lrf-hint { color: $text-muted; height: auto; }
    """

    BINDINGS = [
        Binding("left", "move(-1)", "←", show=False), Binding("right", "move(1)", "→", show=False),
        Binding("shift+left,pageup", f"move(-{BIG_MOVE})", show=False),
        Binding("shift+right,pagedown", f"move({BIG_MOVE})", show=False),
        Binding("home", "jump('first')", show=False), Binding("end", "jump('last')", show=False),
        Binding("v", "jump('valley')", show=False), Binding("s", "jump('steepest')", show=False),
        Binding("m", "jump('minimum')", show=False),
        Binding("enter", "apply", "Apply", show=False), Binding("escape", "cancel", "Cancel", show=False),
    ]

    def __init__(self, current_lr: float | None):
        super().__init__()
        self.current_lr = current_lr
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.progress: dict[str, Any] | None = None
        self.paused_for_test = False
        self.cursor: int | None = None
        self.chosen: float | None = None  # the lr enter applies (a rule's exact value after v/s/m)
        self._partial: dict[str, list] = {"lrs": [], "smoothed": [], "losses": []}

    def compose(self) -> ComposeResult:
        with Vertical(id="lrf") as v:
            v.border_title = "Learning-rate finder"
            yield Static(id="lrf-status")
            yield LineChart(id="lrf-chart")
            yield Static(id="lrf-legend")
            yield Static(id="lrf-cursor")
            yield Static("←/→ cursor (shift ×10)  v s m: a rule's lr  enter: apply it  escape: cancel",
                         id="lrf-hint")

    def on_mount(self) -> None:
        self._show()

    # --- events from the trainer ----------------------------------------------------------------------------------

    def update(self, event: dict[str, Any]) -> None:
        """Take one ``lr_find`` event (the app hands them over as they arrive)."""
        phase = event.get("phase")
        self.paused_for_test = bool(event.get("paused_for_test", self.paused_for_test))
        self.current_lr = event.get("current_lr") or self.current_lr  # the app may not have known it yet
        if phase == "started":  # a new test (the previous one's curve, if any, is replaced)
            self.progress = {"done": 0, "steps": event.get("steps")}
            self.result = self.error = self.cursor = self.chosen = None
            self._partial = {"lrs": [], "smoothed": [], "losses": []}
        elif phase == "progress":
            self.progress = event
            if event.get("lr") is not None and event.get("loss") is not None:
                for k, field in (("lrs", "lr"), ("smoothed", "loss"), ("losses", "loss")):
                    self._partial[k].append(event[field])
        elif phase == "done":
            self.result = event
            lrs = event.get("lrs") or []
            if lrs:
                best = event.get("suggested_lr")
                self.cursor = nearest_index(lrs, best) if best is not None else len(lrs) // 2
                self.chosen = best if best is not None else lrs[self.cursor]
        elif phase == "failed":
            self.error = event.get("error") or "failed"
        if self.is_mounted:
            self._show()

    # --- drawing -----------------------------------------------------------------------------------------------------

    def _show(self) -> None:
        status = self.query_one("#lrf-status", Static)
        chart = self.query_one("#lrf-chart", LineChart)
        legend_w = self.query_one("#lrf-legend", Static)
        cursor_w = self.query_one("#lrf-cursor", Static)
        now = f"current lr {fmt_num(self.current_lr)}" if self.current_lr else ""
        if self.error:
            status.update(Text(f"range test failed: {self.error}   (escape closes)", style="bold red"))
            return
        if self.result is None:
            p = self.progress
            if p is None:
                status.update("waiting for the trainer: the test runs before its next step (a run that is "
                              "starting loads its data and compiles first)…")
            else:
                last = f", lr {fmt_num(p['lr'])}, loss {p['loss']:.4g}" if p.get("loss") is not None else ""
                status.update(f"range test on a copy of the weights: step {p.get('done', 0)}/{p.get('steps')}"
                              f"{last}…   {now}")
            chart.set_data(chart_data({**self._partial}))
            return
        r = self.result
        status.update(f"{stop_text(r)} in {r.get('seconds', 0):.1f} s, on a copy: the run is untouched")
        chart.set_data(chart_data(r, self.cursor))
        legend_w.update(legend(r))
        if self.cursor is not None:
            loss = (r.get("smoothed") or [None])[self.cursor]
            t = Text()
            t.append("cursor ", style="bold")
            t.append(f"lr {fmt_num(self.chosen)}", style="bold")
            t.append(f"   loss {loss:.4g}" if loss is not None else "   loss not finite")
            t.append(f"   point {self.cursor + 1}/{len(r['lrs'])}", style="dim")
            if now:
                t.append(f"   ({now})", style="dim")
            cursor_w.update(t)
        else:
            cursor_w.update("the test took no step: nothing to choose")

    # --- keys --------------------------------------------------------------------------------------------------------

    def action_move(self, delta: int) -> None:
        """Move the cursor ``delta`` points along the curve."""
        if self.cursor is None or self.result is None:
            return
        self.cursor = max(0, min(len(self.result["lrs"]) - 1, self.cursor + delta))
        self.chosen = self.result["lrs"][self.cursor]
        self._show()

    def action_jump(self, where: str) -> None:
        """Put the cursor on the first or last point, or on a rule's suggestion (its exact lr is the choice)."""
        if self.cursor is None or self.result is None:
            return
        lrs = self.result["lrs"]
        if where == "first":
            self.cursor, self.chosen = 0, lrs[0]
        elif where == "last":
            self.cursor, self.chosen = len(lrs) - 1, lrs[-1]
        else:
            lr = (self.result.get("suggestions") or {}).get(where)
            if lr is None:
                self.notify(f"no {RULE_STYLE[where][2]} suggestion on this curve", severity="warning")
                return
            self.cursor, self.chosen = nearest_index(lrs, lr), lr
        self._show()

    def action_apply(self) -> None:
        """Close with the chosen lr (the app sends it to the run), or close after a failure."""
        if self.error:
            self.dismiss(LrChoice(None, self.paused_for_test))
        elif self.chosen is not None:
            self.dismiss(LrChoice(self.chosen, self.paused_for_test))

    def action_cancel(self) -> None:
        """Close, leaving the lr as it is."""
        self.dismiss(LrChoice(None, self.paused_for_test))
