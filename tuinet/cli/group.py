"""The ``tuinet`` command line (click). Every error a user can cause ends as one ``Error:`` line, exit code 1."""

from __future__ import annotations

import click

from tuinet import __version__
from tuinet.cli import bench, compare, datasets, learn, lrfind, remote, runs, sweep, train
from tuinet.cli.common import CONTEXT, friendly_errors


@click.group(context_settings=CONTEXT, invoke_without_command=True)
@click.version_option(__version__, prog_name="tuinet")
@click.option("--headless", is_flag=True, help="Train without the app, printing progress.")
@click.option("--json", "json_lines", is_flag=True, help="Headless, printing every event as a JSON line.")
@click.pass_context
@friendly_errors
def main(ctx: click.Context, headless: bool, json_lines: bool) -> None:
    """Train neural networks in the terminal and watch them learn.

    Without a command, trains the default model (the mlp preset) on MNIST with MNIST's defaults (AdamW, cosine
    decay, light dropout, 5 epochs: `tuinet datasets` lists every dataset's) in the live app; with stdout not a
    terminal (or --headless), prints progress instead.
    """
    if ctx.invoked_subcommand is None:
        train.start_training({}, headless, json_lines)


main.add_command(train.train)
main.add_command(train.resume)
main.add_command(bench.bench)
main.add_command(datasets.datasets)
main.add_command(compare.compare_cmd)
main.add_command(lrfind.lr_find)
main.add_command(learn.learn)
runs.register(main)
remote.register(main)
sweep.register(main)

if __name__ == "__main__":  # pragma: no cover
    main()
