"""One finished run on its own, opened from the Compare screen: its curves (train solid, validation dotted with
``•``), its best and test figures, its last validation confusion matrix and the accuracy of each class."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from tuinet.app.widgets.charts import ChartData, LineChart
from tuinet.app.widgets.dashboard import train_val_legend, train_val_lines
from tuinet.app.widgets.predictions import confusion_text
from tuinet.app.widgets.runs_table import STATUS_LOOK
from tuinet.formatting import fmt_duration, fmt_num
from tuinet.training.compare import RunRecord
from tuinet.training.curves import CurveReader


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:.2%}"


def figures_text(rec: RunRecord, reader: CurveReader) -> Text:
    """The summary's heading: status, what was trained, the best validation epoch, test accuracy, time, speed."""
    sym, style = STATUS_LOOK.get(rec.status, ("?", ""))
    cfg = rec.config or {}
    t = Text(no_wrap=False)
    t.append(f"{sym} {rec.status.replace('_', ' ')}", style=style)
    t.append(f"  {rec.name}", style="bold")
    t.append(f"   {rec.model or '?'} on {rec.dataset or '?'}")
    if rec.params:
        t.append(f"  {rec.params:,} params", style="dim")
    t.append(f"  {cfg.get('optimizer', '?')} lr {fmt_num(cfg.get('lr'))}  batch {cfg.get('batch_size', '?')}",
             style="dim")
    t.append("\n")
    vx, vy = reader.curve("val_loss").points("epoch")
    best_epoch = vx[int(np.argmin(vy))] if vy else None
    t.append("best val loss ", style="dim")
    t.append(fmt_num(rec.best_val_loss), style="bold")
    if best_epoch is not None:
        t.append(f" (epoch {best_epoch:g})", style="dim")
    t.append("   val acc there ", style="dim")
    t.append(_pct(rec.best_val_accuracy), style="bold")
    t.append("   test acc ", style="dim")
    t.append(_pct(rec.test_accuracy), style="bold")
    done = "-" if rec.epochs_done is None else str(rec.epochs_done)
    t.append(f"\nepochs {done}/{rec.epochs_planned or '?'}", style="dim")
    if rec.train_seconds is not None:
        t.append(f"   train time {fmt_duration(rec.train_seconds, tenths=True)}", style="dim")
    if rec.samples_per_second:
        t.append(f"   {rec.samples_per_second:,.0f} samples/s", style="dim")
    for note in [*rec.notes, *reader.notes]:
        t.append(f"\n! {note}", style="yellow")
    return t


def per_class_text(event: dict[str, Any] | None, width: int = 20) -> Text:
    """Each class's accuracy (the diagonal over the row) as a bar, worst first."""
    if not event or not event.get("matrix"):
        return Text("no confusion matrix in metrics.jsonl (a regression run, or no epoch finished)", style="dim")
    m = np.asarray(event["matrix"], dtype=np.float64)
    names = [str(n) for n in event.get("class_names") or range(len(m))]
    rows = m.sum(axis=1)
    acc = np.divide(np.diag(m), rows, out=np.zeros(len(m)), where=rows > 0)
    t = Text(no_wrap=True)
    t.append("per-class accuracy (worst first)\n", style="dim")
    lw = min(12, max(len(n) for n in names))
    for i in np.argsort(acc, kind="stable"):
        cells = acc[i] * width
        full = int(cells)
        part = " ▏▎▍▌▋▊▉"[int((cells - full) * 8)] if full < width else ""
        t.append(f"{names[i][:lw]:>{lw}} ")
        t.append("█" * full + part, style="green" if acc[i] >= 0.9 else "yellow")
        t.append(" " * (width - full - len(part)))
        t.append(f" {acc[i]:6.1%}\n")
    return t


def summary_chart(reader: CurveReader, metric: str) -> ChartData:
    """One metric's train and validation curves against the epoch, styled as on the dashboard."""
    tx, ty = reader.curve(f"train_{metric}").points("epoch")
    vx, vy = reader.curve(f"val_{metric}").points("epoch")
    return ChartData(train_val_lines(tx, ty, vx, vy),
                     empty="no accuracy (regression run)" if metric == "accuracy" else "no curve in metrics.jsonl")


class RunSummaryScreen(Screen):
    """A finished run's summary; escape (or q) goes back to the Compare screen.

    Args:
        record: the run.
        reader: its curve reader (the Compare screen's, already read).
    """

    BINDINGS = [Binding("escape,q", "close", "Back")]

    def __init__(self, record: RunRecord, reader: CurveReader):
        super().__init__()
        self.record = record
        self.reader = reader

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble((" run summary ", "bold reverse"), f"  {self.record.name}"), id="topbar")
        with VerticalScroll(id="sum-body"):
            yield Static(id="sum-figures")
            with Horizontal(id="sum-charts"):
                yield LineChart(id="sum-loss")
                yield LineChart(id="sum-acc")
            with Horizontal(id="sum-classes"):
                yield Static(id="sum-confusion")
                yield Static(id="sum-perclass")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.reader.poll()
        events = self.reader.events
        confusion = events.get("confusion")
        self.query_one("#sum-figures", Static).update(figures_text(self.record, self.reader))
        loss, acc = self.query_one("#sum-loss", LineChart), self.query_one("#sum-acc", LineChart)
        loss.border_title = train_val_legend("loss")
        acc.border_title = train_val_legend("accuracy")
        loss.set_data(summary_chart(self.reader, "loss"))
        acc.set_data(summary_chart(self.reader, "accuracy"))
        conf = self.query_one("#sum-confusion", Static)
        conf.border_title = "confusion (validation, last epoch)"
        conf.update(confusion_text(confusion) if confusion else
                    Text("no confusion matrix in metrics.jsonl", style="dim"))
        per = self.query_one("#sum-perclass", Static)
        per.border_title = "per class"
        per.update(per_class_text(confusion))

    def action_close(self) -> None:
        self.app.pop_screen()
