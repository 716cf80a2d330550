"""Run-management commands: ``tuinet runs``, ``eval``, ``predict``, ``plot`` and ``export``.

They read what a trainer left on disk (``status.json``, ``metrics.jsonl``, ``latest.npz``/``best.npz``) and never
need the trainer to be running. Every user error ends as one ``Error:`` line with a non-zero exit.
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

from tuinet.cli.common import CONTEXT
from tuinet.cli.common import friendly_errors as _errors
from tuinet.errors import CheckpointError, ConfigError, DataError
from tuinet.formatting import fmt_duration, fmt_pct, table

RUNS_DIR_HELP = "Folder holding the runs.  [default: $TUINET_RUNS_DIR or ./runs]"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
LIVE = ("running", "paused", "loading", "testing", "compiling")
#: columns of ``tuinet export``
EXPORT_COLUMNS = ("event", "step", "epoch", "loss", "penalty", "accuracy", "lr", "train_loss", "train_accuracy",
                  "val_loss", "val_accuracy", "seconds", "samples_per_second", "time")




# --- finding runs and checkpoints ----------------------------------------------------------------------------


def _run(ref: str, runs_dir: str | None):
    from tuinet.training.rundir import find_run

    return find_run(ref, runs_dir)


def resolve_checkpoint(ref: str, runs_dir: str | None = None, best: bool = False):
    """Load the checkpoint named by ``ref``: a checkpoint file, a run folder or a run name (latest, or best)."""
    from tuinet.engine.checkpoint import load_checkpoint

    p = Path(ref).expanduser()
    if p.is_file():
        if best:
            raise ConfigError(f"{ref}: --best applies to a run, not to a checkpoint file")
        return load_checkpoint(p)
    try:
        rd = _run(ref, runs_dir)
    except ConfigError:
        if p.is_dir():
            return load_checkpoint(p / "best.npz") if best else load_checkpoint(p)
        raise ConfigError(f"{ref}: no such checkpoint file or run (see `tuinet runs`)") from None
    path = rd.best if best else rd.latest
    if not path.is_file():
        kind = "best" if best else "latest"
        raise CheckpointError(f"run '{rd.name}' has no {kind} checkpoint yet ({path} is missing)")
    return load_checkpoint(path)


def _saved_dataset_info(ckpt) -> dict[str, Any]:
    info = ckpt.extra.get("dataset")
    if not isinstance(info, dict) or "normalizer" not in info:
        raise CheckpointError(f"{ckpt.path}: the checkpoint holds no dataset record (normalizer, classes); "
                              "it was not written by `tuinet train`")
    return info


def _normalizer(ckpt):
    from tuinet.data import Normalizer

    return Normalizer.from_dict(_saved_dataset_info(ckpt)["normalizer"])


def rebuild_test_split(ckpt, dataset: str | None = None):
    """The test split the checkpoint's run used (same source, splits, seed, limit), normalized with the
    normalizer saved in the checkpoint; returns ``(x_test, y_test, dataset)``."""
    from tuinet.data import load_dataset

    cfg = ckpt.extra.get("config")
    info = _saved_dataset_info(ckpt)
    if not isinstance(cfg, dict) or "dataset" not in cfg:
        raise CheckpointError(f"{ckpt.path}: the checkpoint holds no training configuration; "
                              "cannot rebuild its dataset")
    data = load_dataset(dataset or cfg["dataset"], val_split=cfg.get("val_split", 0.1),
                        test_split=cfg.get("test_split", 0.1), seed=cfg.get("seed", 0), normalize="none",
                        target=cfg.get("target"), task=cfg.get("task") or info.get("task"),
                        limit=cfg.get("limit"), log=lambda m: None)
    x = _normalizer(ckpt).transform(data.x_test)
    return x, data.y_test, data


def _model(ckpt):
    from tuinet.engine.threads import configure_threads

    model = ckpt.build_model()
    configure_threads(model)
    return model


# --- formatting ------------------------------------------------------------------------------------------------


# --- tuinet runs -------------------------------------------------------------------------------------------------


def run_summaries(runs_dir: str | None) -> list[dict[str, Any]]:
    """Every run in ``runs_dir``, newest first, with a ``live`` flag (a trainer process is running it)."""
    from tuinet.training.rundir import RunDir, _pid_alive, list_runs

    out = []
    for s in list_runs(runs_dir):
        if not s.get("dataset") or not s.get("model"):
            cfg = RunDir(s["path"]).read_json("config.json")
            s.setdefault("epochs", cfg.get("epochs"))
            s["dataset"] = s.get("dataset") or cfg.get("dataset")
            s["model"] = s.get("model") or cfg.get("model")
        s["live"] = s.get("status") in LIVE and _pid_alive(s.get("pid"))
        out.append(s)
    return out


@click.command("runs", context_settings=CONTEXT)
@click.option("--runs-dir", help=RUNS_DIR_HELP)
@click.option("--json", "json_out", is_flag=True, help="Print a JSON list instead of a table.  [default: table]")
@_errors
def runs_cmd(runs_dir: str | None, json_out: bool) -> None:
    """List runs, newest first.

    Shows name, status, dataset, model, epochs, best validation accuracy, test accuracy and training time.
    Runs whose trainer is alive right now are marked with *."""
    from tuinet.training.config import default_runs_dir

    items = run_summaries(runs_dir)
    if json_out:
        click.echo(json.dumps(items, indent=2, default=str))
        return
    if not items:
        click.echo(f"no runs in {runs_dir or default_runs_dir()}")
        return
    rows = [["", "NAME", "STATUS", "DATASET", "MODEL", "EPOCHS", "BEST VAL ACC", "TEST ACC", "TRAIN TIME"]]
    for s in items:
        epochs = f"{s.get('epoch', '-')}/{s.get('epochs', '-')}" if s.get("epochs") is not None else "-"
        rows.append(["*" if s["live"] else "", str(s.get("name")), str(s.get("status")), str(s.get("dataset") or "-"),
                     str(s.get("model") or "-"), epochs, fmt_pct(s.get("best_val_accuracy")),
                     fmt_pct(s.get("test_accuracy")), fmt_duration(s.get("train_seconds"), tenths=True)])
    click.echo(table(rows, right={5, 6, 7, 8}))
    if any(s["live"] for s in items):
        click.echo("* live: a trainer process is running this run (`tuinet attach` to watch it)")


# --- tuinet eval ------------------------------------------------------------------------------------------------


def evaluate_checkpoint(ckpt, dataset: str | None = None) -> dict[str, Any]:
    """Test loss and accuracy, per-class accuracy and the confusion matrix of a checkpoint on its test split."""
    from tuinet.training.stats import confusion_matrix

    x, y, data = rebuild_test_split(ckpt, dataset)
    model = _model(ckpt)
    if tuple(model.input_shape) != tuple(x.shape[1:]):
        raise CheckpointError(f"{ckpt.path}: the model takes input {tuple(model.input_shape)} but the dataset "
                              f"{data.name} has {tuple(x.shape[1:])}")
    if len(x) == 0:
        raise DataError(f"{data.name}: the test split is empty (test_split was 0); nothing to evaluate")
    trainer = ckpt.extra.get("trainer", {})
    result: dict[str, Any] = {"checkpoint": str(ckpt.path), "dataset": data.name, "task": data.task,
                              "samples": int(len(x)), "epoch": trainer.get("epoch"),
                              "step": trainer.get("global_step")}
    r = model.evaluate(x, y)
    result["test_loss"] = r["loss"]
    if model.is_classifier:
        names = list(_saved_dataset_info(ckpt).get("class_names") or data.class_names)
        k = model.output_shape[-1]
        names = names if len(names) == k else [str(i) for i in range(k)]
        if y.max(initial=0) >= k:
            raise CheckpointError(f"{ckpt.path}: the data has more classes than the model's {k} outputs")
        preds = model.predict(x).argmax(axis=1)
        cm = confusion_matrix(y, preds, k)
        support = cm.sum(axis=1)
        result["test_accuracy"] = r["accuracy"]
        result["class_names"] = names
        result["per_class"] = [{"class": names[i], "samples": int(support[i]), "correct": int(cm[i, i]),
                                "accuracy": float(cm[i, i] / support[i]) if support[i] else None}
                               for i in range(k)]
        result["confusion_matrix"] = cm.tolist()
    else:
        pred = model.predict(x)
        result["test_mae"] = float(np.mean(np.abs(pred.reshape(len(pred), -1) - y.reshape(len(y), -1))))
    return result


def format_eval(r: dict[str, Any]) -> str:
    """The text report of ``tuinet eval``."""
    pos = f" (epoch {r['epoch']}, step {r['step']})" if r.get("epoch") is not None else ""
    lines = [f"checkpoint {r['checkpoint']}{pos}", f"dataset {r['dataset']}: {r['samples']} test samples"]
    if "test_accuracy" not in r:
        lines.append(f"test loss {r['test_loss']:.4f}   mean absolute error {r['test_mae']:.4f}")
        return "\n".join(lines)
    lines.append(f"test loss {r['test_loss']:.4f}   accuracy {r['test_accuracy']:.4f} ({fmt_pct(r['test_accuracy'])})")
    lines += ["", "per-class accuracy"]
    rows = [["  #", "class", "samples", "correct", "accuracy"]]
    for i, c in enumerate(r["per_class"]):
        rows.append([f"  {i}", c["class"], str(c["samples"]), str(c["correct"]), fmt_pct(c["accuracy"])])
    lines.append(table(rows, right={0, 2, 3, 4}))
    cm = r["confusion_matrix"]
    k = len(cm)
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)"]
    width = max(3, max(len(str(v)) for row in cm for v in row) + 1)
    label_w = min(max(len(n) for n in r["class_names"]), 16)
    head = " " * (label_w + 6) + "".join(f"{j:>{width}}" for j in range(k))
    lines.append(head)
    for i, row in enumerate(cm):
        lines.append(f"  {i:>2} {r['class_names'][i][:label_w]:<{label_w}} " + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


@click.command("eval", context_settings=CONTEXT)
@click.argument("ref", metavar="RUN|CHECKPOINT")
@click.option("--best", is_flag=True, help="Use the run's best checkpoint (lowest validation loss).  "
                                            "[default: the latest checkpoint]")
@click.option("--dataset", "-d", help="Evaluate on another dataset with the same input shape (its test split).  "
                                      "[default: the dataset saved with the checkpoint]")
@click.option("--runs-dir", help=RUNS_DIR_HELP)
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object.  [default: text report]")
@_errors
def eval_cmd(ref: str, best: bool, dataset: str | None, runs_dir: str | None, json_out: bool) -> None:
    """Test loss, accuracy, per-class accuracy, confusion matrix.

    Evaluates a run (its latest or best checkpoint) or a checkpoint file on the test split. The dataset is
    rebuilt from the saved configuration and normalized with the saved normalizer."""
    ckpt = resolve_checkpoint(ref, runs_dir, best)
    result = evaluate_checkpoint(ckpt, dataset)
    click.echo(json.dumps(result) if json_out else format_eval(result))


# --- tuinet predict ----------------------------------------------------------------------------------------------


def _read_image(path: Path, input_shape: tuple[int, ...], invert: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if len(input_shape) != 3:
        raise DataError(f"{path}: the model takes {input_shape[0] if input_shape else 0} features, not images "
                        "(give CSV rows)")
    h, w, c = input_shape
    if c not in (1, 3):
        raise DataError(f"{path}: the model takes {c}-channel images; only gray (1) or RGB (3) can be read")
    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
            a = np.asarray(im, dtype=np.float32).reshape(h, w, c)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None
    return 255.0 - a if invert else a


def _read_csv_rows(path: Path, input_shape: tuple[int, ...], feature_names: list[str] | None
                   ) -> tuple[np.ndarray, list[str]]:
    """Rows of a CSV as model inputs, and a label per row (``file:line``)."""
    n = int(np.prod(input_shape))
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = max(",;\t", key=first.count) if any(ch in first for ch in ",;\t") else ","
    rows = [(i + 1, r) for i, r in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter))
            if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path}: no rows")

    def numeric(r: list[str]) -> bool:
        try:
            [float(c) for c in r]
        except ValueError:
            return False
        return True

    header = None
    if not numeric(rows[0][1]):
        header = [h.strip() for h in rows[0][1]]
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path}: a header row but no data rows")
    if header is not None and feature_names and len(feature_names) == n:
        missing = [f for f in feature_names if f not in header]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r}; the model needs the columns "
                            f"{', '.join(feature_names)}")
        cols = [header.index(f) for f in feature_names]
    else:
        width = len(rows[0][1])
        if width != n:
            hint = f" ({', '.join(feature_names)})" if feature_names else ""
            raise DataError(f"{path}: rows have {width} values but the model takes {n} features{hint}"
                            + ("; add a header row naming the columns" if feature_names and header is None else ""))
        cols = list(range(n))
    x = np.empty((len(rows), n), dtype=np.float32)
    labels = []
    for j, (line, r) in enumerate(rows):
        try:
            x[j] = [float(r[c]) for c in cols]
        except (ValueError, IndexError):
            raise DataError(f"{path}: line {line}: expected {n} numeric values in the feature columns, "
                            f"got {r!r}") from None
        labels.append(f"{path.name}:{line}")
    return x.reshape((len(rows),) + tuple(input_shape)), labels


def load_inputs(files: tuple[str, ...], input_shape: tuple[int, ...], feature_names: list[str] | None,
                invert: bool = False) -> tuple[np.ndarray, list[str]]:
    """Raw (not yet normalized) model inputs from image files and CSV files, with a label for each."""
    xs, labels = [], []
    for f in files:
        p = Path(f).expanduser()
        if not p.is_file():
            raise DataError(f"{f}: no such file")
        if p.suffix.lower() in IMAGE_SUFFIXES:
            xs.append(_read_image(p, input_shape, invert)[None])
            labels.append(p.name)
        elif p.suffix.lower() in (".csv", ".tsv", ".txt"):
            x, lab = _read_csv_rows(p, input_shape, feature_names)
            xs.append(x)
            labels += lab
        else:
            raise DataError(f"{f}: unknown file type (images: {', '.join(sorted(IMAGE_SUFFIXES))}; rows: .csv)")
    return np.ascontiguousarray(np.concatenate(xs), dtype=np.float32), labels


@click.command("predict", context_settings=CONTEXT)
@click.argument("ref", metavar="CHECKPOINT")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=1, show_default=True,
              help="Show the k most likely classes per input.")
@click.option("--best", is_flag=True, help="With a run: use its best checkpoint.  [default: latest]")
@click.option("--invert", is_flag=True, help="Invert image colors first (dark ink on white paper -> MNIST "
                                              "style).  [default: off]")
@click.option("--runs-dir", help=RUNS_DIR_HELP)
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object per input.  [default: text]")
@_errors
def predict_cmd(ref: str, files: tuple[str, ...], top_k: int, best: bool, invert: bool, runs_dir: str | None,
                json_out: bool) -> None:
    """Predict classes of images or CSV rows.

    Prints the predicted class and its probability for each image (PNG/JPEG, resized to the model's input,
    gray or RGB as the model takes) or CSV row (feature columns picked by name when the file has a header),
    with the saved normalization applied. CHECKPOINT is a .npz file, a run folder or a run name."""
    ckpt = resolve_checkpoint(ref, runs_dir, best)
    info = _saved_dataset_info(ckpt)
    model = _model(ckpt)
    shape = tuple(model.input_shape)
    x, labels = load_inputs(files, shape, info.get("feature_names"), invert)
    x = _normalizer(ckpt).transform(x)
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


def metric_events(run) -> list[dict[str, Any]]:
    """The run's step, validation and epoch events in order; when a resumed run repeats a step or epoch (after a
    crash, events past the last checkpoint are written again), the later one wins."""
    kept: dict[tuple[str, Any], dict[str, Any]] = {}
    for e in run.events():
        kind = e.get("event")
        if kind in ("step", "validation"):
            key = (kind, e.get("step"))
        elif kind == "epoch":
            key = (kind, e.get("epoch"))
        else:
            continue
        kept.pop(key, None)
        kept[key] = e
    events = list(kept.values())
    order = {"step": 0, "validation": 1, "epoch": 2}
    events.sort(key=lambda e: (e.get("step") or 0, order[e["event"]]))
    return events


def _series(events, kind: str, x_key: str, y_key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for e in events:
        if e["event"] == kind and isinstance(e.get(y_key), (int, float)) and math.isfinite(e[y_key]):
            xs.append(float(e[x_key]))
            ys.append(float(e[y_key]))
    return xs, ys


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
@click.option("--runs-dir", help=RUNS_DIR_HELP)
@_errors
def plot_cmd(ref: str, width: int | None, height: int, color: bool | None, runs_dir: str | None) -> None:
    """Draw loss and accuracy curves in the terminal.

    Training metrics per logged step, validation per epoch, read from RUN's metrics.jsonl."""
    import shutil

    rd = _run(ref, runs_dir)
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
@click.option("--runs-dir", help=RUNS_DIR_HELP)
@_errors
def export_cmd(ref: str, output: str | None, runs_dir: str | None) -> None:
    """Write a run's metrics as CSV.

    One row per step, validation and epoch event of RUN, with the columns event, step, epoch, loss, penalty,
    accuracy, lr, train_loss, train_accuracy, val_loss, val_accuracy, seconds, samples_per_second, time."""
    rd = _run(ref, runs_dir)
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


__all__ = ["register", "resolve_checkpoint", "evaluate_checkpoint", "rebuild_test_split", "load_inputs",
           "metric_events", "plot_text", "run_summaries"]
