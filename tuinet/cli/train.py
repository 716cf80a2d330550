"""`tuinet train` and `tuinet resume`, the training options they share, and the headless runner."""

from __future__ import annotations

import signal
import sys
from typing import Any

import click

from tuinet.cli.common import CONTEXT, check_thread_env, friendly_errors, load_blas_table, runs_dir_option


def _floats(value: str | None, name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers such as 0.9,0.999, got {value!r}",
                                 param_hint=name) from None


#: (option, click kwargs) for every option of ``tuinet train`` that sets a TrainConfig field
TRAIN_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--dataset", "-d"), dict(help="Built-in dataset name (see `tuinet datasets`) or a path to CSV, NPZ, IDX or an "
                                    "image folder.  [default: mnist]")),
    (("--model", "-m"), dict(help="Preset (mlp, lenet, cnn, resnet), a spec like 784-256-128-10, 256,128 or "
                                  "dense256,relu,dense10, or a .toml layer list.  [default: the built-in dataset's (`tuinet datasets`), else mlp]")),
    (("--activation",), dict(help="Hidden activation for dense specs: relu, leaky_relu, sigmoid, tanh, gelu, "
                                  "linear.  [default: the built-in dataset's (`tuinet datasets`), else relu]")),
    (("--optimizer", "-o"), dict(help="sgd, momentum, adam, adamw, rmsprop or adagrad.  [default: the built-in dataset's (`tuinet datasets`), else adam]")),
    (("--lr",), dict(type=float, help="Learning rate.  [default: the built-in dataset's (`tuinet datasets`), else the optimizer's torch default, e.g. "
                                      "0.001 for adam, 0.01 for rmsprop]")),
    (("--batch-size", "-b"), dict(type=int, help="Mini-batch size.  [default: the built-in dataset's (`tuinet datasets`), else 64]")),
    (("--epochs", "-e"), dict(type=int, help="Number of epochs.  [default: the built-in dataset's (`tuinet datasets`), else 10]")),
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
    (("--n-samples",), dict(type=int, help="Size of a synthetic dataset (spiral, circles, xor, gaussian, moons, "
                                           "sine, regression).  [default: 1000]")),
    (("--noise",), dict(type=float, help="Noise level of a synthetic dataset (standard deviation added to each "
                                         "point).  [default: the dataset's, e.g. 0.1 for spiral]")),
    (("--features",), dict(help="Input features for 2-D datasets, as in TensorFlow Playground: a list of x, y, x^2, "
                                "y^2, xy, sinx, siny, or all.  [default: x,y]")),
    (("--pace",), dict(type=float, help="At most this many steps per second, to watch the boundary and the neuron "
                                        "maps form.  [default: full speed]")),
    (("--l1",), dict(type=float, help="L1 penalty l1*sum|w| on weights.  [default: 0]")),
    (("--l2",), dict(type=float, help="L2 penalty l2*sum w^2 on weights.  [default: 0]")),
    (("--dropout",), dict(type=float, help="Dropout rate after each hidden activation (dense specs).  "
                                           "[default: the built-in dataset's (`tuinet datasets`), else 0]")),
    (("--schedule",), dict(help="Learning-rate schedule: constant, step, exponential, cosine, onecycle, plateau.  "
                                "[default: the built-in dataset's (`tuinet datasets`), else constant]")),
    (("--step-size",), dict(type=int, help="Epochs between decays for --schedule step.  [default: 1]")),
    (("--gamma",), dict(type=float, help="Decay factor for step/exponential schedules.  [default: 0.5]")),
    (("--patience",), dict(type=int, help="Early stopping: epochs without validation-loss improvement before "
                                          "stopping (best weights restored).  [default: off]")),
    (("--clip-grad",), dict(type=float, help="Clip the global gradient norm to this value.  [default: off]")),
    (("--init-gain",), dict(type=float, help="Multiply every layer's initial weights by this: He or Xavier (1) keep "
                                             "a signal's size from layer to layer, below 1 it shrinks and above 1 "
                                             "it grows at every layer (vanishing, exploding).  [default: 1]")),
    (("--augment",), dict(help="Data augmentation of the training batches, a new random version of each picture "
                                "at every step: shift=N (pixels), rotate=D (degrees), scale=F (1-F..1+F), flip, "
                                "erase=P (a random rectangle, probability P), noise=S (any input), e.g. "
                                "shift=2,rotate=15.  [default: none]")),
    (("--momentum",), dict(type=float, help="SGD/RMSprop momentum.  [default: 0; 0.9 for `momentum`]")),
    (("--nesterov/--no-nesterov",), dict(default=None, help="SGD Nesterov momentum.  [default: off]")),
    (("--dampening",), dict(type=float, help="SGD dampening.  [default: 0]")),
    (("--betas",), dict(help="Adam/AdamW betas as two numbers, e.g. 0.7,0.9.  [default: 0.9,0.999]")),
    (("--eps",), dict(type=float, help="Optimizer epsilon.  [default: 1e-8; 1e-10 for adagrad]")),
    (("--weight-decay",), dict(type=float, help="Weight decay (L2 in the gradient; decoupled for adamw).  "
                                                "[default: the built-in dataset's (`tuinet datasets`), else 0; 0.01 for adamw]")),
    (("--alpha",), dict(type=float, help="RMSprop smoothing constant.  [default: 0.99]")),
    (("--centered/--no-centered",), dict(default=None, help="Centered RMSprop.  [default: off]")),
    (("--amsgrad/--no-amsgrad",), dict(default=None, help="AMSGrad variant of Adam/AdamW.  [default: off]")),
    (("--val-every",), dict(type=int, help="Also validate every N steps.  [default: once per epoch]")),
    (("--log-every",), dict(type=int, help="Steps per reported training metric.  [default: 25]")),
    (("--keep-epochs",), dict(type=int, help="Keep the checkpoints of the last K epochs (epoch-NNNN.npz) to branch "
                                             "from with --from RUN@EPOCH; 0 keeps none.  [default: 5]")),
    (("--on-divergence",), dict(type=click.Choice(["rollback", "pause"]),
                                help="On a non-finite loss: roll back and lower lr, or pause.  "
                                     "[default: rollback headless, pause in the app]")),
    (("--final",), dict(type=click.Choice(["best", "last"]),
                        help="Which weights the run's test figures are of when it ends: the best validation epoch's "
                             "(best.npz) or the last; both are evaluated and shown.  [default: best]")),
    (("--pause-if",), dict(multiple=True, metavar="RULE",
                           help="Pause when a watch rule holds after an epoch (repeatable): 'METRIC rises|falls|stalls "
                                "N' or 'METRIC above|below X', METRIC one of val_loss, val_accuracy, train_loss, "
                                "train_accuracy; e.g. 'val_loss rises 3'. Headless, nobody can resume: the run "
                                "stops instead (`tuinet resume` continues it).  [default: none]")),
    (("--stop-if",), dict(multiple=True, metavar="RULE",
                          help="Stop (checkpoint saved, resumable) when a watch rule holds, e.g. "
                               "'val_accuracy above 99%'.  [default: none]")),
    (("--notify",), dict(metavar="CMD", help="Run CMD (through the shell) when the run finishes, diverges, stops "
                                             "early, fails or trips a watch rule, the alert as JSON on its standard "
                                             "input.  [default: none]")),
    (("--notify-url",), dict(metavar="URL", help="Post the same alerts to a webhook or chat service (an apprise URL "
                                                 "such as json://HOST/PATH or ntfy://TOPIC; needs "
                                                 "pip install 'tuinet[notify]').  [default: none]")),
    (("--name",), dict(help="Run name.  [default: <model>-<dataset>-<time>]")),
    (("--config", "-c", "config_file"), dict(type=click.Path(dir_okay=False),
                                              help="TOML file with any of these options (command-line options "
                                                   "override it).")),
]


