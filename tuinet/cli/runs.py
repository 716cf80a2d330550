"""Run-management commands: ``tuinet runs``, ``eval``, ``predict``, ``plot`` and ``export``.

They read what a trainer left on disk (``status.json``, ``metrics.jsonl``, ``latest.npz``/``best.npz``) and never
need the trainer to be running: :mod:`tuinet.training.rundir` and :mod:`tuinet.training.evaluation` do the reading
and evaluating, this module the options and the text. Every user error ends as one ``Error:`` line with a non-zero
exit.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from tuinet.cli.common import CONTEXT, check_thread_env, friendly_errors, plot_size_as_asked, runs_dir_option
from tuinet.errors import ConfigError
from tuinet.formatting import fmt_duration, fmt_num, fmt_pct, table

#: columns of ``tuinet export``
EXPORT_COLUMNS = ("event", "step", "epoch", "loss", "penalty", "accuracy", "lr", "train_loss", "train_accuracy",
                  "val_loss", "val_accuracy", "seconds", "samples_per_second", "time")


# --- tuinet runs -------------------------------------------------------------------------------------------------


@click.command("runs", context_settings=CONTEXT)
@runs_dir_option
@click.option("--json", "json_out", is_flag=True, help="Print a JSON list instead of a table.  [default: table]")
@click.option("--compare", is_flag=True, help="Compare the most recent runs instead, as `tuinet compare --headless` "
                                              "does: table, settings that differ, overlaid curves.  [default: off]")
@friendly_errors
def runs_cmd(runs_dir: str | None, json_out: bool, compare: bool) -> None:
    """List runs, newest first.

    Shows name, status, dataset, model, epochs, best validation accuracy, test accuracy and training time.
    Runs whose trainer is alive right now are marked with *."""
    from tuinet.training.config import default_runs_dir
    from tuinet.training.rundir import run_summaries

    if compare:
        from tuinet.cli.compare import pick_runs, print_headless

        print_headless(pick_runs((), runs_dir, None, None, None), runs_dir, json_out)
        return
    items = run_summaries(runs_dir)
    if json_out:
        click.echo(json.dumps(items, indent=2, default=str))
        return
    if not items:
        click.echo(f"no runs in {runs_dir or default_runs_dir()}")
        return
    rows = [["", "NAME", "STATUS", "DATASET", "MODEL", "EPOCHS", "BEST VAL ACC", "BEST VAL LOSS", "TEST@BEST",
             "TEST@LAST", "TRAIN TIME"]]
    for s in items:
        epochs = f"{s.get('epoch', '-')}/{s.get('epochs', '-')}" if s.get("epochs") is not None else "-"
        best, last = _test_figure(s, "best"), _test_figure(s, "last")
        rows.append(["*" if s["live"] else "", str(s.get("name")), str(s.get("status")), str(s.get("dataset") or "-"),
                     str(s.get("model") or "-"), epochs, fmt_pct(s.get("best_val_accuracy")),
                     fmt_num(s.get("best_val_loss")), best, last,
                     fmt_duration(s.get("train_seconds"), tenths=True)])
    click.echo(table(rows, right={5, 6, 7, 8, 9, 10}))
    click.echo("BEST VAL ACC: the highest validation accuracy; BEST VAL LOSS: the lowest (best.npz holds its epoch)\n"
               "TEST@BEST / TEST@LAST: test accuracy of best.npz's weights / of the last weights")
    if any(s["live"] for s in items):
        click.echo("* live: a trainer process is running this run (`tuinet attach` to watch it)")


def _test_figure(status: dict[str, Any], which: str) -> str:
    """The test accuracy of the best (or last) weights from a run's status.json; a run from before both were kept
    has only ``test_accuracy``, of its last weights."""
    fig = status.get(f"test_{which}")
    if isinstance(fig, dict):
        return fmt_pct(fig.get("accuracy"))
    if which == "last" and "final" not in status:
        return fmt_pct(status.get("test_accuracy"))
    return "-"


# --- tuinet eval ------------------------------------------------------------------------------------------------


def format_eval(r: dict[str, Any]) -> str:
    """The text report of ``tuinet eval``."""
    from tuinet.training.evaluation import WEIGHTS_LABEL

    pos = f" (epoch {r['epoch']}, step {r['step']})" if r.get("epoch") is not None else ""
    which = f": {WEIGHTS_LABEL[r['weights']]}" if r.get("weights") in WEIGHTS_LABEL else ""
    lines = [f"checkpoint {r['checkpoint']}{pos}{which}", f"dataset {r['dataset']}: {r['samples']} test samples"]
    o = r.get("other")
    if "test_accuracy" not in r:
        lines.append(f"test loss {r['test_loss']:.4f}   mean absolute error {r['test_mae']:.4f}")
        if o:
            lines.append(f"{WEIGHTS_LABEL[o['weights']]} ({Path(o['checkpoint']).name}, epoch {o['epoch']}): "
                         f"test loss {o['test_loss']:.4f}   mean absolute error {o['test_mae']:.4f}")
        return "\n".join(lines)
    lines.append(f"test loss {r['test_loss']:.4f}   accuracy {r['test_accuracy']:.4f} ({fmt_pct(r['test_accuracy'])})")
    if o:
        lines.append(f"{WEIGHTS_LABEL[o['weights']]} ({Path(o['checkpoint']).name}, epoch {o['epoch']}): "
                     f"test loss {o['test_loss']:.4f}   accuracy {o['test_accuracy']:.4f} "
                     f"({fmt_pct(o['test_accuracy'])})")
    # classes named by their own index (MNIST's "0".."9") are shown by the index alone, not twice
    named = any(c["class"] != str(i) for i, c in enumerate(r["per_class"]))
    lines += ["", "per-class accuracy"]
    rows = [["  #"] + (["class"] if named else []) + ["samples", "correct", "accuracy"]]
    for i, c in enumerate(r["per_class"]):
        rows.append([f"  {i}"] + ([c["class"]] if named else []) + [str(c["samples"]), str(c["correct"]),
                                                                   fmt_pct(c["accuracy"])])
    lines.append(table(rows, right={0, 2, 3, 4} if named else {0, 1, 2, 3}))
    cm = r["confusion_matrix"]
    k = len(cm)
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)"]
    width = max(3, max(len(str(v)) for row in cm for v in row) + 1)
    label_w = min(max(len(n) for n in r["class_names"]), 16) + 1 if named else 0
    head = " " * (label_w + 5) + "".join(f"{j:>{width}}" for j in range(k))
    lines.append(head)
    for i, row in enumerate(cm):
        name = f"{r['class_names'][i][:label_w - 1]:<{label_w - 1}} " if named else ""
        lines.append(f"  {i:>2} {name}" + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


@click.command("eval", context_settings=CONTEXT)
@click.argument("ref", metavar="RUN|CHECKPOINT")
@click.option("--best", "which", flag_value="best", help="Report the run's best checkpoint (best.npz: the epoch of "
                                                         "the lowest validation loss).  [default: the weights the run "
                                                         "reports, --final of train]")
@click.option("--last", "which", flag_value="last", help="Report the run's last weights (latest.npz).  [default: as --best says]")
@click.option("--dataset", "-d", help="Evaluate on another dataset with the same input shape (its test split).  "
                                      "[default: the dataset saved with the checkpoint]")
@runs_dir_option
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object.  [default: text report]")
@friendly_errors
def eval_cmd(ref: str, which: str | None, dataset: str | None, runs_dir: str | None, json_out: bool) -> None:
    """Test loss, accuracy, per-class accuracy, confusion matrix.

    Evaluates a checkpoint file, or a run: the weights it reports (its best validation epoch's unless it was
    trained with --final last) in full, and its other checkpoint's test loss and accuracy on one line. The
    dataset is rebuilt from the saved configuration and normalized with the saved normalizer."""
    from tuinet.training.evaluation import evaluate_run_or_checkpoint

    check_thread_env()
    result = evaluate_run_or_checkpoint(ref, runs_dir, which, dataset)
    click.echo(json.dumps(result) if json_out else format_eval(result))


# --- tuinet predict ----------------------------------------------------------------------------------------------


@click.command("predict", context_settings=CONTEXT)
@click.argument("ref", metavar="CHECKPOINT")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=1, show_default=True,
              help="Show the k most likely classes per input.")
@click.option("--best", is_flag=True, help="With a run: use its best checkpoint.  [default: latest]")
@click.option("--invert", is_flag=True, help="Invert image colors (dark ink on white paper -> MNIST style; "
                                              "after --fit).  [default: off]")
@click.option("--fit", type=click.Choice(["stretch", "pad", "digit"]), default="stretch", show_default=True,
              help="An image of another shape than the model's input: stretch it to that size (as image folders "
                   "are read for training); keep its shape and pad it with its border colour; or (gray models) "
                   "make a photo or drawing of a digit look like MNIST's: the ink cropped, fitted in 20x20 of "
                   "28x28, light on black whatever its colours (no --invert needed), centred on its centre of mass.")
@runs_dir_option
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object per input.  [default: text]")
@friendly_errors
def predict_cmd(ref: str, files: tuple[str, ...], top_k: int, best: bool, invert: bool, fit: str,
                runs_dir: str | None, json_out: bool) -> None:
    """Predict classes of images or CSV rows.

    Prints the predicted class and its probability for each image (PNG/JPEG, resized to the model's input,
    stretched, padded or made like an MNIST digit: see --fit; gray or RGB as the model takes) or CSV row (feature columns picked by name when the file has a header),
    with the saved normalization applied. CHECKPOINT is a .npz file, a run folder or a run name."""
    from tuinet.data.inputs import load_inputs
    from tuinet.training.evaluation import checkpoint_model, resolve_checkpoint, saved_dataset_info, saved_normalizer

    check_thread_env()
    ckpt = resolve_checkpoint(ref, runs_dir, best)
    info = saved_dataset_info(ckpt)
    model = checkpoint_model(ckpt)
    shape = tuple(model.input_shape)
    notes: list[str] = []
    x, labels = load_inputs(files, shape, info.get("feature_names"), invert, fit, notes)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    x = saved_normalizer(ckpt).transform(x)
    width = max(len(lab) for lab in labels)
    if not model.is_classifier:
        out = model.predict(x)
        targets = info.get("target_names") or [f"y{i}" for i in range(out.shape[1])]
        for lab, row in zip(labels, out):
            if json_out:
                click.echo(json.dumps({"input": lab, "prediction": [float(v) for v in row]}))
            else:
                click.echo(f"{lab:<{width}}  " + "  ".join(f"{t}={v:.4g}" for t, v in zip(targets, row)))
        return
    probs = model.predict_proba(x)
    k = probs.shape[1]
    names = list(info.get("class_names") or [])
    names = names if len(names) == k else [str(i) for i in range(k)]
    top_k = min(top_k, k)
    for lab, p in zip(labels, probs):
        order = np.argsort(-p, kind="stable")[:top_k]
        preds = [{"class": names[i], "index": int(i), "probability": float(p[i])} for i in order]
        if json_out:
            click.echo(json.dumps({"input": lab, "predictions": preds}))
        else:
            click.echo(f"{lab:<{width}}  " + "   ".join(f"{q['class']} {q['probability'] * 100:.2f}%" for q in preds))


# --- metrics: plot and export -----------------------------------------------------------------------------------


def _series(events, kind: str, x_key: str, y_key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for e in events:
        if e["event"] == kind and isinstance(e.get(y_key), (int, float)) and math.isfinite(e[y_key]):
            xs.append(float(e[x_key]))
            ys.append(float(e[y_key]))
    return xs, ys


def _legend_away_from_the_end(panel, xs: list[float], ys: list[float]) -> None:
    """Put a panel's legend in the right-hand corner the curves end away from: top right when they end low (a
    loss), bottom right when they end high (an accuracy). In plotext's default place, the top left, it hid the
    first epoch of an accuracy curve, where it rises fastest."""
    if not xs or not ys:
        return
    lo, hi = min(ys), max(ys)
    top = ys[-1] <= (lo + hi) / 2 if hi > lo else True
    panel.legend(x=max(xs), y=hi if top else lo, ha="right", va="top" if top else "bottom", relative=True)


def plot_text(events: list[dict[str, Any]], width: int, height: int, color: bool, title: str = "") -> str:
    """Loss (and accuracy) curves drawn with plotext: training per logged step, validation per epoch."""
    import plotext as plt

    panels = [("loss", "loss", "val_loss")]
    if any(isinstance(e.get("accuracy"), (int, float)) for e in events if e["event"] == "step"):
        panels.append(("accuracy", "accuracy", "val_accuracy"))
    curves = [(name, _series(events, "step", "epoch", tk), _series(events, "epoch", "epoch", vk))
              for name, tk, vk in panels]
    if hasattr(plt, "figure") and hasattr(plt.figure, "build"):  # plotext >= 6: the object API
        f = plt.figure
        f.clear()
        f.subplots(len(curves), 1)
        for i, (name, (tx, ty), (vx, vy)) in enumerate(curves, start=1):
            s = f.subplot(i, 1)
            s.title(f"{title}  {name}".strip() if i == 1 else name)
            s.label("epoch", axis=0)
            if tx:
                s.draw(s.signal(tx, ty).label("train (per step)").lines())
            if vx:
                sig = s.signal(vx, vy, marker="x").label("validation (per epoch)")
                s.draw(sig.lines() if len(vx) > 1 else sig)
            _legend_away_from_the_end(s, tx + vx, ty + vy)
        with plot_size_as_asked(plt):
            f.plot_size(width, height * len(curves))
            out = f.build().string(colorless=not color)
        f.clear()
        return out
    # plotext 5: the module-level API
    plt.clear_figure()
    plt.subplots(len(curves), 1)
    for i, (name, (tx, ty), (vx, vy)) in enumerate(curves, start=1):
        plt.subplot(i, 1)
        plt.title(f"{title}  {name}".strip() if i == 1 else name)
        plt.xlabel("epoch")
        if tx:
            plt.plot(tx, ty, label="train (per step)")
        if vx:
            plt.plot(vx, vy, label="validation (per epoch)", marker="x")
    plt.plotsize(width, height * len(curves))
    if not color:
        plt.theme("clear")
    out = plt.build()
    plt.clear_figure()
    return out


@click.command("plot", context_settings=CONTEXT)
@click.argument("ref", metavar="RUN")
@click.option("--width", type=click.IntRange(min=30), help="Chart width in columns.  [default: terminal width, "
                                                           "at most 120]")
@click.option("--height", type=click.IntRange(min=8), default=18, show_default=True,
              help="Height of each chart in rows.")
@click.option("--color/--no-color", default=None, help="Colored lines.  [default: when stdout is a terminal]")
@runs_dir_option
@friendly_errors
def plot_cmd(ref: str, width: int | None, height: int, color: bool | None, runs_dir: str | None) -> None:
    """Draw loss and accuracy curves in the terminal.

    Training metrics per logged step, validation per epoch, read from RUN's metrics.jsonl."""
    import shutil

    from tuinet.training.rundir import find_run, metric_events

    rd = find_run(ref, runs_dir)
    events = metric_events(rd)
    if not any(e["event"] in ("step", "epoch") for e in events):
        raise ConfigError(f"run '{rd.name}' has no metrics yet ({rd.path / 'metrics.jsonl'})")
    if width is None:
        width = min(120, shutil.get_terminal_size((100, 24)).columns)
    if color is None:
        color = sys.stdout.isatty()
    click.echo(plot_text(events, width, height, color, title=rd.name), color=color)


