"""The ``tuinet`` command line (click). Every error a user can cause ends as one ``Error:`` line, exit code 1."""

from __future__ import annotations

import signal
import sys
from typing import Any

import click

from tuinet import __version__
from tuinet.cli_common import CONTEXT, friendly_errors


def _floats(value: str | None, name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers such as 0.9,0.999, got {value!r}",
                                 param_hint=name) from None


#: (option, click kwargs) for every training option; shared by ``train`` and the bare ``tuinet``
TRAIN_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--dataset", "-d"), dict(help="Built-in dataset name (see `tuinet datasets`) or a path to CSV, NPZ, IDX or an "
                                    "image folder.  [default: mnist]")),
    (("--model", "-m"), dict(help="Preset (mlp, lenet, cnn, resnet), a spec like 784-256-128-10, 256,128 or "
                                  "dense256,relu,dense10, or a .toml layer list.  [default: mlp]")),
    (("--activation",), dict(help="Hidden activation for dense specs: relu, leaky_relu, sigmoid, tanh, gelu, "
                                  "linear.  [default: relu]")),
    (("--optimizer", "-o"), dict(help="sgd, momentum, adam, adamw, rmsprop or adagrad.  [default: adam]")),
    (("--lr",), dict(type=float, help="Learning rate.  [default: the optimizer's torch default, e.g. 0.001 for "
                                      "adam, 0.01 for rmsprop]")),
    (("--batch-size", "-b"), dict(type=int, help="Mini-batch size.  [default: 64]")),
    (("--epochs", "-e"), dict(type=int, help="Number of epochs.  [default: 10]")),
    (("--seed",), dict(type=int, help="Seed for splits, initialization, shuffling and dropout.  [default: 0]")),
    (("--val-split",), dict(type=float, help="Fraction held out for validation.  [default: 0.1]")),
    (("--test-split",), dict(type=float, help="Fraction held out for testing (datasets without their own test "
                                              "set).  [default: 0.1]")),
    (("--normalize",), dict(type=click.Choice(["auto", "minmax", "standard", "none"]),
                            help="Input normalization, fitted on the training split.  [default: auto]")),
    (("--target",), dict(help="CSV label column.  [default: the last column]")),
    (("--task",), dict(type=click.Choice(["classification", "regression"]),
                       help="Force the task.  [default: inferred from the target]")),
    (("--limit",), dict(type=int, help="Use at most this many training samples (quick runs).  [default: all]")),
    (("--l1",), dict(type=float, help="L1 penalty l1*sum|w| on weights.  [default: 0]")),
    (("--l2",), dict(type=float, help="L2 penalty l2*sum w^2 on weights.  [default: 0]")),
    (("--dropout",), dict(type=float, help="Dropout rate after each hidden activation (dense specs).  "
                                           "[default: 0]")),
    (("--schedule",), dict(help="Learning-rate schedule: constant, step, exponential, cosine, onecycle, plateau.  "
                                "[default: constant]")),
    (("--step-size",), dict(type=int, help="Epochs between decays for --schedule step.  [default: 1]")),
    (("--gamma",), dict(type=float, help="Decay factor for step/exponential schedules.  [default: 0.5]")),
    (("--patience",), dict(type=int, help="Early stopping: epochs without validation-loss improvement before "
                                          "stopping (best weights restored).  [default: off]")),
    (("--clip-grad",), dict(type=float, help="Clip the global gradient norm to this value.  [default: off]")),
    (("--momentum",), dict(type=float, help="SGD/RMSprop momentum.  [default: 0; 0.9 for `momentum`]")),
    (("--nesterov/--no-nesterov",), dict(default=None, help="SGD Nesterov momentum.  [default: off]")),
    (("--dampening",), dict(type=float, help="SGD dampening.  [default: 0]")),
    (("--betas",), dict(help="Adam/AdamW betas as two numbers, e.g. 0.7,0.9.  [default: 0.9,0.999]")),
    (("--eps",), dict(type=float, help="Optimizer epsilon.  [default: 1e-8; 1e-10 for adagrad]")),
    (("--weight-decay",), dict(type=float, help="Weight decay (L2 in the gradient; decoupled for adamw).  "
                                                "[default: 0; 0.01 for adamw]")),
    (("--alpha",), dict(type=float, help="RMSprop smoothing constant.  [default: 0.99]")),
    (("--centered/--no-centered",), dict(default=None, help="Centered RMSprop.  [default: off]")),
    (("--amsgrad/--no-amsgrad",), dict(default=None, help="AMSGrad variant of Adam/AdamW.  [default: off]")),
    (("--val-every",), dict(type=int, help="Also validate every N steps.  [default: once per epoch]")),
    (("--log-every",), dict(type=int, help="Steps per reported training metric.  [default: 25]")),
    (("--on-divergence",), dict(type=click.Choice(["rollback", "pause"]),
                                help="On a non-finite loss: roll back and lower lr, or pause.  "
                                     "[default: rollback headless, pause in the app]")),
    (("--runs-dir",), dict(help="Folder for runs.  [default: $TUINET_RUNS_DIR or ./runs]")),
    (("--name",), dict(help="Run name.  [default: <model>-<dataset>-<time>]")),
    (("--config", "-c", "config_file"), dict(type=click.Path(dir_okay=False),
                                              help="TOML file with any of these options (command-line options "
                                                   "override it).")),
]


