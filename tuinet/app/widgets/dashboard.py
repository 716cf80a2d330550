"""The dashboard tab: status and progress, loss and accuracy charts, and the event log."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from tuinet.app.widgets.charts import PALETTE, ChartData, Line, LineChart, line_key
from tuinet.app.widgets.eventlog import EventLog
from tuinet.app.state import RunState, fmt_hyper, smooth
from tuinet.formatting import fmt_duration, fmt_num

STATUS_STYLE = {
    "loading": ("◌", "yellow"), "compiling": ("◌", "yellow"), "running": ("●", "green"), "paused": ("❚❚", "yellow"),
    "diverged": ("✗", "bold red"), "finished": ("✓", "bold green"), "stopped": ("■", "cyan"),
    "failed": ("✗", "bold red"), "stopping": ("◌", "yellow"), "restarting": ("◌", "yellow"),
}
LEVEL_STYLE = {"info": "", "warning": "yellow", "error": "bold red"}


def bar(fraction: float, width: int) -> Text:
    """A one-line progress bar of ``width`` cells (eighth blocks for the partial cell)."""
    width = max(width, 1)
    cells = fraction * width
    full = int(cells)
    part = " ▏▎▍▌▋▊▉"[int((cells - full) * 8)] if full < width else ""
    t = Text("█" * full, style="green")
    t.append(part, style="green")
    t.append(" " * (width - full - len(part)), style="on grey23")
    return t


def regularization(config: dict[str, Any]) -> str:
    """What keeps the run from learning its training set by heart, as the config sets it: ``"dropout 0.1, l2
    0.001, augment shift=2,rotate=15"`` (empty when nothing does)."""
    parts = [f"{key} {fmt_num(config[key])}" for key in ("dropout", "l1", "l2") if config.get(key)]
    if config.get("augment"):
        parts.append(f"augment {config['augment']}")
    return ", ".join(parts)


def status_text(st: RunState, shown_status: str, pending: str | None, width: int) -> Text:
    """The status panel: state, optimizer and lr, metrics, progress bar, ETA."""
    sym, style = STATUS_STYLE.get(shown_status, ("?", ""))
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{sym} {shown_status}", style=style)
    if st.compiling and shown_status not in ("compiling",):
        t.append("  (compiling kernels)", style="yellow")
    if st.compiling:
        t.append(f"  {st.compile_progress()}", style="yellow")
    if pending:
        t.append(f"  → {pending}", style="italic yellow")
    elif st.error:
        t.append(f"  {st.error}", style="red")
    else:
        t.append(f"   {st.config.get('model', '?')} on {st.dataset.get('name', '?')}", style="bold")
        t.append(f"  {st.num_params:,} params", style="dim")
        kept = regularization(st.config or {})
        if kept:
            t.append(f"  {kept}", style="dim")
    t.append("\n")
    t.append("optimizer ", style="dim")
    t.append(st.optimizer, style="bold cyan")
    t.append("  lr ", style="dim")
    t.append(fmt_num(st.lr), style="bold cyan")
    schedule = (st.config or {}).get("schedule")
    if schedule and schedule != "constant" and st.base_lr:
        # the lr moves every step: say by what rule and from which base (what `+`, `-`, `L` and a restart change)
        t.append(f" ({schedule} from {fmt_num(st.base_lr)})", style="dim")
    t.append(f"  batch {st.batch_size}", style="")
    if st.batch_pending:  # asked for: the epoch in progress keeps its batches
        scaled = f", lr ×{st.batch_pending / st.batch_size:.3g}" if st.batch_scale_lr and st.batch_size else ""
        t.append(f" → {st.batch_pending} next epoch{scaled}", style="italic yellow")
    hyper = fmt_hyper(st.hyperparams)
    if hyper:
        t.append(f"  {hyper}", style="dim")
    t.append("\n")
    t.append_text(metrics_line(st, width))
    t.append("\n")
    right = (f" step {st.step:,}/{st.total_steps:,}  epoch {st.epoch:.2f}/{st.epochs}  {eta_text(st)}"
             f"{'-' if not st.samples_per_second else f'{st.samples_per_second:,.0f}'} samples/s")
    t.append_text(bar(st.progress, max(8, width - len(right) - 1)))
    t.append(right)
    return t


