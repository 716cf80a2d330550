"""The ``tuinet`` command line (click). Every error a user can cause ends as one ``Error:`` line, exit code 1.

Commands are looked up by name and their modules imported only when one runs (or a help page lists them): a
training run does not pay for importing ``serve``, ``compare``, ``sweep`` and the rest.
"""

from __future__ import annotations

import importlib

import click

from tuinet import __version__
from tuinet.cli import train
from tuinet.cli.common import CONTEXT, friendly_errors

#: command name -> (module, attribute) of its click command
COMMANDS: dict[str, tuple[str, str]] = {
    "attach": ("tuinet.cli.remote", "attach_cmd"),
    "bench": ("tuinet.cli.bench", "bench"),
    "compare": ("tuinet.cli.compare", "compare_cmd"),
    "datasets": ("tuinet.cli.datasets", "datasets"),
    "eval": ("tuinet.cli.runs", "eval_cmd"),
    "export": ("tuinet.cli.runs", "export_cmd"),
    "learn": ("tuinet.cli.learn", "learn"),
    "lr-find": ("tuinet.cli.lrfind", "lr_find"),
    "plot": ("tuinet.cli.runs", "plot_cmd"),
    "predict": ("tuinet.cli.runs", "predict_cmd"),
    "resume": ("tuinet.cli.train", "resume"),
    "runs": ("tuinet.cli.runs", "runs_cmd"),
    "serve": ("tuinet.cli.serve", "serve_cmd"),
    "stop": ("tuinet.cli.remote", "stop_cmd"),
    "sweep": ("tuinet.cli.sweep", "sweep_cmd"),
    "train": ("tuinet.cli.train", "train"),
}


class LazyGroup(click.Group):
    """A click group whose commands (from :data:`COMMANDS`) are imported when first looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attr = COMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings=CONTEXT, invoke_without_command=True)
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


if __name__ == "__main__":  # pragma: no cover
    main()