def train_options(fn):
    """Attach every training option to a click command."""
    for decls, kwargs in reversed(TRAIN_OPTIONS):
        fn = click.option(*decls, **kwargs)(fn)
    return fn


def build_config(options: dict[str, Any]):
    """TrainConfig from click options (None = not given) layered over an optional TOML file."""
    from tuinet.training.config import TrainConfig

    opts = {k: v for k, v in options.items() if v is not None}
    config_file = opts.pop("config_file", None)
    if "betas" in opts:
        opts["betas"] = _floats(opts["betas"], "--betas")
    if config_file:
        return TrainConfig.from_toml(config_file, overrides=opts)
    return TrainConfig.from_dict(opts, source="options")


TRAIN_KEYS = {(decls[-1] if decls[-1] == "config_file" else decls[0].split("/")[0].lstrip("-").replace("-", "_"))
              for decls, _ in TRAIN_OPTIONS}


def run_headless(trainer, json_lines: bool) -> int:
    """Run a trainer in a session, printing its events; Ctrl-C/SIGTERM/SIGHUP stop it cleanly (checkpoint saved).

    Returns the exit code: 0 finished, 1 failed, 128+signal (130 for Ctrl-C) when stopped by a signal.
    """
    from tuinet.training.console import ConsolePrinter, JsonPrinter
    from tuinet.training.protocol import make_command
    from tuinet.training.session import Session

    session = Session(trainer)
    session.add_listener(JsonPrinter() if json_lines else ConsolePrinter())
    received: list[int] = []

    def on_signal(signum, frame):
        if received:  # a second Ctrl-C: the user means it
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
        received.append(signum)
        name = signal.Signals(signum).name
        session.send(make_command("stop", reason=name))

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            old[sig] = signal.signal(sig, on_signal)
        except (ValueError, OSError):  # not the main thread
            pass
    try:
        session.start()
        while not session.join(0.2):
            pass
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    final = session.last.get("finished") or session.last.get("stopped") or session.last.get("failed")
    if final is None:
        return 1
    if final["event"] == "finished":
        return 0
    if final["event"] == "stopped":
        return 128 + received[0] if received else 3
    return 1


def start_training(options: dict[str, Any], headless: bool, json_lines: bool, explicit: bool = True) -> None:
    """Build the config and run it in the app (terminal) or headless."""
    from tuinet.training.trainer import Trainer

    config = build_config(options)
    use_app = not headless and not json_lines
    if use_app and not sys.stdout.isatty():
        click.echo("tuinet: stdout is not a terminal; training headless (use --headless to silence this)",
                   err=True)
        use_app = False
    if use_app and not _app_available():
        use_app = False
    if use_app:
        if options.get("on_divergence") is None:
            config.on_divergence = "pause"
        from tuinet.tui.app import run_app

        sys.exit(run_app(config))
    code = run_headless(Trainer(config), json_lines)
    sys.exit(code)


def _app_available() -> bool:
    try:
        import tuinet.tui.app  # noqa: F401
    except ImportError:
        return False
    return True


