"""A sweep's events as text lines (a terminal or a log file) or JSON lines (``--json``)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tuinet.protocol import to_json


def _v(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)


def _params(p: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items())


class JsonLines:
    """Print every sweep event as one JSON object per line, flushed."""

    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stdout

    def __call__(self, event: dict[str, Any]) -> None:
        self.out.write(to_json(event) + "\n")
        self.out.flush()


class LinePrinter:
    """One readable line per trial start, end and (with ``epochs``) epoch; a summary at the end.

    Args:
        out: the stream.
        tty: unused for now (lines either way); kept so a terminal can get a live table later.
        epochs: print each trial's epochs too (off in a log, where starts and ends say enough).
    """

    def __init__(self, out: TextIO | None = None, tty: bool | None = None, epochs: bool = True):
        self.out = out or sys.stdout
        self.epochs = epochs

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def __call__(self, e: dict[str, Any]) -> None:
        kind = e.get("event")
        t = e.get("trial")
        if kind == "sweep_started":
            extra = f", resuming {e['resumed']} interrupted trial(s)" if e.get("resumed") else ""
            self._line(f"sweep {e['sweep']}: {e['trials']} trials, {e['workers']} at once ({e['backend']}), "
                       f"{e['objective']} ({e['direction']}){extra}; {e.get('done', 0)} already ended")
        elif kind == "trial_started":
            how = f" ({e['resumed']})" if e.get("resumed") else ""
            self._line(f"trial {t:3d} started{how}: {e['run']} on {e['where']}  {_params(e['params'])}")
        elif kind == "trial_epoch" and self.epochs:
            self._line(f"trial {t:3d} epoch {e['epoch']}/{e['budget']}  {_v(e['value'])}  (best {_v(e['best'])})")
        elif kind == "trial_pruned":
            why = "pruned" if e.get("reason") in (None, "pruned") else f"stopped ({e['reason']}), counted as pruned"
            self._line(f"trial {t:3d} {why} after epoch {e['epoch']}/{e['budget']} (best {_v(e.get('value'))}; "
                       f"{e['saved']} epochs saved)")
        elif kind == "trial_complete":
            self._line(f"trial {t:3d} complete: {_v(e['value'])} after {e['epochs']} epochs")
        elif kind == "trial_failed":
            self._line(f"trial {t:3d} failed: {e['error']}")
        elif kind in ("trial_promoted", "trial_stopping", "trial_lost"):
            self._line(f"trial {t:3d}: {e.get('message', kind)}")
        elif kind == "sweep_stopped":
            self._line(f"sweep {e['sweep']} stopped ({e['signal']}): running trials saved their checkpoints; "
                       f"{e['resume']}")
        elif kind == "sweep_finished":
            self._summary(e)

    def _summary(self, e: dict[str, Any]) -> None:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(e["counts"].items()))
        self._line(f"sweep {e['sweep']} finished in {e['seconds']:.0f} s: {counts}")
        full = e.get("epochs_full") or 0
        if full:
            pct = 100.0 * e["epochs_saved"] / full
            self._line(f"  pruning saved {e['epochs_saved']} of {full} epochs ({pct:.0f}%); "
                       f"{e['epochs_run']} epochs run")
        b = e.get("best")
        if b:
            self._line(f"  best: trial {b['trial']} {_v(b['value'])}  {_params(b['params'])}  ({b['run']})")
        if e.get("importances"):
            self._line("  importance: " + ", ".join(f"{k} {v:.2f}" for k, v in e["importances"].items()))
