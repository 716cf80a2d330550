"""``tuinet compare``: runs side by side, as the app's Compare screen or as text (a table, the settings that differ,
overlaid curves) or JSON.

The reading is :mod:`tuinet.training.compare`; this module picks the runs, says which on stderr, and prints.
Colour is never the only carrier: each run has its own marker glyph in the table and on every chart.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import click

from tuinet.cli.common import CONTEXT, friendly_errors, plot_size_as_asked, runs_dir_option
from tuinet.errors import ConfigError
from tuinet.formatting import cut, fmt_duration, fmt_num, fmt_pct, table

#: runs compared when none is named
DEFAULT_LIMIT = 8
#: the narrowest a run's cell in a narrowed settings diff gets (a longer value is cut)
MIN_DIFF_CELL = 6
#: one glyph per run, in order; they stay apart without colour
MARKERS = "•x+o*#%@=&" + "abcdefghijklmnpqrstuvwyz"
#: points per series in --json output
JSON_POINTS = 200
#: chart panels: (title, series) in the order printed
PANELS = (("train loss", "train_loss"), ("validation loss", "val_loss"), ("train accuracy", "train_accuracy"),
          ("validation accuracy", "val_accuracy"))
X_LABELS = {"epoch": "epoch", "step": "step", "samples": "samples seen", "time": "wall time (s)"}


def marker(i: int) -> str:
    """The glyph of the i-th run."""
    return MARKERS[i % len(MARKERS)]


def pick_runs(names: Sequence[str], runs_dir: str | None, filter_expr: str | None, sort: str | None,
              limit: int | None, quiet: bool = False) -> list:
    """The records to compare; with no names, the most recent ones (``limit``, default 8), said on stderr."""
    from tuinet.training.compare import load_runs
    from tuinet.training.config import default_runs_dir

    runs = runs_dir or default_runs_dir()
    if names:
        records = load_runs(runs, names, filter=filter_expr, sort=sort, limit=limit)
        if not records:
            raise ConfigError(f"none of the {len(names)} runs named matches the filter {filter_expr!r}")
        return records
    found = load_runs(runs, filter=filter_expr, sort=sort)
    if not found:
        if filter_expr:
            raise ConfigError(f"no run in {runs} matches the filter {filter_expr!r}")
        raise ConfigError(f"no runs to compare in {runs} (train one with `tuinet train`)")
    n = limit or DEFAULT_LIMIT
    records = found[:n]
    if not quiet:
        which = f"first {len(records)} by {sort}" if sort else f"{len(records)} most recent"
        of = f" of {len(found)}" if len(found) > len(records) else ""
        matching = " matching the filter" if filter_expr else ""
        hint = "; name runs, or use --filter, --sort or --limit to choose others" if len(found) > len(records) else ""
        click.echo(f"comparing the {which}{of} runs{matching} in {runs}: {', '.join(r.name for r in records)}{hint}",
                   err=True)
    return records


# --- text ---------------------------------------------------------------------------------------------------------


def show_setting(v: Any) -> str:
    """A setting's value as the diff shows it ('-' for unset: the default applies)."""
    if v is None:
        return "-"
    if isinstance(v, dict) and "run" in v:  # a branched run's parent
        return f"{v['run']}@{v.get('epoch', '?')}"
    if isinstance(v, (list, tuple)):
        return ", ".join(show_setting(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    if isinstance(v, str) and len(v) > 40:
        return "…" + v[-39:]
    return fmt_num(v)


def run_row(r) -> dict[str, str]:
    """The table's cells of one record, by column key."""
    epochs = "-" if r.epochs_done is None and r.epochs_planned is None else \
        f"{'-' if r.epochs_done is None else r.epochs_done}/{'-' if r.epochs_planned is None else r.epochs_planned}"
    dataset = r.dataset
    if dataset and os.sep in dataset:
        dataset = Path(dataset).name
    return {"name": r.name, "status": r.status, "dataset": dataset or "-", "model": show_setting(r.model),
            "params": fmt_num(r.params), "epochs": epochs, "best_val_loss": fmt_num(r.best_val_loss),
            "best_val_accuracy": fmt_pct(r.best_val_accuracy), "test_accuracy": fmt_pct(r.test_accuracy),
            "train_seconds": fmt_duration(r.train_seconds, tenths=True),
            "samples_per_second": fmt_num(round(r.samples_per_second)) if r.samples_per_second is not None else "-"}


def runs_table(records: Sequence) -> str:
    """The runs table, one run a row, its marker first."""
    from tuinet.training.compare import COLUMNS

    rows = [[" "] + [heading.upper() for heading, _ in COLUMNS.values()]]
    for i, r in enumerate(records):
        cells = run_row(r)
        rows.append([marker(i)] + [cells[k] for k in COLUMNS])
    right = {i + 1 for i, k in enumerate(COLUMNS) if k not in ("name", "status", "dataset", "model")}
    return table(rows, right=right)


def diff_table(records: Sequence, diff: list[tuple[str, list[Any]]], width: int | None = None) -> str:
    """The settings that differ, one setting a row, one run a column; narrowed to ``width`` columns when given."""
    if len(records) < 2:
        return "settings: one run, nothing to compare"
    if not diff:
        return "settings: the same in every run"
    rows = [["SETTING"] + [f"{marker(i)} {r.name}" for i, r in enumerate(records)]]
    rows += [[key] + [show_setting(v) for v in values] for key, values in diff]
    text = table(rows)
    if width is None or max(len(line) for line in text.splitlines()) <= width:
        return "settings that differ\n" + text
    # too wide for the terminal (eight runs with long names and values ran to 500 columns): each run's column is
    # headed by its marker alone (the runs table above pairs them with the names) and long values are cut short
    key_width = max(len(r[0]) for r in rows)
    cap = max(MIN_DIFF_CELL, (width - key_width) // len(records) - 2)
    rows[0] = ["SETTING"] + [marker(i) for i in range(len(records))]
    rows[1:] = [[r[0]] + [cut(c, cap) for c in r[1:]] for r in rows[1:]]
    return "settings that differ (each run under its marker; long values cut to fit)\n" + table(rows)



def read_curves(records: Sequence, max_points: int) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """Every record's curves (one read of its metrics.jsonl) and the reader's notes."""
    from tuinet.training.curves import CurveReader

    curves, notes = [], []
    for r in records:
        reader = CurveReader(r.metrics_path, max_points=max_points)
        reader.poll()
        curves.append(reader.curves())
        notes.append([n for n in reader.notes if n not in r.notes])
    return curves, notes


def charts(records: Sequence, curves: list[dict[str, Any]], x_axis: str, width: int, height: int,
           color: bool) -> str:
    """Overlaid curves of every run, one panel per series (train/validation loss, then accuracy), drawn with plotext;
    each run with its own marker."""
    import plotext as plt

    panels = [(title, s) for title, s in PANELS if any(c[s].points(x_axis)[0] for c in curves)]
    if not panels:
        return "(no metrics yet)"
    legend = "   ".join(f"{marker(i)} {r.name}" for i, r in enumerate(records))
    cols = 2 if width >= 100 and len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    f = plt.figure
    f.clear()
    f.subplots(rows, cols)
    for k, (title, series) in enumerate(panels):
        s = f.subplot(k // cols + 1, k % cols + 1)
        s.title(title)
        s.label(X_LABELS[x_axis], axis=0)
        for i, c in enumerate(curves):
            xs, ys = c[series].points(x_axis)
            if xs:
                sig = s.signal(xs, ys, marker=marker(i))
                s.draw(sig.lines() if len(xs) > 1 else sig)
    with plot_size_as_asked(plt):
        f.plot_size(width, height * rows)
        out = f.build().string(colorless=not color)
    f.clear()
    head = f"curves against {X_LABELS[x_axis]}:   {legend}"
    if len(head) > width:  # one line a run, not one line as wide as all their names
        head = f"curves against {X_LABELS[x_axis]}:\n" + "\n".join(f"  {marker(i)} {r.name}"
                                                                  for i, r in enumerate(records))
    return f"{head}\n{out}"


def headless_text(records: Sequence, x_axis: str = "epoch", width: int | None = None, height: int = 14,
                  color: bool = False) -> str:
    """The whole headless report: the runs table, the settings diff, notes, then the charts."""
    from tuinet.training.compare import settings_diff

    if width is None:
        width = min(140, shutil.get_terminal_size((120, 24)).columns)
    curves, reader_notes = read_curves(records, max_points=max(50, 2 * width))
    parts = [runs_table(records), diff_table(records, settings_diff(records), width)]
    notes = [f"  {marker(i)} {r.name}: {n}" for i, r in enumerate(records) for n in r.notes + reader_notes[i]]
    if notes:
        parts.append("notes\n" + "\n".join(notes))
    parts.append(charts(records, curves, x_axis, width, height, color))
    return "\n\n".join(parts)


# --- JSON ---------------------------------------------------------------------------------------------------------


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def compare_json(records: Sequence, runs_dir: str | None) -> dict[str, Any]:
    """One JSON object: the runs (each with its columns, notes and downsampled curves) and the settings diff."""
    from tuinet.training.compare import COLUMNS, settings_diff
    from tuinet.training.config import default_runs_dir

    curves, reader_notes = read_curves(records, max_points=JSON_POINTS)
    runs = []
    for i, r in enumerate(records):
        d = r.to_dict()
        d["marker"] = marker(i)
        d["columns"] = {k: r.value(k) for k in COLUMNS}
        d["notes"] = r.notes + reader_notes[i]
        d["curves"] = {s: {"epoch": c.epoch, "step": c.step, "samples": c.samples, "time": c.time, "y": c.y}
                       for s, c in curves[i].items()}
        runs.append(d)
    return _clean({"runs_dir": str(runs_dir or default_runs_dir()), "columns": {k: h for k, (h, _) in COLUMNS.items()},
                   "runs": runs, "diff": [{"setting": k, "values": v} for k, v in settings_diff(records)]})


def print_headless(records: Sequence, runs_dir: str | None, json_out: bool, x_axis: str = "epoch",
                   width: int | None = None) -> None:
    """Print the comparison as text (or JSON) to stdout; colour only on a terminal without NO_COLOR."""
    if json_out:
        click.echo(json.dumps(compare_json(records, runs_dir)))
        return
    color = stdout_is_terminal() and not os.environ.get("NO_COLOR")
    click.echo(headless_text(records, x_axis=x_axis, width=width, color=color), color=color)


# --- the command --------------------------------------------------------------------------------------------------


@click.command("compare", context_settings=CONTEXT)
@click.argument("names", nargs=-1, metavar="[RUN]...")
@runs_dir_option
@click.option("--filter", "filter_expr", metavar="EXPR",
              help="Keep runs matching KEY OP VALUE terms joined by commas or 'and'; OP is = != < <= > >= or ~ "
                   "(contains), KEY a column or a setting: 'dataset=mnist, lr<0.01, model~cnn'.  [default: every run]")
@click.option("--sort", metavar="KEY", help="Sort by a column or setting; -KEY sorts descending, missing values go "
                                            "last.  [default: newest first, or the order named]")
@click.option("--limit", type=click.IntRange(min=1), help=f"Compare at most N runs.  [default: {DEFAULT_LIMIT} when "
                                                          f"no run is named]")
@click.option("--x", "x_axis", type=click.Choice(["epoch", "step", "samples", "time"]), default="epoch",
              show_default=True, help="X axis of the headless charts.")
@click.option("--width", type=click.IntRange(min=40), help="Headless chart width in columns.  [default: terminal "
                                                           "width, at most 140]")
@click.option("--headless", is_flag=True, help="Print instead of opening the app.  [default: when stdout is not a "
                                               "terminal]")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object: runs, columns, diff, curves.  [default: text]")
@friendly_errors
def compare_cmd(names: tuple[str, ...], runs_dir: str | None, filter_expr: str | None, sort: str | None,
                limit: int | None, x_axis: str, width: int | None, headless: bool, json_out: bool) -> None:
    """Compare runs side by side: a table, the settings that differ, overlaid curves.

    RUN is a run name (in the runs folder) or a run folder; with none, the most recent runs (said on stderr).
    Opens the app's Compare screen on a terminal; prints with --headless, --json, or when stdout is not a
    terminal. Columns, filter syntax and sort keys: docs/compare.md."""
    records = pick_runs(names, runs_dir, filter_expr, sort, limit)
    if json_out or headless or not stdout_is_terminal():
        print_headless(records, runs_dir, json_out, x_axis, width)
        return
    from tuinet.app.compare import run_compare_app

    code = run_compare_app(records, runs_dir)
    if code:
        raise SystemExit(code)


def stdout_is_terminal() -> bool:
    """True when stdout is a terminal (the app can open)."""
    return sys.stdout.isatty()
