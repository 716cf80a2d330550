"""The short summary a run ends with: how it went, where it is, and what to type next.

Built from the run's final event (``finished``, ``stopped`` or ``failed``) alone, so the headless printer, the app's
event log and the terminal after the app has closed all show the same lines.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from tuinet.training.probe import DIGIT_DATASETS
from tuinet.formatting import count, fmt_duration, fmt_num, fmt_pct

WEIGHTS = {"best": "best validation epoch's weights", "last": "last weights"}


def _test_line(fig: dict[str, Any] | None, which: str, reported: bool) -> str | None:
    if not fig:
        return None
    acc = f"test accuracy {fmt_pct(fig['accuracy'])}, " if fig.get("accuracy") is not None else "test "
    tail = "  <- the run's result" if reported else ""
    return f"  {acc}loss {fmt_num(fig.get('loss'))} on the {WEIGHTS[which]} (epoch {fig.get('epoch')}){tail}"


def _divergence_line(final: dict[str, Any]) -> str | None:
    """How often the run diverged and what that did to its learning rate, when it did."""
    n = final.get("divergences") or 0
    if not n:
        return None
    times = "once" if n == 1 else "twice" if n == 2 else f"{n:,} times"
    before, now = final.get("lr_before_divergence"), final.get("lr")
    lr = f"; lr {fmt_num(before)} before, {fmt_num(now)} now" if before is not None and now is not None else ""
    return f"  diverged {times} (each time the last good weights came back){lr}"


def _runs_dir_option(run_dir: Path, runs_dir: str | None) -> str:
    """`` --runs-dir DIR`` when the run is not in the folder the commands look in by default."""
    from tuinet.training.config import default_runs_dir

    here = Path(runs_dir or default_runs_dir())
    try:
        same = os.path.samefile(run_dir.parent, here)
    except OSError:
        same = False
    return "" if same else f" --runs-dir {shlex.quote(str(run_dir.parent))}"




def next_commands(run_dir: str | Path, status: str, runs_dir: str | None = None,
                  dataset: str | None = None) -> list[tuple[str, str]]:
    """The commands worth typing after a run ends, with what each does: (command, description); after a run on
    MNIST (``dataset``), reading one's own digit too."""
    rd = Path(run_dir)
    name = shlex.quote(rd.name)
    opt = _runs_dir_option(rd, runs_dir)
    out = [(f"tuinet eval {name}{opt}", "test report of both checkpoints"),
           (f"tuinet plot {name}{opt}", "loss and accuracy curves"),
           (f"tuinet compare{opt}", "next to the recent runs")]
    if status == "finished":
        out.append((f"tuinet resume {name} --epochs N{opt}", "train on, to N epochs in all"))
    else:
        out.append((f"tuinet resume {name}{opt}", "continue exactly where it stopped"))
    if isinstance(dataset, str) and dataset.lower() in DIGIT_DATASETS:
        out.append((f"tuinet predict {name} DIGIT.png --fit digit{opt}", "your own digit, photographed or drawn"))
    return out


def summary_lines(final: dict[str, Any], runs_dir: str | None = None) -> list[str]:
    """The summary of a run from its final event: the test figures of its best and last weights, its best epoch,
    its time, its folder and the next commands."""
    kind = final.get("event")
    name = final.get("name") or (Path(final["run_dir"]).name if final.get("run_dir") else "run")
    secs = final.get("elapsed_seconds")
    took = f", {fmt_duration(secs)} in all" if secs is not None else ""
    if kind == "failed":
        lines = [f"{name} failed: {final.get('error')}"]
    elif kind == "stopped":
        lines = [f"{name} stopped ({final.get('reason')}) after {count(final.get('epoch'), 'epoch')}{took}"]
    else:
        lines = [f"{name} finished {count(final.get('epochs'), 'epoch')}{took} "
                 f"({fmt_duration(final.get('train_seconds'), tenths=True)} training)"]
    reported = final.get("final")
    for which in ("best", "last"):
        line = _test_line(final.get(f"test_{which}"), which, which == reported)
        if line:
            lines.append(line)
    line = _divergence_line(final)
    if line:
        lines.append(line)
    if final.get("best_epoch"):
        acc = final.get("best_val_accuracy")
        lines.append(f"  best epoch {final['best_epoch']} (the lowest validation loss)"
                     + (f"; highest validation accuracy {fmt_pct(acc)}" if acc is not None else ""))
    if final.get("run_dir"):
        lines.append(f"  run folder: {final['run_dir']}")
        if kind == "failed":
            lines.append(f"  details: {Path(final['run_dir']) / 'log.txt'}")
        else:
            cmds = next_commands(final["run_dir"], kind, runs_dir, final.get("dataset"))
            width = max(len(c) for c, _ in cmds)
            lines.append("  next:")
            lines += [f"    {c:<{width}}  {d}" for c, d in cmds]
    return lines
