"""`tuinet lr-find`: the learning-rate range test from the command line, on the model and data `train` would use.

It builds the run exactly as ``tuinet train`` with the same options would (nothing is written: no run folder), runs
the range test (:mod:`tuinet.training.lrfind`) and draws the curve in the terminal with each rule's suggestion
marked, or prints it as one JSON object with ``--json``.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

import click

from tuinet.cli.common import CONTEXT, check_thread_env, friendly_errors
from tuinet.cli.train import TRAIN_OPTIONS, build_config
from tuinet.training.lrfind import DEFAULT_END_LR, DEFAULT_START_LR, DEFAULT_STEPS, MAX_STEPS, MIN_STEPS

#: train's options that name or place a run folder: lr-find writes none
_NOT_HERE = {"--name"}


def _train_options(fn):
    """Every option of ``tuinet train`` that says what to train and how (not where to save it)."""
    for decls, kwargs in reversed(TRAIN_OPTIONS):
        if decls[0] not in _NOT_HERE:
            fn = click.option(*decls, **kwargs)(fn)
    return fn


def _chart(result: dict[str, Any], width: int, height: int) -> None:
    """Draw the curve and the suggestions on stdout (colour only on a terminal; NO_COLOR is honoured)."""
    from rich.console import Console

    from tuinet.app.screens.lrfind import chart_data, legend, stop_text
    from tuinet.app.widgets.charts import render_text

    console = Console(highlight=False, soft_wrap=True)
    console.print(render_text(chart_data(result), width, height))
    console.print(legend(result))
    console.print(f"{stop_text(result)} in {result['seconds']:.1f} s")


@click.command("lr-find", context_settings=CONTEXT)
@_train_options
@click.option("--steps", type=int, default=DEFAULT_STEPS, show_default=True,
              help=f"Steps of the range test ({MIN_STEPS} to {MAX_STEPS}, one mini-batch each); it stops earlier when "
                   "the loss explodes.")
@click.option("--start-lr", type=float, default=DEFAULT_START_LR, show_default=True, help="First learning rate.")
@click.option("--end-lr", type=float, default=DEFAULT_END_LR, show_default=True, help="Last learning rate.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: suggested_lr, suggestions (valley, steepest, minimum), the curve (lrs, "
                   "losses, smoothed) and how the test ended.")
@friendly_errors
def lr_find(steps: int, start_lr: float, end_lr: float, as_json: bool, **options: Any) -> None:
    """Learning-rate range test: train a copy of the model for a few steps while the lr rises exponentially, draw
    the loss against the lr, and suggest an lr (valley; steepest descent and minimum/10 are shown too).

    Takes the model and data options of `tuinet train` (those about epochs, schedules and saving have no effect)
    and writes nothing. In the app, `f` runs the same test on the live run's weights and optimizer state.
    """
    from tuinet.engine.threads import configure_threads
    from tuinet.protocol import to_json
    from tuinet.training.lrfind import check_range, trainer_range_test
    from tuinet.training.trainer import Trainer

    check_range(start_lr, end_lr, steps)
    config = build_config(options)
    check_thread_env()
    trainer = Trainer(config, run_dir=False)
    trainer.prepare()
    configure_threads(trainer.model)  # as training does
    tty = sys.stderr.isatty()
    click.echo(f"range test: {config.model} on {config.dataset}, {trainer.optimizer.name} batch {config.batch_size}, "
               f"lr {start_lr:g} to {end_lr:g} over at most {steps} steps (the first run compiles kernels)…",
               err=True)

    def progress(done: int, lr: float, loss: float | None) -> None:
        if tty:
            click.echo(f"\r\x1b[2K  step {done}/{steps}  lr {lr:.3g}  loss {loss:.4g}", err=True, nl=False)

    result = trainer_range_test(trainer, start_lr=start_lr, end_lr=end_lr, steps=steps, progress=progress)
    if tty:
        click.echo("\r\x1b[2K", err=True, nl=False)
    out = {**result.to_dict(), "model": config.model, "dataset": config.dataset,
           "optimizer": trainer.optimizer.name, "batch_size": config.batch_size}
    if as_json:
        click.echo(to_json(out))
        return
    cols = shutil.get_terminal_size((100, 24)).columns
    _chart(out, width=max(40, min(cols, 120)), height=18)
    if result.suggested_lr is not None:
        click.echo(f"train with it: tuinet train ... --lr {result.suggested_lr:.3g}   "
                   f"(or press f in the app to run this on a live run and choose with a cursor)")
    else:
        click.echo("no suggestion: the curve is too short (try a lower --start-lr or more --steps)")
