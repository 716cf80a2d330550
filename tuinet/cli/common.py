"""Pieces every click command module shares: context settings, the ``--runs-dir`` option, one-line errors."""

from __future__ import annotations

import functools

import click

from tuinet.errors import TuinetError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}

#: ``--runs-dir``, the same on every command that reads or writes runs
runs_dir_option = click.option("--runs-dir", help="Folder holding the runs.  [default: $TUINET_RUNS_DIR or ./runs]")


def check_thread_env() -> None:
    """One line for a bad ``TUINET_THREADS`` or ``TUINET_THREAD_MODE``, before a command starts its work."""
    from tuinet.engine.threads import check_thread_settings

    check_thread_settings()


def friendly_errors(fn):
    """Turn TuinetError into click's one-line ``Error: ...`` with exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TuinetError as e:
            raise click.ClickException(str(e)) from None

    return wrapper