def _test_figures(st: RunState, compact: int) -> list[tuple[str, str, str]]:
    """The finished run's test figures as (label, figure, style) pieces, labelled at three lengths (``compact``
    0, 1, 2: "test@best (ep 4) 98.12%   test@last (ep 5) 97.90%", "test best (ep 4) 98.12%  last (ep 5) 97.90%",
    "test best 98.12% last 97.90%")."""
    best, last = (st.final.get("test_best"), st.final.get("test_last")) if st.final else (None, None)
    if best and last and best.get("epoch") == last.get("epoch") and best.get("accuracy") is not None:
        # the best validation epoch was the last: one set of weights, one figure
        label = (f"test@best=last (ep {best.get('epoch')}) ", f"test (ep {best.get('epoch')}) ", "test ")[compact]
        return [(label, f"{best['accuracy']:.2%}", "bold green")]
    out = []
    for which, fig in (("best", best), ("last", last)):  # both test figures, labelled; the run's in bold
        if fig and fig.get("accuracy") is not None:
            ep = fig.get("epoch")
            first = "test " if not out else ""  # the shorter labels name the test once: "test best ... last ..."
            label = (f"test@{which} (ep {ep}) ", f"{first}{which} (ep {ep}) ", f"{first}{which} ")[compact]
            out.append((label, f"{fig['accuracy']:.2%}", "bold green" if st.final.get("final") == which else ""))
    if not out and st.final and st.final.get("test_accuracy") is not None:
        out.append(("test ", f"{st.final['test_accuracy']:.2%}", "bold green"))
    return out


def metrics_line(st: RunState, width: int) -> Text:
    """Train and validation loss and accuracy, and the test figures once known, in ``width`` columns when it can:
    the labels get shorter on a narrow terminal (80 columns over SSH) so that the test accuracy, the run's result,
    is not the part cut off."""
    for compact in range(3):
        gap = "   " if compact == 0 else "  "
        t = Text()
        t.append("loss ", style="dim")
        t.append(fmt_num(st.loss), style=f"color({PALETTE[0]})")
        if st.is_classifier:
            t.append("  acc " if compact < 2 else " acc ", style="dim")
            t.append("-" if st.accuracy is None else f"{st.accuracy:.1%}", style=f"color({PALETTE[0]})")
        t.append(f"{gap}val loss ", style="dim")
        t.append(fmt_num(st.val_loss), style=f"color({PALETTE[1]})")
        if st.is_classifier:
            t.append("  val acc " if compact < 2 else " acc ", style="dim")
            t.append("-" if st.val_accuracy is None else f"{st.val_accuracy:.1%}", style=f"color({PALETTE[1]})")
        if st.evaluated:
            ev = st.evaluated
            t.append(f"{gap}test ", style="dim")
            t.append(f"{ev['accuracy']:.1%}" if ev.get("accuracy") is not None else fmt_num(ev.get("loss")))
        for i, (label, figure, style) in enumerate(_test_figures(st, compact)):
            t.append(gap if i == 0 or compact < 2 else " ")
            t.append(label, style="dim")
            t.append(figure, style=style)
        if t.cell_len <= width:
            break
    return t


def eta_text(st: RunState) -> str:
    """"ETA 3m20s  " while the run goes on; nothing once it is over (a stopped run has no end to wait for)."""
    return "" if st.done else f"ETA {fmt_duration(st.eta_seconds)}  "


def topbar_text(st: RunState, shown_status: str) -> Text:
    """The one-line bar above the tabs: status, step, epoch, optimizer and lr, ETA, run name."""
    sym, style = STATUS_STYLE.get(shown_status, ("◌", "yellow"))
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(" tuinet ", style="bold reverse")
    t.append(f" {sym} {shown_status} ", style=style)
    t.append(f" step {st.step:,}/{st.total_steps:,}  epoch {st.epoch:.2f}/{st.epochs}  ", style="")
    t.append(f"{st.optimizer} lr {fmt_num(st.lr)}", style="cyan")
    if not st.done:
        t.append(f"  {eta_text(st).rstrip()}", style="dim")
    if st.name:
        t.append(f"  {st.name}", style="dim")
    return t


