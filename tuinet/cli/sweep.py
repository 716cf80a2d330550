"""``tuinet sweep SPEC.toml``: many runs searched and pruned by Optuna, on local workers or a Ray cluster; and
``tuinet attach SWEEP`` (called from :mod:`tuinet.cli.remote` when the name is a sweep)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from tuinet.cli.common import CONTEXT, check_thread_env, friendly_errors, runs_dir_option


@click.command("sweep", context_settings=CONTEXT)
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--trials", "-n", type=int, help="How many trials in all.  [default: the SPEC's, else 16]")
@click.option("--workers", "-w", type=int, help="Trials at once.  [default: one per core, each on one thread; "
                                                "with --ray, the cluster's CPUs]")
@runs_dir_option
@click.option("--name", help="The sweep's name (its folder in the runs dir; trials are NAME-tNNN).  "
                             "[default: the SPEC's [sweep] name, else the file's name]")
@click.option("--objective", type=click.Choice(["val_loss", "val_accuracy"]), help="What the search optimizes.  "
                                                                                   "[default: val_loss]")
@click.option("--sampler", type=click.Choice(["tpe", "random", "grid"]), help="Optuna sampler.  [default: tpe]")
@click.option("--pruner", type=click.Choice(["median", "hyperband", "none"]), help="Optuna pruner.  "
                                                                                   "[default: median]")
@click.option("--seed", type=int, help="The sampler's seed.  [default: 0]")
@click.option("--ray", "ray_address", metavar="ADDRESS", help="Run trials on a Ray cluster: HOST:PORT, ray://HOST:PORT "
                                                              "or auto (pip install 'tuinet[ray]').")
@click.option("--shared-dir", type=click.Path(file_okay=False), help="With --ray: a folder every node sees, where "
                                                                     "trials write their runs.  [default: runs are "
                                                                     "copied back to the runs dir]")
@click.option("--storage", metavar="URL", help="An Optuna RDB storage shared by several hosts (sqlite:///PATH, "
                                               "postgresql://...).  [default: study.journal in the sweep folder]")
@click.option("--worker", is_flag=True, help="Join the shared --storage study as one more worker: run trials here, "
                                             "headless, until the study has its trials.")
@click.option("--headless", is_flag=True, help="No app: one line per trial event and a summary.")
@click.option("--json", "json_lines", is_flag=True, help="No app: every sweep event as a JSON line.")
@click.option("--detach", is_flag=True, help="Run the whole sweep in the background, surviving the terminal; "
                                             "`tuinet attach NAME` shows it.")
@friendly_errors
def sweep_cmd(spec: str, trials: int | None, workers: int | None, runs_dir: str | None, name: str | None,
              objective: str | None, sampler: str | None, pruner: str | None, seed: int | None,
              ray_address: str | None, shared_dir: str | None, storage: str | None, worker: bool, headless: bool,
              json_lines: bool, detach: bool) -> None:
    """Search hyperparameters: SPEC's [search] space over [train]'s options, trials pruned as they go.

    Every trial is a normal run (NAME-tNNN in the runs dir: `tuinet runs`, `compare`, `attach` see it). Killing the
    sweep and running the same command again resumes it: finished trials are kept, interrupted ones resume from
    their checkpoints."""
    from tuinet.errors import ConfigError
    from tuinet.sweep.backends import make_backend
    from tuinet.sweep.files import save_spec
    from tuinet.sweep.spec import check_models, load_spec

    overrides = {"trials": trials, "objective": objective, "sampler": sampler, "pruner": pruner, "seed": seed,
                 "name": name, "runs_dir": runs_dir}
    parsed = load_spec(spec, overrides)
    if worker and not storage:
        raise ConfigError("option --worker joins a shared study: give its --storage URL too")
    if shared_dir and not ray_address:
        raise ConfigError("option --shared-dir is for --ray (local trials write to the runs dir)")
    check_thread_env()
    check_models(parsed)  # the data and every model the search can build: one line before anything runs
    kind = "ray" if ray_address else "local"
    shared = str(Path(shared_dir).absolute()) if shared_dir else None
    extra = {"storage": storage, "backend": kind, "workers": workers, "ray_address": ray_address,
             "shared_dir": shared}
    use_app = not (headless or json_lines or worker or detach)
    if use_app and not sys.stdout.isatty():
        click.echo("tuinet: stdout is not a terminal; sweeping headless (use --headless to silence this)", err=True)
        use_app = False
    if detach or use_app:
        if kind == "local":
            make_backend(kind, workers)  # a bad --workers is one line here, not in the background's log
        folder = parsed.folder
        save_spec(folder, parsed, extra)
        from tuinet.sweep.launch import launch_driver

        pid = launch_driver(folder)
        if detach:
            extra_opt = f" --runs-dir {parsed.runs_dir}" if runs_dir else ""
            click.echo(f"sweep {parsed.name} started in the background (pid {pid}): {parsed.trials} trials")
            click.echo(f"  watch it:          tuinet attach {parsed.name}{extra_opt}")
            click.echo(f"  stop it (resume by running the same command again):  kill {pid}")
            click.echo(f"  its output:        {folder / 'driver.log'}")
            return
        from tuinet.app.sweep import run_sweep_app

        sys.exit(run_sweep_app(folder, stop_sweep=lambda: _stop_driver(pid)))
    backend = make_backend(kind, workers, parsed, ray_address=ray_address, shared_dir=shared)
    sys.exit(_run_foreground(parsed, backend, storage, worker, json_lines))


def _stop_driver(pid: int) -> None:
    """Ask the background driver to stop (its trials save their checkpoints; the same command resumes)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _run_foreground(spec, backend, storage: str | None, worker: bool, json_lines: bool) -> int:
    """Drive the sweep in this process, printing its events; Ctrl-C, SIGTERM and SIGHUP stop it (trials save their
    checkpoints and resume with the same command)."""
    from tuinet.sweep.driver import SweepDriver
    from tuinet.sweep.launch import EventLog
    from tuinet.sweep.report import JsonLines, LinePrinter
    from tuinet.training.signals import handle_stop_signals

    printer = JsonLines() if json_lines else LinePrinter()
    report = printer if worker else EventLog(spec.folder, printer)
    spec.folder.mkdir(parents=True, exist_ok=True)
    driver = SweepDriver(spec, backend, report, storage=storage, worker=worker)
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user means it (trials train on; the next run adopts them)
        received.append(signum)
        driver.stop(signum)

    with handle_stop_signals(on_signal):
        return driver.run()


