"""``tuinet learn``: the guided experiments (see :mod:`tuinet.training.lessons`)."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from tuinet.cli.common import CONTEXT, check_thread_env, friendly_errors, runs_dir_option

#: the options a lesson can be re-run with, applied to every run (those the lesson varies are refused)
OVERRIDES = (
    (("--epochs", "-e"), dict(type=int, help="Epochs of every run.  [default: the lesson's]")),
    (("--limit",), dict(type=int, help="At most this many training samples (validation and test likewise).  "
                                       "[default: the lesson's]")),
    (("--seed",), dict(type=int, help="Seed of every run.  [default: 0]")),
    (("--lr",), dict(type=float, help="Learning rate of every run (not in the lr lesson).  [default: the lesson's]")),
    (("--batch-size", "-b"), dict(type=int, help="Mini-batch size of every run (not in the batch-size lesson).  "
                                                 "[default: the lesson's]")),
)


def _options(fn):
    for decls, kwargs in reversed(OVERRIDES):
        fn = click.option(*decls, **kwargs)(fn)
    return fn


def list_lessons(json_lines: bool) -> None:
    """Print the lessons: name, runs, what they vary, title."""
    from tuinet.training.lessons import LESSONS

    if json_lines:
        for lesson in LESSONS.values():
            click.echo(json.dumps({"lesson": lesson.name, "title": lesson.title, "varies": lesson.varied,
                                   "runs": [label for label, _ in lesson.runs]}))
        return
    width = max(len(n) for n in LESSONS)
    for lesson in LESSONS.values():
        runs = " / ".join(label for label, _ in lesson.runs)
        click.echo(f"{lesson.name:<{width}}  {lesson.title}")
        click.echo(f"{'':<{width}}  runs: {runs}  (varies {', '.join(lesson.varied)})")
    click.echo("\ntuinet learn NAME runs one (e.g. tuinet learn overfitting --epochs 40); --headless or --json "
               "without the app")


def _configs(lesson, overrides: dict[str, Any], folder: Path):
    from tuinet.training.config import TrainConfig

    return [(label, TrainConfig.from_dict({**opts, "runs_dir": str(folder), "name": label},
                                          source=f"lesson {lesson.name}", options=set(overrides)))
            for label, opts in lesson.configs(overrides)]


def run_lesson_headless(lesson, overrides: dict[str, Any], runs_dir: str, json_lines: bool) -> int:
    """Train the lesson's runs one after another in this process, printing their events, then the result."""
    from tuinet.cli.train import run_headless
    from tuinet.training.lessons import lesson_folder, result_text, summarize
    from tuinet.training.trainer import Trainer

    configs = _configs(lesson, overrides, Path(runs_dir))  # every run's options checked before any folder exists
    trainers = []
    for _, config in configs:
        trainer = Trainer(config)
        trainer.prepare()  # bad data or a model that does not fit: one line now, nothing trained
        trainers.append(trainer)
    folder = lesson_folder(runs_dir, lesson.name)
    out = sys.stdout
    if not json_lines:
        print(f"lesson {lesson.name}: {lesson.title}\n{lesson.caption}\nruns in {folder}", file=out, flush=True)
    summaries = []
    for (label, config), trainer in zip(configs, trainers):
        config.runs_dir = str(folder)
        if not json_lines:
            print(f"\n--- {label}", file=out, flush=True)
        trainer.create_run_dir()
        code = run_headless(trainer, json_lines)
        summaries.append(summarize(label, trainer.run_dir.path))
        if code != 0:
            return code
    text = result_text(lesson, summaries)
    if json_lines:
        print(json.dumps({"lesson": lesson.name, "folder": str(folder), "varies": lesson.varied,
                          "runs": [{"label": s.label, "run_dir": str(s.path), "status": s.status,
                                    "best_val_accuracy": s.best_val_accuracy, "test_accuracy": s.test_accuracy,
                                    "epochs": len(s.epochs)} for s in summaries],
                          "result": text}), file=out, flush=True)
    else:
        print("\n" + text, file=out, flush=True)
    return 0


def run_lesson_app(lesson, overrides: dict[str, Any], runs_dir: str) -> int:
    """Start the lesson's runs side by side in the background (each pinned to its share of the cores), show them on
    the Compare screen with the caption, and the measured result once they are done."""
    from tuinet.app.compare import run_compare_app
    from tuinet.engine.threads import cores
    from tuinet.remote.detach import detach_training
    from tuinet.training.compare import load_runs
    from tuinet.training.lessons import lesson_folder, result_text, summarize
    from tuinet.training.trainer import Trainer

    configs = _configs(lesson, overrides, Path(runs_dir))
    for _, config in configs:
        Trainer(config).prepare()
    folder = lesson_folder(runs_dir, lesson.name)
    threads = max(1, cores() // len(configs))
    old = os.environ.get("TUINET_THREADS")
    os.environ["TUINET_THREADS"] = str(threads)  # inherited by each background trainer
    try:
        for label, config in configs:
            config.runs_dir = str(folder)
            click.echo(f"starting {label} …")
            detach_training(config, out=io.StringIO())
    finally:
        if old is None:
            os.environ.pop("TUINET_THREADS", None)
        else:
            os.environ["TUINET_THREADS"] = old
    records = load_runs(folder)
    order = [label for label, _ in configs]
    records.sort(key=lambda r: order.index(r.name) if r.name in order else len(order))

    def result() -> str | None:
        summaries = [summarize(label, folder / label) for label in order]
        if any(s.status in ("running", "loading", "created", "?", "paused") for s in summaries):
            return None
        return result_text(lesson, summaries)

    code = run_compare_app(records, folder, lesson=(f"lesson {lesson.name}: {lesson.title}", lesson.caption,
                                                    result))
    text = result()
    click.echo(text if text else f"the runs go on in the background: tuinet compare --runs-dir {folder}")
    return code


@click.command("learn", context_settings=CONTEXT)
@click.argument("name", required=False)
@_options
@runs_dir_option
@click.option("--headless", is_flag=True, help="No app: train the runs one after another, printing progress, then "
                                                "what happened.")
@click.option("--json", "json_lines", is_flag=True, help="No app: every event of every run as a JSON line, then "
                                                         "one line with the lesson's result.")
@friendly_errors
def learn(name: str | None, runs_dir: str | None, headless: bool, json_lines: bool, **overrides: Any) -> None:
    """Guided experiments: short runs that differ in one setting, side by side, and what they showed.

    Without NAME, lists the lessons.
    """
    from tuinet.training.config import default_runs_dir
    from tuinet.training.lessons import get_lesson

    if name is None:
        list_lessons(json_lines)
        return
    lesson = get_lesson(name)
    check_thread_env()
    runs_dir = runs_dir or default_runs_dir()
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if headless or json_lines or not sys.stdout.isatty():
        sys.exit(run_lesson_headless(lesson, overrides, runs_dir, json_lines))
    sys.exit(run_lesson_app(lesson, overrides, runs_dir))