@click.group(context_settings=CONTEXT, invoke_without_command=True)
@click.version_option(__version__, prog_name="tuinet")
@click.option("--headless", is_flag=True, help="Train without the app, printing progress.")
@click.option("--json", "json_lines", is_flag=True, help="Headless, printing every event as a JSON line.")
@click.pass_context
@friendly_errors
def main(ctx: click.Context, headless: bool, json_lines: bool) -> None:
    """Train neural networks in the terminal and watch them learn.

    Without a command, trains the default model (the mlp preset) on MNIST in the live app; with stdout not a
    terminal (or --headless), prints progress instead.
    """
    if ctx.invoked_subcommand is None:
        start_training({}, headless, json_lines, explicit=False)


@main.command(context_settings=CONTEXT)
@train_options
@click.option("--headless", is_flag=True, help="No app: a progress bar on a terminal, one line per epoch otherwise.")
@click.option("--json", "json_lines", is_flag=True, help="No app: print every event as one JSON object per line.")
@click.option("--detach", is_flag=True, help="Run in the background, surviving the terminal; attach with "
                                             "`tuinet attach`.")
@friendly_errors
def train(headless: bool, json_lines: bool, detach: bool, **options: Any) -> None:
    """Train a model: opens the live app on a terminal, or runs headless."""
    if detach:
        from tuinet.remote.detach import detach_training

        detach_training(build_config(options))
        return
    start_training(options, headless, json_lines)


@main.command(context_settings=CONTEXT)
@click.argument("run")
@click.option("--epochs", type=int, help="Change the planned number of epochs.  [default: as configured]")
@click.option("--runs-dir", help="Folder for runs.  [default: $TUINET_RUNS_DIR or ./runs]")
@click.option("--headless", is_flag=True, help="No app: print progress.")
@click.option("--json", "json_lines", is_flag=True, help="No app: print every event as a JSON line.")
@click.option("--detach", is_flag=True, help="Continue in the background; attach with `tuinet attach`.")
@friendly_errors
def resume(run: str, epochs: int | None, runs_dir: str | None, headless: bool, json_lines: bool,
           detach: bool) -> None:
    """Continue RUN exactly where it stopped (weights, optimizer state, position, random state, schedule)."""
    from tuinet.training.rundir import find_run
    from tuinet.training.trainer import Trainer

    rd = find_run(run, runs_dir)
    if detach:
        from tuinet.remote.detach import detach_resume

        detach_resume(rd, epochs)
        return
    trainer = Trainer.resume(rd, epochs=epochs)
    if not headless and not json_lines and sys.stdout.isatty() and _app_available():
        from tuinet.tui.app import run_app

        sys.exit(run_app(trainer.config, trainer=trainer))
    sys.exit(run_headless(trainer, json_lines))


@main.command(context_settings=CONTEXT)
@click.option("--model", "-m", default="mlp", show_default=True, help="Preset or spec to time.")
@click.option("--dataset", "-d", default="mnist", show_default=True, help="Dataset giving the input shape.")
@click.option("--optimizer", "-o", default="adam", show_default=True, help="Optimizer.")
@click.option("--batch-size", "-b", default=64, show_default=True, help="Batch size.")
@click.option("--steps", "-n", default=300, show_default=True, help="Timed training steps per round.")
@click.option("--rounds", default=5, show_default=True, help="Interleaved rounds (tuinet, PyTorch, tuinet, ...).")
@click.option("--torch/--no-torch", "use_torch", default=True, show_default=True,
              help="Also time PyTorch when it is installed.")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object.")
@friendly_errors
def bench(model: str, dataset: str, optimizer: str, batch_size: int, steps: int, rounds: int, use_torch: bool,
          json_out: bool) -> None:
    """Time training steps (samples/s), side by side with PyTorch when installed."""
    from tuinet.bench import run_bench

    run_bench(model=model, dataset=dataset, optimizer=optimizer, batch_size=batch_size, steps=steps,
              rounds=rounds, use_torch=use_torch, json_out=json_out)


def _register_optional() -> None:
    """Add command groups that live in their own modules."""
    from tuinet.cli_datasets import datasets

    main.add_command(datasets)
    try:
        from tuinet.cli_runs import register
    except ImportError:
        pass
    else:
        register(main)
    try:
        from tuinet.remote.cli import register as register_remote
    except ImportError:
        pass
    else:
        register_remote(main)


_register_optional()

if __name__ == "__main__":  # pragma: no cover
    main()