def train_options(fn):
    """Attach every training option to a click command (``--runs-dir`` just before ``--name``)."""
    for decls, kwargs in reversed(TRAIN_OPTIONS):
        fn = click.option(*decls, **kwargs)(fn)
        if decls[0] == "--name":
            fn = runs_dir_option(fn)
    return fn


def build_config(options: dict[str, Any]):
    """TrainConfig from click options (None = not given) layered over an optional TOML file, and over the parent
    run's settings for ``--from RUN[@EPOCH]`` (see :mod:`tuinet.training.branch`); a new run on a built-in dataset
    takes what neither sets from the dataset's defaults (:mod:`tuinet.training.defaults`)."""
    from tuinet.training.config import TrainConfig

    opts = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items() if v is not None and v != ()}
    config_file = opts.pop("config_file", None)
    from_ref = opts.pop("from_run", None)
    if "betas" in opts:
        opts["betas"] = _floats(opts["betas"], "--betas")
    if from_ref:
        from tuinet.training.branch import branch_config

        return branch_config(from_ref, opts, config_file)
    if config_file:
        return TrainConfig.from_toml(config_file, overrides=opts, dataset_defaults=True)
    from tuinet.training.defaults import with_dataset_defaults

    return TrainConfig.from_dict(with_dataset_defaults(opts), source="options", options=set(opts))


