"""Headless output: a progress bar on a terminal, one plain line per epoch in a log file, or JSON lines."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tuinet.formatting import count
from tuinet.protocol import to_json
from tuinet.training.alerts import TerminalAlerts
from tuinet.training.summary import summary_lines


def _fmt(v: Any, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


class JsonPrinter:
    """Print every event as one JSON object per line, flushed."""

    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stdout
        self.alerts = TerminalAlerts(sys.stderr)  # the codes never go into the JSON stream

    def __call__(self, event: dict[str, Any]) -> None:
        self.out.write(to_json(event) + "\n")
        self.out.flush()
        self.alerts(event)


def regularization_change(e: dict[str, Any]) -> str:
    """What a ``regularization_changed`` event changed: ``"l2 0 -> 0.001, dropout 0.1 -> 0.3"`` (``"unchanged"``
    when it asked for the values the run had)."""
    previous = e.get("previous") or {}
    parts = [f"{key} {previous.get(key) or 0:g} -> {e[key]:g}" for key in ("l1", "l2", "weight_decay", "dropout")
             if e.get(key) is not None and e[key] != previous.get(key)]
    return ", ".join(parts) or "unchanged"


def batch_size_change(e: dict[str, Any]) -> str:
    """What a ``batch_size_changed`` event says, in one line: the size applied (``"batch size 64 -> 256 from epoch 2
    (8 steps per epoch)"``), one asked for the next epoch, or the run's own size kept."""
    size, previous, pending = e.get("batch_size"), e.get("previous"), e.get("pending")
    if size != previous:
        return (f"batch size {previous or 0:,} -> {size:,} from epoch {(e.get('epoch') or 0) + 1} "
                f"({count(e.get('steps_per_epoch') or 0, 'step')} per epoch)")
    if pending:
        scaled = ", the lr scaled with it," if e.get("scale_lr") else ""
        return (f"batch size {pending:,}{scaled} from epoch {(e.get('from_epoch') or 0) + 1} (epoch "
                f"{(e.get('epoch') or 0) + 1} keeps batches of {size:,})")
    return f"batch size stays {size:,}"


def epochs_change(e: dict[str, Any]) -> str:
    """What an ``epochs_changed`` event says: ``"epochs 2 -> 4 (from step 6, lr 0.003)"``."""
    return f"epochs {e.get('previous', 0):,} -> {e.get('epochs', 0):,} (from step {(e.get('step') or 0) + 1:,}, " \
           f"lr {e.get('lr') or 0:.3g})"


class ConsolePrinter:
    """Human-readable progress: a live bar when ``out`` is a terminal, plain lines otherwise.

    Args:
        out: the stream (stdout).
        tty: force bar (True) or plain lines (False); default: ``out.isatty()``.
    """

    def __init__(self, out: TextIO | None = None, tty: bool | None = None):
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.steps_per_epoch = 1
        self.epochs = 1
        self._bar_shown = False
        self._last_draw = 0.0
        self.alerts = TerminalAlerts(self.out)  # bell and desktop notification, only on a terminal

    def _line(self, text: str) -> None:
        if self._bar_shown:
            self.out.write("\r\x1b[2K")
            self._bar_shown = False
        self.out.write(text + "\n")
        self.out.flush()

    def __call__(self, e: dict[str, Any]) -> None:
        self._print(e)
        self.alerts(e)

    def _print(self, e: dict[str, Any]) -> None:
        kind = e["event"]
        if kind == "started":
            self.steps_per_epoch = e["steps_per_epoch"]
            self.epochs = e["epochs"]
            ds = e["dataset"]
            self._line(f"run {e.get('name') or '-'}  ({e.get('run_dir') or 'not saved'})")
            sz = ds.get("sizes", {})
            self._line(f"data {ds.get('name')}: {sz.get('train')} train / {sz.get('val')} val / "
                       f"{sz.get('test')} test, {ds.get('task')}, input {tuple(ds.get('input_shape', ()))}")
            self._line(e["model"])
            hp = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in e["hyperparams"].items())
            self._line(f"optimizer {e['optimizer']}({hp}), batch {e['batch_size']}, {e['epochs']} epochs"
                       + (f", resuming at epoch {e['epoch']} step {e['step']}" if e.get("resumed") else ""))
        elif kind == "compiling" and not e.get("kernel"):  # the per-kernel reports are for the app's live screen
            self._line("compiling kernels (the first run takes a while; later runs load them from the cache)...")
        elif kind == "compiled":
            helper = f" ({e['helper_kernels']} compiled by the compile helper)" if e.get("helper_kernels") else ""
            self._line(f"kernels ready in {e['seconds']:.1f} s{helper}")
        elif kind == "step" and self.tty:
            now = time.monotonic()
            if now - self._last_draw < 0.1:
                return
            self._last_draw = now
            frac = (e["epoch"] % 1.0) or 1.0
            width = 30
            fill = int(frac * width)
            acc = f" acc {e['accuracy']:.3f}" if e.get("accuracy") is not None else ""
            self.out.write(f"\r\x1b[2Kepoch {int(e['epoch'] - 1e-9) + 1}/{self.epochs} [{'#' * fill}{'.' * (width - fill)}]"
                           f" loss {e['loss']:.4f}{acc} lr {e['lr']:.3g} {e['samples_per_second'] or 0:,.0f} samples/s")
            self.out.flush()
            self._bar_shown = True
        elif kind == "epoch":
            acc = f" acc {_fmt(e.get('train_accuracy'))}" if e.get("train_accuracy") is not None else ""
            vacc = f" val_acc {_fmt(e.get('val_accuracy'))}" if e.get("val_accuracy") is not None else ""
            sps = e.get("samples_per_second")
            self._line(f"epoch {e['epoch']}/{self.epochs}: loss {_fmt(e['train_loss'])}{acc} "
                       f"val_loss {_fmt(e.get('val_loss'))}{vacc} lr {e['lr']:.3g} "
                       f"({e['seconds']:.1f} s, {sps or 0:,.0f} samples/s)")
        elif kind in ("lr_changed",) and e.get("source") != "schedule":
            self._line(f"lr {e['old_lr']:.3g} -> {e['lr']:.3g} ({e['source']})")
        elif kind == "optimizer_changed":
            self._line(f"optimizer -> {e['describe']} (fresh state)")
        elif kind == "regularization_changed":
            self._line(f"regularization: {regularization_change(e)} (from step {e.get('step', 0) + 1:,})")
        elif kind == "epochs_changed":
            self.epochs = e["epochs"]
            self._line(epochs_change(e))
        elif kind == "batch_size_changed":
            self.steps_per_epoch = e.get("steps_per_epoch") or self.steps_per_epoch
            if e.get("batch_size") != e.get("previous") or e.get("pending"):
                self._line(batch_size_change(e))
        elif kind == "diverged":
            self._line(f"diverged at step {e['step']} (loss {e.get('loss')}): {e['action']}, lr {e['lr']:.3g} -> "
                       f"{e['new_lr']:.3g}")
        elif kind == "early_stopped":
            self._line(f"early stop at epoch {e['epoch']}: best epoch {e['best_epoch']} "
                       f"(val_loss {e['best_val_loss']:.4f}), best weights restored")
        elif kind == "gradient_health":
            hint = f" ({e['hint']})" if e.get("hint") else ""
            self._line(f"{'gradient health' if e['status'] == 'ok' else 'warning'} at step {e['step']}: "
                       f"{e['message']}{hint}")
        elif kind == "log" and e.get("level") in ("warning", "error", "info"):
            self._line(e["message"])
        elif kind == "evaluated":
            self._line(f"test loss {_fmt(e.get('loss'))} accuracy {_fmt(e.get('accuracy'))}")
        elif kind == "stopped":
            self._line(f"stopped ({e['reason']}) at epoch {e['epoch']} step {e['step']}; checkpoint "
                       f"{e.get('checkpoint')}")
            self._summary(e)
        elif kind == "finished":
            self._line(f"finished {count(e['epochs'], 'epoch')} in {e['train_seconds']:.1f} s of training "
                       f"({e.get('samples_per_second') or 0:,.0f} samples/s)")
            self._summary(e)
        elif kind == "failed":
            self._line(f"training failed: {e['error']}")
            if e.get("run_dir"):
                self._line(f"details: {e['run_dir']}/log.txt")

    def _summary(self, final: dict[str, Any]) -> None:
        """The run's summary (training/summary.py) after a blank line."""
        self._line("")
        for line in summary_lines(final):
            self._line(line)