def attach_sweep(folder: Path, headless: bool, json_lines: bool, force_app: bool = False) -> None:
    """``tuinet attach SWEEP``: the Sweep screen on a sweep folder, or its events so far and live (headless)."""
    from tuinet.sweep.files import driver_pid

    use_app = not headless and not json_lines and (force_app or sys.stdout.isatty())
    if use_app:
        from tuinet.app.sweep import run_sweep_app

        sys.exit(run_sweep_app(folder))
    from tuinet.sweep.launch import follow_events
    from tuinet.sweep.report import JsonLines, LinePrinter

    printer = JsonLines() if json_lines else LinePrinter()
    try:
        for e in follow_events(folder, stop=lambda: driver_pid(folder) is None):
            printer(e)
    except KeyboardInterrupt:
        click.echo(f"\ndetached from sweep {folder.name}; it goes on", err=True)
    sys.exit(0)


def find_sweep(ref: str | None, runs_dir: str | None) -> Path | None:
    """The sweep folder ``ref`` names (a name in the runs dir, or a path), or None when it is not a sweep."""
    from tuinet.sweep.files import is_sweep
    from tuinet.training.config import default_runs_dir

    if not ref:
        return None
    for p in (Path(ref), Path(runs_dir or default_runs_dir()) / ref):
        if is_sweep(p):
            return p
    return None


def register(group: click.Group) -> None:
    """Add ``sweep`` to the ``tuinet`` group."""
    group.add_command(sweep_cmd)