def run_headless(trainer, json_lines: bool) -> int:
    """Run a trainer in a session, printing its events; Ctrl-C/SIGTERM/SIGHUP stop it cleanly (checkpoint saved).

    Returns :func:`tuinet.protocol.exit_code` of the final event: 0 finished, 1 failed, 128+signal (130 for Ctrl-C)
    when stopped by a signal, 3 when stopped by a command.
    """
    from tuinet.protocol import exit_code, final_event, make_command
    from tuinet.training.console import ConsolePrinter, JsonPrinter
    from tuinet.training.session import Session
    from tuinet.training.signals import handle_stop_signals

    session = Session(trainer)
    session.add_listener(JsonPrinter() if json_lines else ConsolePrinter())
    received: list[int] = []

    def pause_means_stop(event: dict[str, Any]) -> None:  # a watch rule paused the run: nobody here can resume
        if event.get("event") == "paused" and str(event.get("reason", "")).startswith("watch rule"):
            session.send(make_command("stop", reason=f"{event['reason']}; headless, so stopped instead"))

    session.add_listener(pause_means_stop)

    def on_signal(signum: int) -> None:
        if received:  # a second Ctrl-C: the user means it
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
        received.append(signum)
        session.send(make_command("stop", reason=signal.Signals(signum).name))

    with handle_stop_signals(on_signal):
        session.start()
        while not session.join(0.2):
            pass
    return exit_code(final_event(session.last), received[0] if received else None)


def start_training(options: dict[str, Any], headless: bool, json_lines: bool) -> None:
    """Build the config and run it in the app (terminal) or headless."""
    from tuinet.training.prefetch import DataPrefetch

    config = build_config(options)
    prefetch = DataPrefetch(config)  # the data loads while the engine is imported (its errors come from prepare)
    from tuinet.training.trainer import Trainer

    load_blas_table()  # before the first kernel loads: spares it importing all of scipy.linalg
    check_thread_env()
    use_app = not headless and not json_lines
    if use_app and not sys.stdout.isatty():
        click.echo("tuinet: stdout is not a terminal; training headless (use --headless to silence this)",
                   err=True)
        use_app = False
    if use_app and options.get("on_divergence") is None:
        config.on_divergence = "pause"
    trainer = Trainer(config, prefetch=prefetch)
    # the data and the model first, then the run folder: what fails here is one `Error:` line, and a bad data file
    # or model leaves no run folder behind
    trainer.prepare()
    trainer.create_run_dir()
    if use_app:
        from tuinet.app.app import run_app

        sys.exit(run_app(config, trainer=trainer))
    sys.exit(run_headless(trainer, json_lines))


@click.command("train", context_settings=CONTEXT)
@click.option("--from", "from_run", metavar="RUN[@EPOCH]",
              help="Branch: start from RUN's checkpoint at the end of EPOCH (@best: its best; none: its latest) with "
                   "RUN's settings, changed by the options given; epochs continue from there.")
@train_options
@click.option("--headless", is_flag=True, help="No app: a progress bar on a terminal, one line per epoch otherwise.")
@click.option("--json", "json_lines", is_flag=True, help="No app: print every event as one JSON object per line.")
@click.option("--detach", is_flag=True, help="Run in the background, surviving the terminal; attach with "
                                             "`tuinet attach`.")
@friendly_errors
def train(headless: bool, json_lines: bool, detach: bool, **options: Any) -> None:
    """Train a model: opens the live app on a terminal, or runs headless.

    A built-in dataset brings its own defaults (model, epochs, lr, batch size, schedule: `tuinet datasets` lists
    them); every option you set, here or in --config, wins over them."""
    if detach:
        from tuinet.remote.detach import detach_training
        from tuinet.training.trainer import Trainer

        config = build_config(options)
        check_thread_env()
        # load the data and build the model here too, so their errors are one line before the run folder exists
        # (the background trainer does it again; a checked failure there would only show in its log)
        Trainer(config).prepare()
        detach_training(config)
        return
    start_training(options, headless, json_lines)


@click.command("resume", context_settings=CONTEXT)
@click.argument("run")
@click.option("--epochs", type=int, help="Change the planned number of epochs.  [default: as configured]")
@runs_dir_option
@click.option("--headless", is_flag=True, help="No app: print progress.")
@click.option("--json", "json_lines", is_flag=True, help="No app: print every event as a JSON line.")
@click.option("--detach", is_flag=True, help="Continue in the background; attach with `tuinet attach`.")
@friendly_errors
def resume(run: str, epochs: int | None, runs_dir: str | None, headless: bool, json_lines: bool,
           detach: bool) -> None:
    """Continue RUN exactly where it stopped (weights, optimizer state, position, random state, schedule)."""
    from tuinet.training.rundir import find_run
    from tuinet.training.trainer import Trainer

    load_blas_table()
    check_thread_env()
    rd = find_run(run, runs_dir)
    if detach:
        from tuinet.engine.checkpoint import load_checkpoint
        from tuinet.remote.detach import detach_resume

        load_checkpoint(rd.latest)  # a damaged or non-finite checkpoint: one line here, not in the background
        detach_resume(rd, epochs)
        return
    trainer = Trainer.resume(rd, epochs=epochs)
    try:
        trainer.prepare()  # data, model, weights and optimizer state restored: their errors are one line
    except BaseException:
        rd.unlock()
        raise
    if not headless and not json_lines and sys.stdout.isatty():
        from tuinet.app.app import run_app

        sys.exit(run_app(trainer.config, trainer=trainer))
    sys.exit(run_headless(trainer, json_lines))
