"""Pieces every click command module shares: context settings, the ``--runs-dir`` option, one-line errors."""

from __future__ import annotations

import functools
import os

import click

from tuinet.errors import ConfigError, TuinetError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}

#: ``--runs-dir``, the same on every command that reads or writes runs
runs_dir_option = click.option("--runs-dir", help="Folder holding the runs.  [default: $TUINET_RUNS_DIR or ./runs]")


def check_thread_env() -> None:
    """One line for a bad ``TUINET_THREADS`` or ``TUINET_THREAD_MODE`` (the engine would raise a ValueError)."""
    threads = os.environ.get("TUINET_THREADS")
    if threads and not threads.strip().isdigit():
        raise ConfigError(f"TUINET_THREADS={threads!r}: expected a whole number of threads")
    mode = os.environ.get("TUINET_THREAD_MODE")
    if mode and mode not in ("blas", "numba", "single"):
        raise ConfigError(f"TUINET_THREAD_MODE={mode!r}: choose blas, numba or single")


def friendly_errors(fn):
    """Turn TuinetError into click's one-line ``Error: ...`` with exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TuinetError as e:
            raise click.ClickException(str(e)) from None

    return wrapper