def train_val_lines(tx, ty, vx, vy) -> list[Line]:
    """Train as a solid line, validation dotted with a ``•`` on its points (every few columns when dense): the two
    stay apart without colour."""
    return [Line("train", tx, ty, PALETTE[0]),
            Line("val", vx, vy, PALETTE[1], dotted=True, marker="•", marker_every=6, marker_offset=3)]


def train_val_legend(what: str) -> Text:
    """A chart title followed by how the train and validation lines look (``━━━ train ┅•┅ val``)."""
    t = Text(f"{what} ")
    for ln in train_val_lines([], [], [], []):
        t.append_text(line_key(ln))
        t.append(f" {ln.label} ", style=f"color({ln.color})")
    t.rstrip()
    return t


class StatusPanel(Static):
    """The status panel; its text is built at paint time so the progress bar always fits the width."""

    def show(self, st: RunState, shown_status: str, pending: str | None) -> None:
        """Repaint with this state (a repaint only: the panel has a fixed height)."""
        self._args = (st, shown_status, pending)
        self.refresh()

    def render(self) -> Text:
        args = getattr(self, "_args", None)
        if args is None:
            return Text("starting…", style="dim")
        return status_text(*args, max(20, self.content_size.width))


class Dashboard(Vertical):
    """Status, charts side by side, event log."""

    def compose(self) -> ComposeResult:
        yield StatusPanel(id="status")
        with Horizontal(id="charts"):
            yield LineChart(id="loss-chart")
            yield LineChart(id="acc-chart")
        yield EventLog(max_lines=400, id="event-log")

    def on_mount(self) -> None:
        self._log_written = 0
        self._status = self.query_one("#status", StatusPanel)
        self._loss = self.query_one("#loss-chart", LineChart)
        self._acc = self.query_one("#acc-chart", LineChart)
        self._log = self.query_one("#event-log", EventLog)
        self._loss.border_title = self._legend("loss")
        self._acc.border_title = self._legend("accuracy")
        self._log.border_title = "events"
        self._status.border_title = "status"

    @staticmethod
    def _legend(what: str, log: bool = False) -> Text:
        return train_val_legend(f"{what}{' (log)' if log else ''}")

    def update_status(self, st: RunState, shown_status: str, pending: str | None) -> None:
        """Redraw the status panel."""
        self._status.show(st, shown_status, pending)

    def update_charts(self, st: RunState) -> float:
        """Rebuild the charts whose data changed; returns the seconds spent."""
        t0 = time.perf_counter()
        loss_chart, acc_chart = self._loss, self._acc
        loss_chart.set_data(self._chart_data(st.train_loss, st.val_loss_s, st.changes))
        if st.is_classifier:
            acc_chart.set_data(self._chart_data(st.train_acc, st.val_acc_s, st.changes))
        else:
            acc_chart.display = False
        return time.perf_counter() - t0

    @staticmethod
    def _chart_data(train, val, changes: list[float]) -> ChartData:
        tx, ty = train.points()
        vx, vy = val.points()
        return ChartData(train_val_lines(tx, smooth(ty), vx, vy), marks=list(changes),
                         key=(id(train), train.version, id(val), val.version, tuple(changes)))

    def set_log_scale(self, on: bool) -> None:
        """Switch the loss chart between log and linear y."""
        chart = self._loss
        chart.log_y = on
        chart.border_title = self._legend("loss", on)

    def update_log(self, st: RunState) -> None:
        """Append the log lines not written yet."""
        log = self._log
        new = st.log_count - self._log_written
        if new <= 0:
            return
        entries = list(st.log)[-min(new, len(st.log)):]
        for t, level, text in entries:
            line = Text(time.strftime("%H:%M:%S ", time.localtime(t)), style="dim")
            line.append(text, style=LEVEL_STYLE.get(level, ""))
            log.write(line)
        self._log_written = st.log_count
