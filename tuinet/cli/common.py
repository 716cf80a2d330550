"""Pieces every click command module shares (kept apart from cli.py so command modules never import it)."""

from __future__ import annotations

import functools

import click

from tuinet.errors import TuinetError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def friendly_errors(fn):
    """Turn TuinetError into click's one-line ``Error: ...`` with exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TuinetError as e:
            raise click.ClickException(str(e)) from None

    return wrapper