@click.command("export", context_settings=CONTEXT)
@click.argument("ref", metavar="RUN")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
              help="CSV file to write.  [default: standard output]")
@runs_dir_option
@friendly_errors
def export_cmd(ref: str, output: str | None, runs_dir: str | None) -> None:
    """Write a run's metrics as CSV.

    One row per step, validation and epoch event of RUN, with the columns event, step, epoch, loss, penalty,
    accuracy, lr, train_loss, train_accuracy, val_loss, val_accuracy, seconds, samples_per_second, time."""
    from tuinet.training.rundir import find_run, metric_events

    rd = find_run(ref, runs_dir)
    events = metric_events(rd)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for e in events:
        writer.writerow(["" if e.get(c) is None else e.get(c) for c in EXPORT_COLUMNS])
    if output is None:
        click.echo(buf.getvalue(), nl=False)
        return
    try:
        Path(output).write_text(buf.getvalue())
    except OSError as e:
        raise ConfigError(f"{output}: cannot write ({e.strerror or e})") from None
    click.echo(f"wrote {len(events)} rows to {output}", err=True)


def register(main: click.Group) -> None:
    """Add runs, eval, predict, plot and export to the ``tuinet`` group."""
    for cmd in (runs_cmd, eval_cmd, predict_cmd, plot_cmd, export_cmd):
        main.add_command(cmd)

