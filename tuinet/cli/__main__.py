"""``python -m tuinet.cli``: the command line."""

from tuinet.cli.entry import run

run()
